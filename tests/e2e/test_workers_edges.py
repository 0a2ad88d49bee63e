"""Adversarial end-to-end tests of ``brubeck run --workers N --mongrel2``: restarts and crashes
while WebSockets, long requests, streamed uploads and downloads are in progress.

Every command runs in a new session and is killed by process group at the end (the ``Cli``
helper of test_workers.py); the Mongrel2 it started is killed by the pid in its pid file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_workers import REPO, Cli
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from brubeck.mongrel2 import free_port

APP_FILE = Path(__file__).resolve().parent / "apps" / "workers_edges_app.py"
APP = f"{APP_FILE}:app"


@pytest.fixture
def hunt(tmp_path):
    started: list[Cli] = []

    def start(*options: str, env: dict | None = None) -> Cli:
        command = Cli(tmp_path / f"run-{len(started)}", APP, *options, env=env)
        started.append(command)
        return command

    yield start
    for command in started:
        command.cleanup()


def new_pids(server: Cli, first: int, count: int) -> list[int]:
    """The pids of the ``count`` workers started after the first ``first`` ones."""
    lines = server.wait_for(r"worker \d+ started \(pid \d+\)", count=first + count)[first:]
    return [int(re.search(r"pid (\d+)", line)[1]) for line in lines]  # type: ignore[index]


def wait_for_arrivals(arrivals: Path, pids: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(set(arrivals.read_text().split())) < pids:
        assert time.monotonic() < deadline, arrivals.read_text()
        time.sleep(0.02)
    return arrivals.read_text().split()


def slow_requests(url: str, count: int, seconds: float) -> tuple[list[threading.Thread], dict]:
    """``count`` requests to ``/slow`` on connections of their own, each in a thread."""
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        try:
            response = httpx.get(f"{url}/slow?s={seconds}", timeout=seconds + 10)
            answers[i] = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            answers[i] = repr(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, answers


async def open_room(port: int, timeout: float = 5.0):
    """A WebSocket to ``/room`` and the first message (the pid and id of its owner)."""
    ws = await connect(f"ws://127.0.0.1:{port}/room", open_timeout=timeout)
    return ws, json.loads(await asyncio.wait_for(ws.recv(), timeout))


# Graceful stops: a worker that was told to stop takes nothing new.


def test_a_stopping_worker_no_longer_gets_requests_from_mongrel2(hunt, tmp_path):
    """Was a bug. A worker told to stop (SIGTERM, the rolling restart docs/deployment.md
    recommends) leaves Mongrel2 at once, so that Mongrel2 sends every new request to the other
    workers while it finishes what it holds. ``Mongrel2Connection.stop_receiving`` called
    ``disconnect`` on the PULL socket and never touched it again: libzmq completes a
    disconnect only while the socket processes commands (any call on it), so the connection
    to Mongrel2 stayed up, Mongrel2 went on dealing requests to it, and ZeroMQ dropped them.
    Every request dealt to the stopping worker during its drain was never answered."""
    arrivals = tmp_path / "arrivals"
    arrivals.touch()
    server = hunt("--workers", "2", env={"ARRIVALS": str(arrivals)})
    server.wait_ready()
    pids = server.worker_pids()
    threads, slow = slow_requests(server.url, 1, 4)
    try:
        (victim,) = map(int, wait_for_arrivals(arrivals, 1))
        (survivor,) = pids - {victim}
        os.kill(victim, signal.SIGTERM)
        server.wait_for(rf"brubeck\.app\[{victim}\]: waiting up to [\d.]+s for 1 requests")
        time.sleep(0.2)  # Mongrel2 sees a closed connection within milliseconds
        answers = []
        with httpx.Client(base_url=server.url, timeout=0.5) as client:
            for _ in range(6):
                try:
                    answers.append(client.get("/pid").text)
                except httpx.TimeoutException:
                    answers.append("never answered")
    finally:
        for thread in threads:
            thread.join(15)
    assert slow == {0: f"200 slept in {victim}"}  # the stopping worker finished its request
    assert answers == [str(survivor)] * 6
    assert server.stop() == 0, server.output


def test_after_sighup_the_new_workers_pass_messages_to_each_other(hunt, tmp_path):
    """Was a bug. SIGHUP starts a new set of workers while the old ones finish their requests;
    a WebSocket opened after that belongs to a new worker, and every frame of it reaches that
    worker. The new set reused the old set's ``ipc://`` peer endpoints: a new worker that
    started before its peer had bound the endpoint connected to the old worker still bound
    there (draining), and passed it the handshakes and frames of the new set's connections.
    Those sockets were opened in a stopping process (and closed with 1001 moments later), or,
    owned by a new worker, closed with 1011 "connection state lost" by the old one. Each
    generation needs endpoints of its own (see docs/websockets.md, several processes)."""
    arrivals = tmp_path / "arrivals"
    arrivals.touch()
    env = {"ARRIVALS": str(arrivals), "HUNT_SLOW_WORKER": "2"}
    server = hunt("--workers", "2", env=env)
    server.wait_ready()
    old = server.worker_pids()
    threads, slow = slow_requests(server.url, 4, 6)  # keeps the old set draining
    try:
        wait_for_arrivals(arrivals, 2)
        server.proc.send_signal(signal.SIGHUP)
        new = set(new_pids(server, 2, 2))
        server.wait_for(r"WebSocket owner \d of 2", count=4)  # both new workers took theirs

        async def talk() -> tuple[list[tuple[str, int]], list[str]]:
            opened: list[tuple[str, int]] = []  # (connection id, owner pid)
            problems: list[str] = []
            for _ in range(8):
                if len(opened) >= 4:
                    break
                try:
                    ws, hello = await open_room(server.port, timeout=1.5)
                except (TimeoutError, OSError) as exc:
                    problems.append(f"handshake: {exc!r}")
                    continue
                opened.append((hello["conn"], hello["open"]))
                try:
                    for n in range(3):
                        await ws.send(f"m{n}")
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 1.5))
                        if reply != {"echo": f"m{n}", "pid": hello["open"]}:
                            problems.append(f"conn {hello['conn']}: {reply}")
                except (TimeoutError, ConnectionClosed) as exc:
                    problems.append(f"conn {hello['conn']}: {exc!r}")
                finally:
                    await ws.close()
            return opened, problems

        opened, problems = asyncio.run(talk())
    finally:
        for thread in threads:
            thread.join(15)
    assert sorted(slow.values()) == sorted(
        f"200 slept in {pid}" for pid in arrivals.read_text().split()
    )
    in_old = [(cid, pid) for cid, pid in opened if pid in old]
    assert in_old == [], f"opened after SIGHUP in a worker of the old set {old}: {in_old}"
    assert {pid for _, pid in opened} <= new
    assert problems == []
    assert server.stop() == 0, server.output


# What keeps working: rooms, crashes, uploads, downloads, stops.


def test_a_room_spans_three_workers_and_survives_a_killed_one(hunt):
    """A broadcast reaches the room's members in every worker; a worker killed with SIGKILL
    is restarted, its sockets are closed with 1011 at their next message (docs/websockets.md,
    a process that dies), and the others, and the room, go on."""
    server = hunt("--workers", "3")
    server.wait_ready(workers=3)
    pids = server.worker_pids(3)

    async def scenario() -> None:
        members = [await open_room(server.port) for _ in range(6)]
        assert {hello["open"] for _, hello in members} == pids  # spread over all three
        await members[0][0].send("say:hello, room")
        heard = await asyncio.gather(*(asyncio.wait_for(ws.recv(), 5) for ws, _ in members))
        assert heard == ["hello, room"] * 6

        victim = members[1][1]["open"]
        os.kill(victim, signal.SIGKILL)
        await asyncio.to_thread(server.wait_for, rf"pid {victim}\) was killed by SIGKILL", 10)
        (newcomer,) = await asyncio.to_thread(new_pids, server, 3, 1)
        await asyncio.to_thread(server.wait_for, "WebSocket owner", 10, 4)
        survivors, lost = [], []
        for ws, hello in members:
            await ws.send("still there?")
            if hello["open"] == victim:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
                lost.append(ws)
            else:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply == {"echo": "still there?", "pid": hello["open"]}
                survivors.append(ws)
        assert len(lost) == 2 and len(survivors) == 4

        more = [await open_room(server.port) for _ in range(3)]
        assert newcomer in {hello["open"] for _, hello in more}
        everyone = survivors + [ws for ws, _ in more]
        await more[0][0].send("say:again")
        heard = await asyncio.gather(*(asyncio.wait_for(ws.recv(), 5) for ws in everyone))
        assert heard == ["again"] * len(everyone)
        for ws in everyone:
            await ws.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert server.stop() == 0, server.output


def test_uploads_downloads_and_sockets_at_once_over_three_workers(hunt):
    """Streamed uploads (``upload.stream=1``), downloads under ``download.flow_control`` and
    WebSockets, all at once on fresh connections: every piece, credit and frame reaches the
    connection's owner among three workers."""
    server = hunt("--workers", "3", env={"HUNT_UPLOAD_STREAM": "1", "HUNT_FLOW_CONTROL": "1"})
    server.wait_ready(workers=3)
    server.wait_for("each connection's messages go to its owner", count=3)
    bodies = [os.urandom(300_000 + i) for i in range(6)]

    async def scenario() -> list:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=20, limits=limits) as client:

            async def upload(data: bytes) -> tuple[str, int]:
                body = (await client.post("/digest", content=data)).json()
                return body["sha256"], body["size"]

            async def download() -> int:
                async with client.stream("GET", "/bulk/20") as response:
                    return sum([len(piece) async for piece in response.aiter_bytes()])

            async def talk() -> list[str]:
                ws, hello = await open_room(server.port)
                replies = []
                for n in range(5):
                    await ws.send(f"m{n}")
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    replies.append(f"{reply['echo']}@{reply['pid'] == hello['open']}")
                await ws.close()
                return replies

            return await asyncio.gather(
                *(upload(data) for data in bodies),
                *(download() for _ in range(3)),
                *(talk() for _ in range(6)),
            )

    results = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert results[:6] == [(hashlib.sha256(b).hexdigest(), len(b)) for b in bodies]
    assert results[6:9] == [20 * 65536] * 3
    assert results[9:] == [[f"m{n}@True" for n in range(5)]] * 6
    assert server.stop() == 0
    assert "did not start" not in server.output and "no download credits" not in server.output


