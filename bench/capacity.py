"""Handler capacity without Mongrel2: how many messages/s one handler process answers.

This script plays Mongrel2: it binds a PUSH and a SUB socket, pushes pre-encoded request
messages (the bytes Mongrel2 sends) to the handler under test, keeps a bounded window of
requests outstanding, and counts the replies. For each case it compares, side by side:

  * bare:    bench/bare_handler.py, a blocking pyzmq loop doing parse-and-reply, no framework;
  * brubeck: the case's app (examples/hello or bench/apps/hello_bench.py) run by the brubeck
    command.

Two costs are reported per request: wall µs (1 / rate, which includes waiting for this load
generator) and the handler's own CPU µs (its utime + stime over the run / replies). The load
generator is Python too and shares the cores, so compare ratios measured in one run.

    python bench/capacity.py --requests 200000 --cases hello-text,json,async-param --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import tnetstring
import zmq
import zmq.backend
from benchlib import (
    APP_CMD,
    BARE_CMD,
    Case,
    add_json_option,
    cpu_seconds,
    free_port,
    handler_argv,
    parse_cases,
    script_parser,
    start,
    stop,
    stopped_by,
    stops_on_sigterm,
    write_json,
)

DEFAULT_CASES = "hello-text,json,param,param-varied,async-json"
VARIED = 20_000
SENDER = b"54c6755b-9628-40a4-9a2d-cc82a816345e"

# pyzmq's Python-level send/recv add checks that cost about as much as the work measured here.
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv


def request_bytes(path: bytes, conn_id: int) -> bytes:
    """A GET as Mongrel2 (tnetstring protocol) delivers it for a curl-like client."""
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
    return b"%s %d %s %s0:," % (SENDER, conn_id, path, tnetstring.dumps(headers))


def disconnect_bytes(conn_id: int) -> bytes:
    """Mongrel2's notice that a client closed its connection (MONGREL2.md §A3)."""
    return b'%s %d @* 16:6:METHOD,4:JSON,}21:{"type":"disconnect"},' % (SENDER, conn_id)


class HandlerGone(RuntimeError):
    pass


class Driver:
    """The Mongrel2 side of the handler protocol, bound on free loopback ports.

    Args:
        window: most requests outstanding (unanswered) at once; bounds every queue.
        stall: seconds without a reply after which the rest count as lost.
    """

    def __init__(self, window: int = 1000, stall: float = 2.0) -> None:
        self.window = window
        self.stall = stall
        self.pull_addr = f"tcp://127.0.0.1:{free_port()}"  # the handler's PULL connects here
        self.pub_addr = f"tcp://127.0.0.1:{free_port()}"  # the handler's PUB connects here
        self._ctx = zmq.Context()
        self.push = self._ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.bind(self.pull_addr)
        self.sub = self._ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)  # never drop a reply here; the window bounds memory
        self.sub.bind(self.pub_addr)
        self.sub.subscribe(b"")

    def close(self) -> None:
        self._ctx.destroy(linger=0)

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, probe: bytes, timeout: float, alive: Callable[[], bool]) -> None:
        """Return once the handler answered (it is connected and subscribed); drain extras."""
        deadline = time.monotonic() + timeout
        while True:
            _send(self.push, probe)
            if self.sub.poll(200):
                self.sub.recv()
                break
            if not alive():
                raise HandlerGone("the handler under test exited before answering")
            if time.monotonic() > deadline:
                raise HandlerGone(f"the handler under test did not answer within {timeout}s")
        while self.sub.poll(300):  # answers to the probes sent while it was starting
            self.sub.recv()

    def run(
        self,
        total: int,
        make: Callable[[int], bytes],
        extra: Callable[[int], bytes | None] | None = None,
        timeout: float = 600.0,
    ) -> tuple[float, int]:
        """Push ``total`` requests (``make(i)``), each followed by ``extra(i)`` if not None.

        Returns (seconds, replies); replies < total when some were lost or time ran out.
        """
        push, sub, window = self.push, self.sub, self.window
        again, noblock = zmq.Again, zmq.NOBLOCK
        sent = received = 0
        start_time = time.perf_counter()
        deadline = time.monotonic() + timeout
        stall_ms = int(self.stall * 1000)
        while received < total:
            while sent < total and sent - received < window:
                _send(push, make(sent))
                if extra is not None:
                    notice = extra(sent)
                    if notice is not None:
                        _send(push, notice)
                sent += 1
            if sub.poll(stall_ms):
                try:
                    while True:
                        _recv(sub, noblock)
                        received += 1
                except again:
                    pass
            else:
                print(f"  no reply for {self.stall}s: {sent - received} lost", file=sys.stderr)
                break
            if time.monotonic() > deadline:
                print(f"  time limit of {timeout}s reached", file=sys.stderr)
                break
        return time.perf_counter() - start_time, received


