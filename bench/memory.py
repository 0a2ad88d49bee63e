"""Memory: does a handler process's RSS stay flat as requests go by?

The handler runs under bench/capacity.py's ZeroMQ load (no Mongrel2). Requests cycle through
``--paths``: by default a sync handler, and an async one with a new path parameter each time.
Connection ids change every ``--per-connection`` requests, each old connection then closed by a
disconnect notice, as clients come and go. VmRSS (from /proc/PID/status) is read after
``--baseline`` requests and at ``--samples`` points up to ``--requests``; the growth is the last
reading against the first. A leak per request or per connection shows as steady growth; the
target is at most 10%.

    python bench/memory.py                       # 1,000,000 requests: a minute or two
    python bench/memory.py --requests 100000 --handler bare
"""

from __future__ import annotations

import argparse
import sys
import time

from benchlib import (
    APP_CMD,
    BARE_CMD,
    HELLO_APP,
    add_json_option,
    handler_argv,
    rss_kib,
    script_parser,
    start,
    stop,
    stopped_by,
    stops_on_sigterm,
    write_json,
)
from capacity import Driver, HandlerGone, disconnect_bytes, request_bytes

TARGET_GROWTH_PCT = 10.0
SETTLE_SECONDS = 0.2  # lets the handler finish what it does after its last reply


def checkpoints(baseline: int, total: int, samples: int) -> list[int]:
    """Request counts at which RSS is read: the baseline, then evenly up to the total."""
    step = (total - baseline) / samples
    points = [baseline + round(step * k) for k in range(1, samples + 1)]
    return [baseline, *sorted(set(points) - {baseline})]


def run(args: argparse.Namespace) -> list[tuple[int, int]]:
    """Drive the handler; returns (requests answered, RSS KiB) at each checkpoint."""
    paths = [p.encode() for p in args.paths]
    lag = 2 * args.window  # a connection is closed only once its requests were answered
    per = args.per_connection

    def make(i: int) -> bytes:
        path = paths[i % len(paths)]
        if b"{n}" in path:
            path = path.replace(b"{n}", b"%d" % i)
        return request_bytes(path, 1000 + i // per)

    def extra(i: int) -> bytes | None:
        done = i - lag
        if done >= 0 and (done + 1) % per == 0:
            return disconnect_bytes(1000 + done // per)
        return None

    template = BARE_CMD if args.handler == "bare" else APP_CMD
    readings: list[tuple[int, int]] = []
    with Driver(args.window) as driver:
        proc = start(handler_argv(template, driver.pull_addr, driver.pub_addr, app=args.app))
        try:
            driver.wait_ready(make(0), 30, lambda: proc.poll() is None)
            answered = 0
            started = time.monotonic()
            for point in checkpoints(args.baseline, args.requests, args.samples):
                offset = answered

                def shifted(i: int, offset: int = offset) -> bytes:
                    return make(i + offset)

                def shifted_extra(i: int, offset: int = offset) -> bytes | None:
                    return extra(i + offset)

                seconds, replies = driver.run(point - answered, shifted, shifted_extra)
                answered += replies
                if answered < point:
                    raise HandlerGone(f"only {answered} of {point} requests were answered")
                time.sleep(SETTLE_SECONDS)
                readings.append((answered, rss_kib(proc.pid)))
                print(
                    f"  {answered:>9} requests  RSS {readings[-1][1] / 1024:7.1f} MiB  "
                    f"{replies / seconds:8.0f} msg/s  {time.monotonic() - started:6.1f}s",
                    file=sys.stderr,
                )
        finally:
            stop(proc)
    return readings


def report(readings: list[tuple[int, int]], args: argparse.Namespace) -> float:
    base = readings[0][1]
    print(f"| requests | RSS MiB | vs {readings[0][0]:,} requests |")
    print("|---:|---:|---:|")
    for count, rss in readings:
        print(f"| {count:,} | {rss / 1024:.1f} | {100 * (rss - base) / base:+.1f}% |")
    growth = 100 * (readings[-1][1] - base) / base
    verdict = "ok" if growth <= TARGET_GROWTH_PCT else "ABOVE TARGET"
    print(
        f"\n{args.handler} ({args.app if args.handler == 'brubeck' else 'bare_handler.py'}, "
        f"{','.join(args.paths)}): RSS {base / 1024:.1f} MiB after {readings[0][0]:,} requests, "
        f"{readings[-1][1] / 1024:.1f} MiB after {readings[-1][0]:,}: {growth:+.1f}% "
        f"(target ≤ {TARGET_GROWTH_PCT:g}%: {verdict})"
    )
    return growth


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000, help="in all (1000000)")
    parser.add_argument("--baseline", type=int, default=10_000, help="first reading (10000)")
    parser.add_argument("--samples", type=int, default=5, help="readings after the first (5)")
    parser.add_argument("--handler", choices=["brubeck", "bare"], default="brubeck")
    parser.add_argument("--app", default=HELLO_APP, help=f"Brubeck app ({HELLO_APP})")
    parser.add_argument(
        "--paths",
        type=lambda s: [p for p in s.split(",") if p],
        default=["/brubeck", "/user/{n}"],
        help="comma-separated request paths, used in turn; {n}: the request's number "
        "(/brubeck,/user/{n})",
    )
    parser.add_argument("--per-connection", type=int, default=100, help="requests per conn (100)")
    parser.add_argument("--window", type=int, default=1000, help="requests outstanding (1000)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if min(args.baseline, args.samples, args.per_connection, args.window) < 1:
        parser.error("--baseline, --samples, --per-connection and --window must be >= 1")
    if args.requests <= args.baseline:
        parser.error("--requests must be larger than --baseline")
    if not args.paths or not all(p.startswith("/") for p in args.paths):
        parser.error("--paths must be paths starting with '/'")
    return args


@stops_on_sigterm
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        readings = run(args)
    except (KeyboardInterrupt, HandlerGone) as exc:
        return stopped_by(exc)
    growth = report(readings, args)
    if args.json:
        write_json(
            args.json,
            {**vars(args), "json": str(args.json)},
            readings=[{"requests": n, "rss_kib": rss} for n, rss in readings],
            growth_pct=round(growth, 2),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
