"""Handler capacity without Mongrel2: how many messages/s one handler process answers.

This script plays Mongrel2: it binds a PUSH and a SUB socket, pushes pre-encoded request
messages (the bytes Mongrel2 sends) to the handler under test, keeps a bounded window of
requests outstanding, and counts the replies. It compares, in one run:

  * bare:    bench/bare_handler.py, a blocking pyzmq loop doing parse-and-reply, no framework;
  * brubeck: examples/hello/app.py run by the brubeck command.

Both the load generator and the handler are Python processes sharing this machine's cores;
the figures are only meaningful as ratios measured side by side.

    python bench/capacity.py --requests 200000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import tnetstring
import zmq

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request_bytes(path: bytes, conn_id: int) -> bytes:
    headers = {
        b"REMOTE_ADDR": b"127.0.0.1",
        b"METHOD": b"GET",
        b"URL_SCHEME": b"http",
        b"PATTERN": b"/",
        b"URI": path,
        b"VERSION": b"HTTP/1.1",
        b"PATH": path,
        b"host": b"127.0.0.1:6767",
        b"user-agent": b"wrk",
        b"accept": b"*/*",
        b"x-forwarded-for": b"127.0.0.1",
    }
    return b"54c6755b-9628-40a4-9a2d-cc82a816345e %d %s %s0:," % (
        conn_id,
        path,
        tnetstring.dumps(headers),
    )


def drive(
    pull_addr: str, pub_addr: str, path: bytes, total: int, window: int, timeout: float
) -> tuple[float, int]:
    """Push ``total`` requests with at most ``window`` unanswered; returns (seconds, replies)."""
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.bind(pull_addr)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)  # never drop a reply here; the window bounds memory
    sub.bind(pub_addr)
    sub.subscribe(b"")
    try:
        # Warm up: wait until one request is answered (the handler is connected and subscribed).
        probe = request_bytes(path, 1)
        deadline = time.monotonic() + timeout
        while True:
            push.send(probe)
            if sub.poll(200):
                sub.recv()
                break
            if time.monotonic() > deadline:
                raise SystemExit("the handler under test never answered")
        while sub.poll(100):
            sub.recv()
        messages = [request_bytes(path, 10 + i % 50) for i in range(50)]
        sent = received = 0
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        while received < total:
            while sent < total and sent - received < window:
                push.send(messages[sent % 50])
                sent += 1
            if sub.poll(1000):
                try:
                    while True:
                        sub.recv(zmq.NOBLOCK)
                        received += 1
                except zmq.Again:
                    pass
            elif sent - received >= window or sent == total:
                print(f"  no reply for 1 s: {sent - received} replies lost", file=sys.stderr)
                break
            if time.monotonic() > deadline:
                break
        return time.perf_counter() - start, received
    finally:
        push.close(linger=0)
        sub.close(linger=0)


def run_one(name: str, cmd: list[str], path: bytes, total: int, window: int) -> dict:
    pull_addr = f"tcp://127.0.0.1:{free_port()}"
    pub_addr = f"tcp://127.0.0.1:{free_port()}"
    argv = [a.format(pull=pull_addr, pub=pub_addr) for a in cmd]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        seconds, received = drive(pull_addr, pub_addr, path, total, window, timeout=120)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    rate = received / seconds
    return {
        "name": name,
        "replies": received,
        "seconds": seconds,
        "rate": rate,
        "us_per_request": 1e6 / rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=1000)  # ≤ the bare PUB HWM
    parser.add_argument("--path", default="/brubeck")
    args = parser.parse_args()
    py = sys.executable
    cases = [
        ("bare pyzmq", [py, "bench/bare_handler.py", "{pull}", "{pub}"]),
        (
            "brubeck",
            [
                py,
                "-m",
                "brubeck",
                "--log-level",
                "warning",
                "run",
                "examples/hello/app.py:app",
                "--pull",
                "{pull}",
                "--pub",
                "{pub}",
            ],
        ),
    ]
    results = [
        run_one(name, cmd, args.path.encode(), args.requests, args.window) for name, cmd in cases
    ]
    print(f"{'handler':<12} {'replies':>9} {'msg/s':>10} {'us/req':>8}")
    for r in results:
        print(f"{r['name']:<12} {r['replies']:>9} {r['rate']:>10.0f} {r['us_per_request']:>8.1f}")
    print(f"ratio brubeck/bare: {results[1]['rate'] / results[0]['rate']:.2f}")


if __name__ == "__main__":
    main()
