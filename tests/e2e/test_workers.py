"""``brubeck run --workers N`` behind a real Mongrel2: balance, restarts, graceful stops, reload.

Every command runs in a new session and is killed by process group at the end; the Mongrel2
it started is killed by the pid in its pid file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from brubeck.mongrel2 import free_port

REPO = Path(__file__).resolve().parents[2]
APP = str(Path(__file__).resolve().parent / "apps" / "workers_app.py") + ":app"


class Cli:
    """``python -m brubeck run ... --mongrel2`` on free ports, its output read in a thread."""

    def __init__(self, tmp_path: Path, target: str, *options: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = tmp_path / "site"
        command = [
            sys.executable, "-m", "brubeck", "run", target, "--mongrel2",
            "--port", str(self.port),
            "--pull", f"tcp://127.0.0.1:{free_port()}",
            "--pub", f"tcp://127.0.0.1:{free_port()}",
            "--run-dir", str(self.run_dir),
            *options,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 15.0, count: int = 1) -> list[str]:
        """The first ``count`` output lines matching ``pattern`` (a regex), seen or to come."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines if regex.search(line)]
            if len(found) >= count:
                return found[:count]
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"no {count} lines match {pattern!r}; output:\n{self.output}")
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def worker_pids(self, count: int = 2) -> set[int]:
        lines = self.wait_for(r"worker \d+ started \(pid \d+\)", count=count)
        return {int(re.search(r"pid (\d+)", line)[1]) for line in lines}  # type: ignore[index]

    def wait_ready(self, workers: int = 2) -> None:
        self.wait_for("Mongrel2 listening on")
        self.wait_for("Brubeck serving", count=workers)

    def stop(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return code

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        pid_file = self.run_dir / "run" / "mongrel2.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def cli(tmp_path):
    started: list[Cli] = []

    def start(*options: str, target: str = APP, env: dict | None = None) -> Cli:
        command = Cli(tmp_path, target, *options, env=env)
        started.append(command)
        return command

    yield start
    for command in started:
        command.cleanup()


def test_two_workers_both_answer_and_log_json(cli):
    server = cli("--workers", "2", "--access-log", "--json-logs")
    server.wait_ready()
    pids = server.worker_pids()
    # One keep-alive connection: Mongrel2 alternates its requests between the two processes.
    answered: list[int] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while len(answered) < 10 or len(set(answered)) < 2:  # both sockets may take a moment
            answered.append(int(client.get("/pid").text))
            assert len(answered) < 100, answered
        boom = client.get("/boom", headers={"X-Request-Id": "boom-1"})
    assert set(answered) == pids
    assert boom.status_code == 500
    assert server.stop() == 0, server.output

    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    access = [r for r in records if r["logger"] == "brubeck.access"]
    assert len([r for r in access if r["path"] == "/pid"]) == len(answered)
    assert {r["pid"] for r in access} == pids
    first = next(r for r in access if r["path"] == "/pid")
    assert first["method"] == "GET" and first["status"] == 200 and first["remote_addr"]
    assert first["bytes"] == len(str(first["pid"])) and first["duration_ms"] >= 0
    assert re.fullmatch(r"[0-9a-f]{8}-\d+", first["request_id"])
    error = next(r for r in records if r["level"] == "error")
    assert error["request_id"] == "boom-1" and "RuntimeError: boom" in error["exc_info"]
    # Every line but the banner is JSON: no stray tracebacks or plain-text lines.
    assert [line for line in server.lines if not line.startswith("{")] == server.lines[:1]


def test_a_killed_worker_is_restarted_under_load(cli):
    server = cli("--workers", "2", "--access-log")
    server.wait_ready()
    victim, survivor = sorted(server.worker_pids())
    stop = threading.Event()
    answers: list[tuple[float, str]] = []  # (when sent, pid or "error")

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=2) as client:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    answers.append((sent, client.get("/pid").text))
                except httpx.HTTPError:
                    answers.append((sent, "error"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        server.wait_for(rf"pid {victim}\) was killed by SIGKILL after [\d.]+s; restarting it in")
        (line,) = server.wait_for(r"worker \d+ started \(pid \d+\)", count=3)[2:]
        newcomer = int(re.search(r"pid (\d+)", line)[1])  # type: ignore[index]
        deadline = time.monotonic() + 10
        while str(newcomer) not in {pid for _, pid in answers[-50:]}:
            assert time.monotonic() < deadline, "the new worker never answered"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert server.stop() == 0, server.output
    back = min(sent for sent, pid in answers if pid == str(newcomer))
    after = Counter(pid for sent, pid in answers if sent > back)
    assert set(after) == {str(survivor), str(newcomer)}, after  # no errors once restarted
    assert after[str(survivor)] > 10 and after[str(newcomer)] > 10, after
    assert re.search(r'brubeck\.access\[\d+\]: 127\.0\.0\.1 "GET /pid" 200 \d+ ', server.output)


def test_sigterm_lets_200_slow_requests_finish(cli, tmp_path):
    arrivals = tmp_path / "arrivals"
    arrivals.touch()
    server = cli("--workers", "2", env={"ARRIVALS": str(arrivals)})
    server.wait_ready()
    pids = server.worker_pids()

    async def load() -> tuple[list[httpx.Response | BaseException], float]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=20, limits=limits) as client:
            requests = [asyncio.ensure_future(client.get("/slow?s=1")) for _ in range(200)]
            deadline = time.monotonic() + 10
            while len(arrivals.read_text().split()) < 200:
                assert time.monotonic() < deadline, arrivals.read_text().count("\n")
                await asyncio.sleep(0.02)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*requests, return_exceptions=True)
            return results, time.monotonic() - signalled

    results, elapsed = asyncio.run(load())
    failures = [r for r in results if not isinstance(r, httpx.Response) or r.status_code != 200]
    assert failures == [], failures[:3]
    answered_by = Counter(r.text.removeprefix("slept in ") for r in results)  # type: ignore[union-attr]
    assert set(answered_by) <= {str(pid) for pid in pids}
    assert answered_by == Counter(arrivals.read_text().split())  # each answered where it arrived
    assert elapsed < 5
    assert server.proc.wait(10) == 0, server.output


