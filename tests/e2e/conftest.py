"""Shared fixtures for tests that drive a real Mongrel2 (Debian package mongrel2-core).

``serve(app)`` runs a Brubeck app behind a real Mongrel2: Mongrel2 as a child process, the app in
a background thread with its own event loop. ``serve_module`` does the same once per test module,
for the many tests that can share one server. ``raw_http`` opens plain TCP connections, for what
an HTTP client library hides (bytes after a HEAD response, pipelining, who closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from brubeck import Brubeck, Mongrel2Connection
from brubeck.mongrel2 import INSTALL_HINT, Mongrel2Config, Mongrel2Process

#: A path no test app routes: any answer to it proves a request went through app and Mongrel2.
READY_PATH = "/__e2e_ready__"


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.e2e)


def _require_mongrel2_or_skip() -> None:
    if shutil.which("mongrel2") and shutil.which("m2sh"):
        return
    reason = f"mongrel2/m2sh not on PATH (install with `{INSTALL_HINT}`)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _require_mongrel2():
    _require_mongrel2_or_skip()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class _Mongrel2Factory:
    """Start Mongrel2 servers on free ports, each in its own run directory; stop them all."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[Mongrel2Process] = []

    def __call__(self, **overrides: Any) -> Mongrel2Process:
        run_dir = self.base / f"mongrel2-{len(self.started)}"
        proc = Mongrel2Process(Mongrel2Config.on_free_ports(**overrides), run_dir)
        self.started.append(proc)
        proc.start()
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


@pytest.fixture
def mongrel2_factory(tmp_path):
    """Return ``make(**config_overrides) -> Mongrel2Process``, started on free ports.

    Each call gets its own run directory under ``tmp_path``; all are stopped at teardown.
    """
    factory = _Mongrel2Factory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_mongrel2_factory(tmp_path_factory):
    """``mongrel2_factory`` for a whole test module: servers live until its last test."""
    _require_mongrel2_or_skip()
    factory = _Mongrel2Factory(tmp_path_factory.mktemp("mongrel2"))
    yield factory
    factory.stop_all()


class AppThread:
    """A Brubeck app serving in a background thread, with its own event loop.

    ``stop`` asks the app to stop from the loop's own thread and joins it, so the app's sockets
    are closed by the time it returns; an exception that ended ``serve`` is raised there.
    """

    def __init__(self, app: Brubeck, name: str = "brubeck-e2e-app") -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._started.set()
            await self.app.serve()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(5):
            raise TimeoutError("the app thread did not start its event loop")
        if self.error is not None:
            raise RuntimeError("the app failed to start") from self.error

    def stop(self, timeout: float = 10.0) -> None:
        loop = self.loop
        if loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have closed meanwhile
                loop.call_soon_threadsafe(self.app.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the app thread did not stop within {timeout}s")
        if self.error is not None:
            raise RuntimeError("the app stopped with an error") from self.error

    def wait_ready(self, url: str, timeout: float = 10.0) -> None:
        """Return once one request went from the client to the app and its answer came back."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=url, timeout=0.5) as client:
            while True:
                if not self.alive:
                    raise RuntimeError("the app thread exited before answering") from self.error
                try:
                    client.get(READY_PATH)
                    return
                except httpx.TransportError:
                    if time.monotonic() >= deadline:
                        raise


@pytest.fixture
def app_thread():
    """Return ``start(app) -> AppThread`` for an app whose ``msg_conn`` the test set up itself.

    Every app started this way is stopped, and its thread joined, at teardown.
    """
    threads: list[AppThread] = []

    def start(app: Brubeck) -> AppThread:
        thread = AppThread(app)
        threads.append(thread)
        thread.start()
        return thread

    yield start
    for thread in reversed(threads):
        thread.stop()


class _Server:
    """What ``serve`` and ``serve_module`` share: start apps behind Mongrel2, stop them all."""

    def __init__(self, factory: _Mongrel2Factory) -> None:
        self.factory = factory
        self.threads: list[AppThread] = []

    def __call__(self, app: Brubeck, **mongrel2_overrides: Any) -> Mongrel2Process:
        m2 = self.factory(**mongrel2_overrides)
        app.msg_conn = Mongrel2Connection(m2.config.send_spec, m2.config.recv_spec)
        app.settings.setdefault("mongrel2_run_dir", str(m2.run_dir))
        thread = AppThread(app)
        self.threads.append(thread)
        thread.start()
        thread.wait_ready(m2.url)
        return m2

    def stop_all(self) -> None:
        errors = []
        for thread in reversed(self.threads):
            try:
                thread.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def serve(mongrel2_factory):
    """Return ``serve(app, **mongrel2_overrides) -> Mongrel2Process``.

    It starts a Mongrel2, points the app's ``msg_conn`` at it, serves the app in a thread and
    returns once a request has round-tripped. At teardown the app stops (its thread is joined),
    then Mongrel2.
    """
    server = _Server(mongrel2_factory)
    yield server
    server.stop_all()


@pytest.fixture(scope="module")
def serve_module(module_mongrel2_factory):
    """``serve`` for a whole test module: the app and its Mongrel2 stop after the last test."""
    server = _Server(module_mongrel2_factory)
    yield server
    server.stop_all()


class RawResponse:
    """One HTTP response read off a raw socket, exactly as framed on the wire."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        lines = head.decode("latin-1").split("\r\n")
        self.version, status, self.reason = lines[0].split(" ", 2)
        self.status = int(status)
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep, f"malformed header line {line!r}"
            self.headers.append((name, value.strip()))
        self.body = body

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.get_all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def __repr__(self) -> str:
        return f"<RawResponse {self.status} {self.reason!r} {len(self.body)} bytes>"


class RawHTTP:
    """A plain TCP connection to Mongrel2: send bytes, read framed responses, detect close."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        version: str = "HTTP/1.1",
        body: bytes = b"",
    ) -> None:
        lines = [f"{method} {path} {version}", "Host: localhost"]
        lines += [f"{name}: {value}" for name, value in headers or []]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unparsed bytes: {self._buffer!r}")
        self._buffer += chunk

    def read_response(self, head_request: bool = False) -> RawResponse:
        """Read one response; its body is exactly what Content-Length frames (none for HEAD)."""
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        response = RawResponse(head, b"")
        length = response.header("Content-Length")
        if head_request or response.status in (204, 304) or response.status < 200:
            return response
        assert length is not None, f"response without Content-Length: {head!r}"
        size = int(length)
        while len(self._buffer) < size:
            self._fill()
        response.body, self._buffer = self._buffer[:size], self._buffer[size:]
        return response

    def rest_until_closed(self) -> bytes:
        """Every byte left until the server closes the connection (times out if it does not)."""
        data, self._buffer = self._buffer, b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_http():
    """Return ``connect(m2, timeout=5.0) -> RawHTTP``; every connection is closed at teardown."""
    opened: list[RawHTTP] = []

    def connect(m2: Mongrel2Process, timeout: float = 5.0) -> RawHTTP:
        conn = RawHTTP(("127.0.0.1", m2.config.port), timeout)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def wait_for():
    """The ``wait_until`` helper, for test modules (they cannot import this conftest)."""
    return wait_until


@pytest.fixture(scope="module")
def example_app_file() -> Path:
    """The hello example's source file."""
    path = Path(__file__).resolve().parents[2] / "examples" / "hello" / "app.py"
    assert path.is_file(), path
    return path