def test_a_streamed_upload_cut_by_sighup_gets_one_503(hunt):
    """SIGHUP while a client is still sending a streamed upload: the old worker answers it
    once, 503, and the connection ends (no second answer, no silence)."""
    server = hunt("--workers", "2", env={"HUNT_UPLOAD_STREAM": "1"})
    server.wait_ready()
    with socket.create_connection(("127.0.0.1", server.port), timeout=8) as sock:
        sock.sendall(b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: 600000\r\n\r\n")
        sock.sendall(b"y" * 100_000)
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGHUP)
        try:
            for _ in range(10):
                time.sleep(0.1)
                sock.sendall(b"y" * 50_000)
        except OSError:
            pass  # the server hung up: expected once it answered
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 503 "), received[:200]
    assert received.count(b"HTTP/1.1") == 1, received
    assert b"the server is restarting" in received
    assert server.stop() == 0, server.output


def test_sigterm_answers_the_request_in_flight_and_closes_sockets_with_1001(hunt, tmp_path):
    """SIGTERM to ``brubeck run --workers 3``: the request in flight is answered, each open
    WebSocket gets a 1001 close, and the command exits 0."""
    arrivals = tmp_path / "arrivals"
    arrivals.touch()
    server = hunt("--workers", "3", env={"ARRIVALS": str(arrivals)})
    server.wait_ready(workers=3)

    async def scenario() -> tuple[httpx.Response, list[int]]:
        sockets = [await open_room(server.port) for _ in range(3)]
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.ensure_future(client.get(f"{server.url}/slow?s=1"))
            while not arrivals.read_text():
                await asyncio.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            response = await slow
        codes = []
        for ws, _ in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
        return response, codes

    response, codes = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert (response.status_code, response.text) == (
        200,
        f"slept in {arrivals.read_text().strip()}",
    )
    assert codes == [1001] * 3
    assert server.proc.wait(10) == 0, server.output


