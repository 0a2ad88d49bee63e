"""The chat example in two headless Chromium pages: a message typed in one shows in the other.

Chromium (Debian's ``chromium`` package) is driven through its DevTools protocol, over a
WebSocket, with the ``websockets`` client. The test installs the package when it is missing
and it can (root, apt-get); otherwise it skips, or fails when CI is "true".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat" / "app.py"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
]


def find_or_install_chromium() -> str:
    path = shutil.which("chromium")
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"]) * 2:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
            if shutil.which("chromium"):
                break
        path = shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed and could not be (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_or_install_chromium()


class DevTools:
    """The few DevTools protocol calls the test needs, each awaited for its answer."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            future = self._waiting.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        ident = next(self._ids)
        request: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            request["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.socket.send(json.dumps(request))
        answer = await asyncio.wait_for(future, 10)
        if "error" in answer:
            raise RuntimeError(f"{method} failed: {answer['error']}")
        return answer["result"]

    async def open_page(self, url: str) -> str:
        target = await self.call("Target.createTarget", url=url)
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        return attached["sessionId"]

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", session, expression=expression, returnByValue=True
        )
        return result["result"].get("value")

    async def wait_for(self, session: str, expression: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(session, expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"page never satisfied {expression}"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.socket.close()


@contextlib.asynccontextmanager
async def running_chromium(path: str, profile: Path) -> AsyncIterator[DevTools]:
    log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: renderers are stopped with it
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and len(port_file.read_text().split()) == 2):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port, browser_path = port_file.read_text().split()
        socket = await connect(f"ws://127.0.0.1:{port}{browser_path}", max_size=None)
        devtools = DevTools(socket)
        try:
            yield devtools
        finally:
            # A browser that closes itself stops (and reaps) its renderers too.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(devtools.call("Browser.close"), 3)
            await devtools.close()
    finally:
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything of its group still left
        log.close()


def load_chat_app() -> Any:
    spec = importlib.util.spec_from_file_location("chat_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


MESSAGES = "Array.from(document.querySelectorAll('#log li.message')).map(li => li.textContent)"


def say(text: str) -> str:
    return (
        f"document.getElementById('text').value = {json.dumps(text)};"
        "document.getElementById('form').requestSubmit(); true"
    )


async def test_two_pages_chat_through_the_example(chromium: str, serve, tmp_path: Path) -> None:
    m2 = serve(load_chat_app())
    async with asyncio.timeout(60), running_chromium(chromium, tmp_path / "profile") as browser:
        alice = await browser.open_page(f"{m2.url}/?name=alice")
        bob = await browser.open_page(f"{m2.url}/?name=bob")
        for page in (alice, bob):
            await browser.wait_for(page, "document.body && document.body.dataset.state === 'open'")
        await browser.evaluate(alice, say("hello from alice"))
        assert "alice: hello from alice" in await browser.wait_for(bob, MESSAGES)
        await browser.evaluate(bob, say("hi alice"))
        await browser.wait_for(alice, f"{MESSAGES}.includes('bob: hi alice')")
