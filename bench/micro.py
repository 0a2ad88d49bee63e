"""Micro-benchmarks of the hot path, in µs per call, one line per function.

Each line is the min and the median of ``--repeat`` timings of ``--number`` calls; the min is
the least disturbed by a noisy machine. Names and order are stable, so that two outputs can be
compared line by line in review. No sockets: replies go to a connection that only counts them.

    python bench/micro.py                # about 10 s
    python bench/micro.py --json micro.json --filter handle_message
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from types import SimpleNamespace

from benchlib import BENCH_APP, HELLO_APP, REPO, add_json_option, script_parser
from capacity import request_bytes

from brubeck import Mongrel2Connection, Request, Response, Router
from brubeck.cli import load_app
from brubeck.compression import compressor
from brubeck.conditional import answer, with_etag
from brubeck.protocol import parse

#: The GET request verified against Mongrel2 1.12.2 (MONGREL2.md §A2, curl with a query string).
VERIFIED_GET = (
    b"54c6755b-9628-40a4-9a2d-cc82a816345e 1 /hello/world 273:11:REMOTE_ADDR,9:127.0.0.1,"
    b"6:METHOD,3:GET,10:URL_SCHEME,4:http,7:PATTERN,1:/,5:QUERY,9:a=1&b=two,3:URI,"
    b"22:/hello/world?a=1&b=two,7:VERSION,8:HTTP/1.1,4:PATH,12:/hello/world,4:host,"
    b"14:127.0.0.1:6767,10:user-agent,11:curl/7.88.1,6:accept,3:*/*,15:x-forwarded-for,"
    b"9:127.0.0.1,}0:,"
)


class CountingConnection(Mongrel2Connection):
    """A connection that never opens a socket: it counts what the app would send."""

    def __init__(self) -> None:
        super().__init__("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
        self.sent = 0
        self.last = b""

    def send_raw(self, data: bytes) -> None:
        self.sent += 1
        self.last = data


def twenty_routes() -> Router:
    """A router like a small site's: 19 literal and parameterised routes, then /user/<id>."""
    router = Router()

    def target(application: object, message: object, **kwargs: str) -> str:
        return ""

    for i in range(19):
        if i % 2:
            router.add(rf"^/section{i}/(?P<slug>[\w-]+)$", target)
        else:
            router.add(rf"^/page{i}$", target)
    router.add(r"^/user/(?P<user_id>\d+)$", target)
    return router


def load(target: str):
    """An app from ``path.py:app``, answering into a CountingConnection."""
    path, _, attr = target.partition(":")
    app = load_app(f"{REPO / path}:{attr}")
    app.msg_conn = CountingConnection()
    return app


def sync_cases() -> list[tuple[str, Callable[[], object]]]:
    router = twenty_routes()
    message = parse(VERIFIED_GET)
    text = Response(b"Hello, World!", content_type="text/plain; charset=utf-8")
    payload = {"message": "Hello, World!"}
    hello, bench = load(HELLO_APP), load(BENCH_APP)
    brubeck_msg = request_bytes(b"/brubeck", 7)
    text_msg, json_msg = request_bytes(b"/text", 7), request_bytes(b"/json", 7)
    user_msg, deco_msg = request_bytes(b"/user/42", 7), request_bytes(b"/deco/five", 7)
    # a new id each call, as from many users: nothing keyed by path can skip the routing
    new_ids = itertools.cycle([request_bytes(b"/user/%d" % i, 7) for i in range(10_000)])
    page = Response({"items": [{"id": n, "name": f"item {n}"} for n in range(80)]})
    tagged = with_etag("GET", page)
    revalidating = {b"if-none-match": dict(tagged.headers)["ETag"].encode()}
    gzipper = compressor({"compress_response": True})
    assert gzipper is not None
    gzip_client = SimpleNamespace(raw_headers={b"accept-encoding": b"gzip, deflate, br"})
    return [
        ("parse: verified GET (MONGREL2.md §A2)", lambda: parse(VERIFIED_GET)),
        ("Request(): build + .path", lambda: Request(message).path),
        ("Router.match: 1st of 20", lambda: router.match("GET", "/page0")),
        ("Router.match: 20th of 20, path param", lambda: router.match("GET", "/user/42")),
        ("Router.match: miss (404) of 20", lambda: router.match("GET", "/nothing/here")),
        ("Response.encode: text, prebuilt", text.encode),
        (
            "Response(): build + encode text",
            lambda: Response(b"Hello, World!", content_type="text/plain").encode(),
        ),
        ("Response(): build + encode JSON dict", lambda: Response(payload).encode()),
        ("handle_message: hello /brubeck (sync)", lambda: hello.handle_message(brubeck_msg)),
        ("handle_message: hello /deco/<name> (fn)", lambda: hello.handle_message(deco_msg)),
        ("handle_message: bench /text (sync)", lambda: bench.handle_message(text_msg)),
        ("handle_message: bench /json (sync)", lambda: bench.handle_message(json_msg)),
        ("handle_message: bench /user/<id> (sync)", lambda: bench.handle_message(user_msg)),
        (
            "handle_message: bench /user/<new id> (sync)",
            lambda: bench.handle_message(next(new_ids)),
        ),
        # The opt-in response features (docs/http.md), on a 2 KB JSON answer.
        ("etag setting: tag a 2 KB body", lambda: with_etag("GET", page)),
        ("conditional GET: 304 for If-None-Match", lambda: answer(revalidating, "GET", tagged)),
        ("gzip (level 6): a 2 KB JSON body", lambda: gzipper(gzip_client, page)),
    ]