# Workers that cannot start.


def test_workers_crashing_at_startup_make_the_cli_give_up_with_exit_1(tmp_path):
    """An ``on_startup`` hook that raises: each worker exits 1, is restarted after a delay that
    doubles up to a cap, and after ten quick failures in a row the command stops everything
    (its Mongrel2 included) and exits 1. The delays are shortened (base 0.05 s, cap 0.4 s)
    to keep it fast."""
    run_dir = tmp_path / "site"
    code = (
        "import functools, sys\n"
        "import brubeck.supervisor as supervisor\n"
        "supervisor.Backoff = functools.partial(supervisor.Backoff, base=0.05, cap=0.4)\n"
        "from brubeck.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [
        sys.executable, "-c", code, "run", APP, "--workers", "2", "--mongrel2",
        "--port", str(free_port()),
        "--pull", f"tcp://127.0.0.1:{free_port()}", "--pub", f"tcp://127.0.0.1:{free_port()}",
        "--run-dir", str(run_dir),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "HUNT_CRASH": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=14)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pid_file = run_dir / "run" / "mongrel2.pid"
        if pid_file.exists():  # only if the command did not stop its Mongrel2 itself
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert proc.returncode == 1, output
    assert "hunt: startup failed on purpose" in output
    delays = re.findall(
        r"worker 1 \(pid \d+\) exited with code 1 after [\d.]+s; restarting it in ([\d.]+)s", output
    )
    assert delays[:5] == ["0.1", "0.1", "0.2", "0.4", "0.4"], delays  # 0.05 shows as 0.1
    assert re.search(
        r"ERROR brubeck\.supervisor\[\d+\]: worker \d exited with code 1 after [\d.]+s: "
        r"10 quick failures in a row; giving up and stopping all workers",
        output,
    ), output
    assert len(re.findall(r"worker \d started \(pid", output)) <= 21  # 10 tries each, at most
    assert not pid_file.exists(), "Mongrel2 was left running"


def test_the_supervisor_says_how_stopped_workers_failed():
    """Was a bug. When workers exit with an error as they are stopped, the supervisor logs
    one line naming how: "workers exited with code 3". ``Supervisor._shutdown`` put
    ``describe_exit`` (which already says "exited with code 3") after "workers exited with",
    and logged "workers exited with exited with code 3"."""
    worker = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *args: sys.exit(3))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "from brubeck.supervisor import Supervisor\n"
        f"sys.exit(Supervisor([sys.executable, '-c', {worker!r}], 1, shutdown_timeout=5).run())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    (failed,) = [line for line in output.splitlines() if "code 3" in line]
    assert failed.startswith("WARNING ") and "exited with exited" not in failed, failed