def test_reload_picks_up_an_edited_handler(cli, tmp_path):
    source = tmp_path / "project" / "app.py"
    source.parent.mkdir()
    text = (
        "from brubeck import Brubeck\n"
        "app = Brubeck()\n"
        "@app.add_route(r'^/version$')\n"
        "def version(application, request):\n"
        "    return 'v1'\n"
    )
    source.write_text(text)
    server = cli("--reload", target=f"{source}:app")
    server.wait_ready(workers=1)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/version").text == "v1"
        source.write_text(text.replace("'v1'", "'v2'"))
        server.wait_for("app.py changed: restarting the workers")
        # Asking while the old worker stops could lose a request in flight: wait for the new.
        server.wait_for("Brubeck serving", count=2)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/version", timeout=1).text == "v2":
                    break
            assert time.monotonic() < deadline, server.output
            time.sleep(0.05)
    assert server.stop() == 0, server.output


SHARED_APP = str(Path(__file__).resolve().parent / "apps" / "shared_app.py") + ":app"


def test_workers_share_connections_that_need_one_owner_by_themselves(cli):
    """Without websocket_peers in the app, ``--workers 2`` sets them up: every upload's pieces,
    every socket's frames and, under download flow control, every message of a connection
    reach the worker that owns it."""
    server = cli("--workers", "2", target=SHARED_APP)
    server.wait_ready()
    # Log lines reach ``output`` only as ``wait_for`` reads them: wait, do not just look.
    server.wait_for("pass each other WebSocket and upload messages")
    pids = set()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(8):  # a new connection each: owners alternate
            data = os.urandom(200_000 + i)
            body = client.post("/digest", content=data, headers={"Connection": "close"}).json()
            assert (body["sha256"], body["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
            pids.add(body["pid"])
    assert len(pids) == 2

    async def talk() -> list[dict]:
        async with connect(f"ws://127.0.0.1:{server.port}/count", open_timeout=10) as ws:
            replies = []
            for n in range(10):
                await ws.send(str(n))
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            return replies

    async def three() -> list[list[dict]]:
        return await asyncio.wait_for(asyncio.gather(talk(), talk(), talk()), 30)

    for replies in asyncio.run(three()):
        assert [reply["count"] for reply in replies] == list(range(1, 11))
        assert len({reply["pid"] for reply in replies}) == 1  # one owner per socket

    # Download flow control: credits reach the worker that counts them (without that, each
    # 100 KiB waits 5 s for credits that went to the other worker).
    server.wait_for("each connection's messages go to its owner", count=2)
    started = time.monotonic()
    for _ in range(3):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(2):  # two streams on one keep-alive connection
                with client.stream("GET", "/bulk/40") as response:
                    assert sum(len(piece) for piece in response.iter_bytes()) == 40 * 65536
    assert time.monotonic() - started < 10
    assert server.stop() == 0
    assert "did not start" not in server.output
    assert "no download credits" not in server.output