@dataclass
class Result:
    case: str
    handler: str
    replies: int
    seconds: float
    rate: float
    us_per_request: float
    cpu_us_per_request: float


def measure(case: Case, handler: str, argv: list[str], total: int, window: int) -> Result:
    """Start the handler on a fresh driver, warm it up, push ``total`` requests, stop it."""
    if case.varied:  # distinct paths, more than a per-path cache should hold
        messages = [request_bytes(case.at(i).encode(), 10 + i % 50) for i in range(VARIED)]
    else:
        messages = [request_bytes(case.path.encode(), 10 + i) for i in range(50)]
    count = len(messages)
    with Driver(window) as driver:
        argv = [
            a.replace("{pull}", driver.pull_addr).replace("{pub}", driver.pub_addr) for a in argv
        ]
        proc = start(argv)
        try:
            driver.wait_ready(messages[0], 30, lambda: proc.poll() is None)
            cpu_before = cpu_seconds(proc.pid)
            seconds, replies = driver.run(total, lambda i: messages[i % count])
            cpu = cpu_seconds(proc.pid) - cpu_before
        finally:
            stop(proc)
    rate = replies / seconds if seconds else 0.0
    return Result(
        case.name,
        handler,
        replies,
        round(seconds, 3),
        round(rate, 1),
        round(1e6 / rate, 2) if rate else 0.0,
        round(1e6 * cpu / replies, 2) if replies else 0.0,
    )


def handlers_for(case: Case) -> list[tuple[str, list[str]]]:
    placeholders = {"pull": "{pull}", "pub": "{pub}"}
    return [
        ("bare", handler_argv(BARE_CMD, **placeholders)),
        ("brubeck", handler_argv(APP_CMD, app=case.app, **placeholders)),
    ]


def median(runs: list[Result]) -> Result:
    """The run with the median rate, which keeps its own CPU figure."""
    return sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]


def print_table(results: list[Result]) -> list[dict[str, object]]:
    print(
        "| case | bare msg/s | brubeck msg/s | ratio | bare µs/req | brubeck µs/req "
        "| bare CPU µs/req | brubeck CPU µs/req | CPU ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    by_case: dict[str, dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.handler] = r
    for case, pair in by_case.items():
        bare, app = pair["bare"], pair["brubeck"]
        ratio = app.rate / bare.rate if bare.rate else 0.0
        cpu_ratio = (
            bare.cpu_us_per_request / app.cpu_us_per_request if app.cpu_us_per_request else 0.0
        )
        print(
            f"| {case} | {bare.rate:.0f} | {app.rate:.0f} | {ratio:.2f} "
            f"| {bare.us_per_request:.1f} | {app.us_per_request:.1f} "
            f"| {bare.cpu_us_per_request:.1f} | {app.cpu_us_per_request:.1f} | {cpu_ratio:.2f} |"
        )
        rows.append({"case": case, "ratio": round(ratio, 3), "cpu_ratio": round(cpu_ratio, 3)})
    print("\nratio: brubeck msg/s ÷ bare msg/s; CPU ratio: bare CPU µs ÷ brubeck CPU µs")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--requests", type=int, default=200_000, help="per run (200000)")
    parser.add_argument("--window", type=int, default=1000, help="requests outstanding (1000)")
    parser.add_argument(
        "--cases", default=DEFAULT_CASES, help=f"comma-separated, or 'all' ({DEFAULT_CASES})"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per handler, median kept (1)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if min(args.requests, args.window, args.repeat) < 1:
        parser.error("--requests, --window and --repeat must be >= 1")
    try:
        args.cases = parse_cases(args.cases)
    except ValueError as exc:
        parser.error(str(exc))
    return args


@stops_on_sigterm
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Result] = []
    try:
        for case in args.cases:
            runs: dict[str, list[Result]] = {"bare": [], "brubeck": []}
            for i in range(args.repeat):
                pairs = handlers_for(case)
                for name, cmd in pairs if i % 2 == 0 else pairs[::-1]:  # ABBA against drift
                    run = measure(case, name, cmd, args.requests, args.window)
                    print(
                        f"  {case.name:12} {name:8} {run.rate:9.0f} msg/s "
                        f"{run.cpu_us_per_request:6.1f} CPU µs/req",
                        file=sys.stderr,
                    )
                    runs[name].append(run)
            results += [median(r) for r in runs.values()]
    except (KeyboardInterrupt, HandlerGone) as exc:
        return stopped_by(exc)
    rows = print_table(results)
    if args.json:
        write_json(
            args.json,
            {"requests": args.requests, "window": args.window, "repeat": args.repeat},
            results=[asdict(r) for r in results],
            ratios=rows,
            median_cpu_ratio=statistics.median(r["cpu_ratio"] for r in rows),  # type: ignore[misc]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
