"""What a rolling restart costs: requests lost while one of two workers is restarted under load.

``brubeck run --mongrel2 --workers 2`` serves bench/apps/rolling_app.py (a quick handler and
one that awaits 5 ms). Keep-alive clients load it for a bounded time while, every
``--every`` seconds, one worker (the two in turn) gets ``--signal`` (TERM: a graceful stop;
KILL: a crash); the supervisor starts its replacement. Every request either gets its 200, or
fails (error, other status), or is never answered within ``--timeout`` seconds.

    python bench/rolling_restart.py --restarts 10 --connections 32

Only 127.0.0.1 is used; the server runs in its own session and is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from brubeck.mongrel2 import free_port  # noqa: E402

APP = "bench/apps/rolling_app.py:app"
PATHS = (b"/quick", b"/awaits")


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    unanswered: int = 0
    max_latency: float = 0.0
    lost_at: list[float] = field(default_factory=list)  # send times of the lost requests


class Server:
    """The supervisor and its Mongrel2, with the pids its log names."""

    def __init__(self, run_dir: Path, workers: int) -> None:
        self.port = free_port()
        command = [
            sys.executable, "-m", "brubeck", "--log-level", "info", "run", APP, "--mongrel2",
            "--no-mongrel2-access-log", "--workers", str(workers), "--port", str(self.port),
            "--pull", f"tcp://127.0.0.1:{free_port()}", "--pub", f"tcp://127.0.0.1:{free_port()}",
            "--run-dir", str(run_dir),
        ]  # fmt: skip
        self.run_dir = run_dir
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.workers: dict[int, int] = {}  # slot -> pid
        self.serving: set[int] = set()
        self.log: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            with self.changed:
                if m := re.search(r"worker (\d+) started \(pid (\d+)\)", line):
                    self.workers[int(m[1])] = int(m[2])
                if m := re.search(r"brubeck\.app\[(\d+)\]: Brubeck serving", line):
                    self.serving.add(int(m[1]))
                self.changed.notify_all()

    def wait(self, predicate, timeout: float = 20.0) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise TimeoutError("the server did not get there:\n" + "".join(self.log[-20:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int((self.run_dir / "run" / "mongrel2.pid").read_text()), signal.SIGKILL)


async def client(port: int, stop: asyncio.Event, timeout: float, tally: Tally, n: int) -> None:
    """One keep-alive connection, one request at a time; a new connection after any loss."""
    reader = writer = None
    turn = n
    while not stop.is_set():
        path = PATHS[turn % len(PATHS)]
        turn += 1
        sent = time.monotonic()
        tally.sent += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path)
            async with asyncio.timeout(timeout):
                head = await reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
                length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
                await reader.readexactly(length)  # type: ignore[union-attr]
            if head.startswith(b"HTTP/1.1 200 "):
                tally.ok += 1
                tally.max_latency = max(tally.max_latency, time.monotonic() - sent)
                continue
            tally.failed += 1
        except TimeoutError:
            tally.unanswered += 1
        except (OSError, asyncio.IncompleteReadError, TypeError):
            tally.failed += 1
        tally.lost_at.append(sent)
        if writer is not None:
            writer.close()
        reader = writer = None
    if writer is not None:
        writer.close()


def restart_loop(server: Server, args: argparse.Namespace, marks: list[float], done) -> None:
    sig = signal.Signals[f"SIG{args.signal}"]
    for i in range(args.restarts):
        time.sleep(args.every)
        slot = 1 + i % 2
        old = server.workers[slot]
        marks.append(time.monotonic())
        os.kill(old, sig)
        server.wait(lambda slot=slot, old=old: server.workers[slot] != old)
        new = server.workers[slot]
        server.wait(lambda new=new: new in server.serving)
    time.sleep(args.every)
    done()


async def load(server: Server, args: argparse.Namespace) -> tuple[Tally, list[float], float]:
    tally, marks = Tally(), []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    clients = [
        asyncio.create_task(client(server.port, stop, args.timeout, tally, n))
        for n in range(args.connections)
    ]
    started = time.monotonic()
    thread = threading.Thread(
        target=restart_loop,
        args=(server, args, marks, lambda: loop.call_soon_threadsafe(stop.set)),
        daemon=True,
    )
    thread.start()
    await asyncio.gather(*clients)
    return tally, marks, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=10, help="restarts, alternating workers")
    parser.add_argument("--every", type=float, default=1.5, help="seconds between restarts")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds before 'never'")
    parser.add_argument("--signal", choices=["TERM", "INT", "KILL"], default="TERM")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    if not 1 <= args.restarts <= 100 or not 1 <= args.connections <= 500:
        parser.error("keep --restarts within 1..100 and --connections within 1..500")

    with tempfile.TemporaryDirectory(prefix="brubeck-rolling-") as tmp:
        server = Server(Path(tmp) / "site", workers=2)
        try:
            server.wait(lambda: len(server.serving) >= 2)
            tally, marks, elapsed = asyncio.run(load(server, args))
        finally:
            server.stop()
    lost = tally.failed + tally.unanswered
    per_restart = [
        sum(1 for t in tally.lost_at if mark - 0.5 <= t < mark + args.every - 0.5) for mark in marks
    ]
    result = {
        "signal": args.signal,
        "restarts": len(marks),
        "connections": args.connections,
        "seconds": round(elapsed, 1),
        "requests": tally.sent,
        "req_per_s": round(tally.sent / elapsed),
        "ok": tally.ok,
        "failed": tally.failed,
        "never_answered": tally.unanswered,
        "lost_per_restart": round(lost / max(1, len(marks)), 2),
        "lost_by_restart": per_restart,
        "max_latency_ms_of_answered": round(tally.max_latency * 1000, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "raw": asdict(tally)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