def async_cases() -> list[tuple[str, str, bytes]]:
    """Handlers that await: timed with the task they need, until their reply is sent."""
    return [
        ("handle_message: hello /user/<id> (async)", HELLO_APP, request_bytes(b"/user/42", 7)),
        ("handle_message: bench /async/json (async)", BENCH_APP, request_bytes(b"/async/json", 7)),
        ("handle_message: bench /await/json (task)", BENCH_APP, request_bytes(b"/await/json", 7)),
    ]


def time_sync(func: Callable[[], object], number: int, repeat: int) -> list[float]:
    return [t / number * 1e6 for t in timeit.Timer(func).repeat(repeat, number)]


def time_async(target: str, raw: bytes, number: int, repeat: int, batch: int = 100) -> list[float]:
    """µs per message for ``number`` messages handled and answered inside an event loop.

    Messages go in batches of ``batch`` (as the receive loop takes them from ZeroMQ), each
    from its own connection; a batch is done when every reply was sent.
    """
    app = load(target)
    conn = app.msg_conn
    batch = min(batch, number)
    messages = [raw.replace(b" 7 /", b" %d /" % (100 + i), 1) for i in range(batch)]
    rounds = max(1, number // batch)

    async def timing() -> float:
        handle = app.handle_message
        start = time.perf_counter()
        for _ in range(rounds):
            expected = conn.sent + batch
            for message in messages:
                handle(message)
            while conn.sent < expected:
                await asyncio.sleep(0)
        return (time.perf_counter() - start) / (rounds * batch) * 1e6

    async def run() -> list[float]:
        await timing()  # warm up
        return [await timing() for _ in range(repeat)]

    return asyncio.run(run())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--number", type=int, default=5_000, help="calls per timing (5000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings per function (5)")
    parser.add_argument("--filter", default="", help="only names containing this text")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if min(args.number, args.repeat) < 1:
        parser.error("--number and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    print(
        f"# µs per call, min and median of {args.repeat} x {args.number} calls; "
        f"python {platform.python_version()}"
    )
    print(f"{'function':<48} {'min µs':>8} {'median µs':>10}")

    def report(name: str, timings: list[float]) -> None:
        best, mid = min(timings), statistics.median(timings)
        results[name] = {"min_us": round(best, 4), "median_us": round(mid, 4)}
        print(f"{name:<48} {best:>8.3f} {mid:>10.3f}", flush=True)

    for name, func in sync_cases():
        if args.filter in name:
            report(name, time_sync(func, args.number, args.repeat))
    for name, target, raw in async_cases():
        if args.filter in name:
            report(name, time_async(target, raw, args.number, args.repeat))
    if args.json:
        meta = {"number": args.number, "repeat": args.repeat, "python": platform.python_version()}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
