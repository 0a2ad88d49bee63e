"""Services benchmark: request/reply round trips per second through Brubeck's service layer
(ServiceClient -> Broker -> worker) against a bare pyzmq DEALER/ROUTER echo, as a ratio.

Each stack runs its server side in child processes on loopback ports: the bare one is a ROUTER
that echoes every message; the service one is the broker (``python -m brubeck.services.broker``)
and one worker, either Brubeck's ``ServiceWorker`` or the plain pyzmq MDP worker from
examples/services (so the table shows what the broker and client cost apart from the worker).
The clients run here, in one asyncio loop, with 1 and then N requests in flight.

    python bench/services.py [--duration 2] [--inflight 1,16,64] [--workers 1]

Every child is killed by pid when the run ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import zmq
import zmq.asyncio

from brubeck.services import ServiceClient

ROOT = Path(__file__).resolve().parents[1]

BARE_ECHO = """
import sys, zmq
sock = zmq.Context().socket(zmq.ROUTER)
sock.bind(sys.argv[1])
while True:
    sock.send_multipart(sock.recv_multipart())
"""

BRUBECK_WORKER = """
import sys
from brubeck.services import ServiceWorker
worker = ServiceWorker(sys.argv[1], "echo")

@worker.handler
async def echo(payload):
    return payload

worker.run()
"""


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


class Children:
    """Child processes of one stack, killed by pid on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str) -> None:
        self.procs.append(subprocess.Popen([sys.executable, *argv], cwd=ROOT))

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(5)


async def bare_rate(address: str, inflight: int, duration: float) -> float:
    """Round trips per second on a DEALER to the echoing ROUTER, ``inflight`` at a time."""
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    try:
        await sock.send_multipart([b"", b"warm-up"])
        async with asyncio.timeout(10):
            await sock.recv_multipart()
        frames = [b"\x00" * 8, b"", b"text", b"ping"]  # the shape of a service request
        for _ in range(inflight):
            await sock.send_multipart(frames)
        done = 0
        start = time.perf_counter()
        end = start + duration
        async with asyncio.timeout(duration + 10):
            while time.perf_counter() < end:
                await sock.recv_multipart()
                done += 1
                await sock.send_multipart(frames)
        return done / (time.perf_counter() - start)
    finally:
        sock.close()


async def service_rate(address: str, inflight: int, duration: float) -> float:
    """Round trips per second through the broker, from ``inflight`` concurrent callers."""
    async with ServiceClient(address, timeout=10, retries=0) as client:
        async with asyncio.timeout(15):
            await client.request("echo", "warm-up")
        done = 0
        start = time.perf_counter()
        end = start + duration

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await client.request("echo", "ping")
                done += 1

        async with asyncio.timeout(duration + 15):
            await asyncio.gather(*(caller() for _ in range(inflight)))
        return done / (time.perf_counter() - start)


async def measure(
    inflights: list[int], duration: float, workers: int
) -> list[tuple[int, float, float, float]]:
    rows = []
    bare_addr, broker_addr, plain_addr = free_address(), free_address(), free_address()
    with Children() as bare, Children() as services, Children() as plain:
        bare.start("-c", BARE_ECHO, bare_addr)
        services.start("-m", "brubeck.services.broker", broker_addr)
        plain.start("-m", "brubeck.services.broker", plain_addr)
        for _ in range(workers):
            services.start("-c", BRUBECK_WORKER, broker_addr)
            plain.start(str(ROOT / "examples" / "services" / "echo_worker.py"), plain_addr)
        for inflight in inflights:
            rows.append(
                (
                    inflight,
                    await bare_rate(bare_addr, inflight, duration),
                    await service_rate(broker_addr, inflight, duration),
                    await service_rate(plain_addr, inflight, duration),
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--inflight", default="1,16,64", help="requests in flight, comma-separated")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per service")
    args = parser.parse_args()
    inflights = [int(n) for n in args.inflight.split(",")]
    rows = asyncio.run(measure(inflights, args.duration, args.workers))
    print(f"\n{args.workers} worker process(es) per service; one echo process for the bare stack")
    print("round trips/s      bare DEALER/ROUTER   services (Brubeck worker)", end="")
    print("   services (pyzmq worker)")
    for inflight, bare, brubeck, plain in rows:
        print(
            f"{inflight:>3} in flight   {bare:>18,.0f}   {brubeck:>11,.0f}  ({brubeck / bare:5.1%})"
            f"   {plain:>11,.0f}  ({plain / bare:5.1%})"
        )
    print("\n(percentages: the service rate as a share of the bare echo's)")


if __name__ == "__main__":
    main()
