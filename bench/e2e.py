"""End-to-end benchmark: wrk -> Mongrel2 -> handler, Brubeck apps versus a framework-free handler.

One run covers every case (text, JSON, path parameter; sync and async handlers; see
``benchlib.CASES``) at each connection count, with Mongrel2's access log on and/or off. For
each access-log mode three stacks run side by side, each a Mongrel2 on free loopback ports with
one handler: bench/bare_handler.py, examples/hello and bench/apps/hello_bench.py. wrk then loads
the bare stack and the Brubeck stack alternately, case by case, so each ratio compares runs
taken moments apart. The bare handler answers every case path with bytes as long as Brubeck's.

    python bench/e2e.py --duration 10 --access-log both --repeat 3 --json out.json

On a shared or virtual machine single runs are noisy; use --repeat 3 (median) for decisions.
With --pin each handler runs on a CPU of its own and wrk and Mongrel2 on the others: the ratio
then says whether the handler keeps up with Mongrel2, not how much of a shared CPU it takes.
Only 127.0.0.1 is used. Every child is stopped by pid when the run ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

from benchlib import (
    APP_CMD,
    BARE_CMD,
    HELLO_APP,
    Case,
    add_json_option,
    add_wrk_options,
    check_wrk_options,
    cpu_seconds,
    handler_argv,
    parse_cases,
    script_parser,
    start,
    stop,
    stopped_by,
    stops_on_sigterm,
    tail,
    write_json,
)

from brubeck.mongrel2 import Mongrel2Config, Mongrel2Process

DEFAULT_CASES = "hello-text,hello-user,json,param,param-varied,async-json"
VARIED_SCRIPT = Path(__file__).resolve().parent / "varied_path.lua"
HANDLER_READY_TIMEOUT = 15.0
#: The issue's targets: rate ratio for every case, p99 ratio at 50 connections.
TARGET_RATIO = 0.85
TARGET_P99_RATIO = 2.0

# NOTE: wrk, Mongrel2 and the handler share this machine's cores. Mongrel2 is single-threaded and
# usually the first bottleneck; absolute numbers depend on the core count, so compare the ratio.


@dataclass
class Result:
    case: str
    handler: str
    access_log: bool
    connections: int
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int
    non_2xx: int
    samples_rps: list[float] = field(default_factory=list)
    #: CPU time (user + system, all threads) per answered request during the measured run
    handler_cpu_us: float = 0.0
    #: the same for the handler's main thread alone: the Python side, without ZeroMQ's I/O thread
    handler_main_cpu_us: float = 0.0
    mongrel2_cpu_us: float = 0.0


class BenchError(RuntimeError):
    pass


class Stack:
    """A Mongrel2 on free ports and one handler process behind it, for a whole access-log mode."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        access_log: bool,
        run_dir: Path,
        cpus: set[int] | None = None,
    ) -> None:
        self.name = name
        #: the handler's CPUs (``--pin``); None: any
        self.cpus = cpus
        self.config = Mongrel2Config.on_free_ports(access_log=access_log)
        self.argv = [
            a.replace("{pull}", self.config.send_spec).replace("{pub}", self.config.recv_spec)
            for a in argv
        ]
        self.mongrel2 = Mongrel2Process(self.config, run_dir / "mongrel2")
        self.log = run_dir / "handler.log"
        self.handler: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.mongrel2.url

    def start(self, probe_path: str) -> None:
        run_dir = self.log.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        self.mongrel2.start()
        self.handler = start(self.argv, self.log, cpus=self.cpus)
        wait_for_handler(self.url + probe_path, self.handler, self.log)

    def pids(self) -> tuple[int, int]:
        """The handler's and Mongrel2's process ids (both running)."""
        self.check_alive()
        assert self.handler is not None and self.mongrel2.pid is not None
        return self.handler.pid, self.mongrel2.pid

    def check_alive(self) -> None:
        if self.handler is None or self.handler.poll() is not None:
            raise BenchError(f"the {self.name} handler died during the run:\n{tail(self.log)}")
        if not self.mongrel2.running:
            raise BenchError(f"the {self.name} Mongrel2 died:\n{tail(self.mongrel2.stdout_log)}")

    def stop(self) -> None:
        try:
            stop(self.handler)
        finally:
            self.mongrel2.stop()


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def wait_for_handler(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Block until one request goes through, so that wrk never measures the handler's startup."""
    deadline = time.monotonic() + HANDLER_READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"handler exited with code {proc.returncode}:\n{tail(log)}")
        try:
            if fetch(url)[0] == 200:
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    raise BenchError(f"no 200 from {url} within {HANDLER_READY_TIMEOUT}s:\n{tail(log)}")


def check_same_answers(case: Case, bare: Stack, app: Stack) -> bool:
    """Warn when the baseline's answer differs from Brubeck's: the comparison would be unfair."""
    theirs, ours = fetch(bare.url + case.at()), fetch(app.url + case.at())
    if theirs != ours:
        print(
            f"WARNING: {case.name}: bare answers {theirs!r}, brubeck {ours!r}; "
            "the bare handler should answer this path alike",
            file=sys.stderr,
        )
    return theirs == ours


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise BenchError(f"cannot parse wrk latency {value!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk(output: str) -> dict[str, float | int]:
    def find(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if not match:
            raise BenchError(f"wrk output lacks {pattern!r}:\n{output}")
        return match[1]

    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests_per_sec": float(find(r"^Requests/sec:\s+([\d.]+)")),
        "p50_ms": _ms(find(r"^\s+50%\s+(\S+)")),
        "p99_ms": _ms(find(r"^\s+99%\s+(\S+)")),
        "requests": int(find(r"^\s+(\d+) requests in")),
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
    }


def run_wrk(url: str, connections: int, threads: int, seconds: int, prefix: str = "") -> str:
    """wrk's report; with ``prefix``, each request asks for ``prefix`` plus a new number."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if prefix:
        argv[1:1] = ["-s", str(VARIED_SCRIPT)]
        argv += ["--", prefix]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def load(
    stack: Stack, case: Case, handler: str, access_log: bool, conns: int, args: argparse.Namespace
) -> Result:
    """Warm up, then one measured wrk run against a stack."""
    url = stack.url + case.at()
    prefix = case.path.split("{n}")[0] if case.varied else ""
    if args.warmup:
        run_wrk(url, conns, args.threads, args.warmup, prefix)
    handler_pid, mongrel2_pid = stack.pids()
    counters = [(handler_pid, None), (handler_pid, handler_pid), (mongrel2_pid, None)]
    before = [cpu_seconds(*counter) for counter in counters]
    stats = parse_wrk(run_wrk(url, conns, args.threads, args.duration, prefix))
    # Read back in reverse order, so that the process's span encloses its main thread's.
    after = [cpu_seconds(*counter) for counter in reversed(counters)][::-1]
    used = [end - start for end, start in zip(after, before, strict=True)]
    stack.check_alive()
    per_request = [1e6 * seconds / max(1, int(stats["requests"])) for seconds in used]
    return Result(
        case.name,
        handler,
        access_log,
        conns,
        **stats,  # type: ignore[arg-type]
        handler_cpu_us=round(per_request[0], 1),
        handler_main_cpu_us=round(per_request[1], 1),
        mongrel2_cpu_us=round(per_request[2], 1),
    )


def median_run(runs: list[Result]) -> Result:
    """The run with the median rate (its own latencies), carrying every repetition's rate."""
    ordered = sorted(runs, key=lambda r: r.requests_per_sec)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.samples_rps = [r.requests_per_sec for r in runs]
    chosen.socket_errors = sum(r.socket_errors for r in runs)
    chosen.non_2xx = sum(r.non_2xx for r in runs)
    return chosen


def compare(results: list[Result]) -> list[dict[str, object]]:
    """Pair each bare result with Brubeck's for the same case, log mode and connections."""
    by_key = {(r.case, r.handler, r.access_log, r.connections): r for r in results}
    rows = []
    for r in results:
        app = by_key.get((r.case, "brubeck", r.access_log, r.connections))
        if r.handler != "bare" or app is None:
            continue
        ratio = app.requests_per_sec / r.requests_per_sec if r.requests_per_sec else 0.0
        # Repetition i ran the two back to back: their ratio is free of slower drift, and the
        # spread of these ratios is the run's noise.
        pairs = [a / b for a, b in zip(app.samples_rps, r.samples_rps, strict=False) if b]
        p99_ratio = app.p99_ms / r.p99_ms if r.p99_ms else 0.0
        misses = []
        if ratio < TARGET_RATIO:
            misses.append(f"rate<{TARGET_RATIO}")
        if r.connections == 50 and p99_ratio > TARGET_P99_RATIO:
            misses.append(f"p99>{TARGET_P99_RATIO:g}x")
        rows.append(
            {
                "case": r.case,
                "access_log": r.access_log,
                "connections": r.connections,
                "bare_rps": r.requests_per_sec,
                "brubeck_rps": app.requests_per_sec,
                "ratio": round(ratio, 3),
                "pair_ratios": [round(x, 3) for x in pairs],
                "bare_p99_ms": r.p99_ms,
                "brubeck_p99_ms": app.p99_ms,
                "p99_ratio": round(p99_ratio, 2),
                "bare_cpu_us": r.handler_cpu_us,
                "brubeck_cpu_us": app.handler_cpu_us,
                "bare_main_cpu_us": r.handler_main_cpu_us,
                "brubeck_main_cpu_us": app.handler_main_cpu_us,
                "mongrel2_cpu_us": app.mongrel2_cpu_us,
                "target": ", ".join(misses) or "ok",
            }
        )
    return rows


def print_table(rows: list[dict[str, object]], results: list[Result]) -> None:
    print(
        "| case | access log | conns | bare req/s | brubeck req/s | ratio | pair ratios "
        "| bare p99 ms | brubeck p99 ms | p99 ratio "
        "| CPU µs/req bare (main thread), brubeck (main thread), its mongrel2 "
        "| target |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        pairs = cast(list[float], row["pair_ratios"])
        spread = f"{min(pairs):.2f} to {max(pairs):.2f}" if pairs else "-"
        print(
            f"| {row['case']} | {'on' if row['access_log'] else 'off'} | {row['connections']} "
            f"| {row['bare_rps']:.0f} | {row['brubeck_rps']:.0f} | {row['ratio']:.2f} | {spread} "
            f"| {row['bare_p99_ms']:.2f} | {row['brubeck_p99_ms']:.2f} | {row['p99_ratio']:.2f} "
            f"| {row['bare_cpu_us']:.1f} ({row['bare_main_cpu_us']:.1f}), "
            f"{row['brubeck_cpu_us']:.1f} ({row['brubeck_main_cpu_us']:.1f}), "
            f"{row['mongrel2_cpu_us']:.1f} | {row['target']} |"
        )
    print(
        f"\nratio: brubeck req/s ÷ bare req/s (target ≥ {TARGET_RATIO}); p99 ratio: brubeck p99 ÷ "
        f"bare p99 (target ≤ {TARGET_P99_RATIO:g} at 50 connections); pair ratios: lowest and "
        "highest of the repetitions' ratios (each pair ran back to back); CPU µs/req: CPU time of "
        "the bare handler's process, of Brubeck's (in brackets: their main threads alone, "
        "without ZeroMQ's I/O thread), and of the Mongrel2 in front of Brubeck, per request of "
        "the median run"
    )
    for r in results:
        if r.socket_errors or r.non_2xx:
            print(
                f"WARNING: {r.case} {r.handler} (access_log={r.access_log}, c={r.connections}): "
                f"{r.socket_errors} socket errors, {r.non_2xx} non-2xx responses"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    add_wrk_options(parser, repeat="runs per configuration, median reported (1)")
    logs = parser.add_mutually_exclusive_group()
    logs.add_argument("--access-log", choices=["on", "off", "both"], default="both")
    logs.add_argument(
        "--no-access-log", dest="access_log", action="store_const", const="off",
        help="same as --access-log off",
    )  # fmt: skip
    parser.add_argument(
        "--cases", default=DEFAULT_CASES, help=f"comma-separated, or 'all' ({DEFAULT_CASES})"
    )
    parser.add_argument("--path", help="benchmark only this path of --app (a custom case)")
    parser.add_argument("--app", default=HELLO_APP, help=f"app for --path ({HELLO_APP})")
    parser.add_argument("--app-cmd", default=APP_CMD, help=f"Brubeck command ({APP_CMD!r})")
    parser.add_argument("--bare-cmd", default=BARE_CMD, help=f"baseline command ({BARE_CMD!r})")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="give each handler a CPU of its own (the last one); wrk and Mongrel2 get the others",
    )
    add_json_option(parser)
    args = parser.parse_args(argv)
    check_wrk_options(parser, args)
    args.handler_cpus = args.other_cpus = None
    if args.pin:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            parser.error(f"--pin needs 2 CPUs or more; this process may use {len(allowed)}")
        args.handler_cpus, args.other_cpus = {allowed[-1]}, set(allowed[:-1])
    if args.path is not None:
        if not args.path.startswith("/"):
            parser.error("--path must start with '/'")
        args.cases = [Case("custom", args.app, args.path, f"{args.app} {args.path}")]
    else:
        try:
            args.cases = parse_cases(args.cases)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def run_mode(access_log: bool, args: argparse.Namespace, tmp: Path) -> list[Result]:
    """Every case and connection count for one access-log mode, on long-lived stacks."""
    placeholders = {"pull": "{pull}", "pub": "{pub}"}
    cpus = args.handler_cpus
    bare_argv = handler_argv(args.bare_cmd, **placeholders)
    bare = Stack("bare", bare_argv, access_log, tmp / "bare", cpus)
    apps: dict[str, Stack] = {}
    for case in args.cases:
        if case.app not in apps:
            argv = handler_argv(args.app_cmd, app=case.app, **placeholders)
            apps[case.app] = Stack(case.app, argv, access_log, tmp / f"app{len(apps)}", cpus)
    results: list[Result] = []
    try:
        bare.start(args.cases[0].at())
        for app_target, stack in apps.items():
            stack.start(next(c.at() for c in args.cases if c.app == app_target))
        for case in args.cases:
            check_same_answers(case, bare, apps[case.app])
        for case in args.cases:
            stacks = [("bare", bare), ("brubeck", apps[case.app])]
            for conns in args.connections:
                runs: dict[str, list[Result]] = {"bare": [], "brubeck": []}
                for i in range(args.repeat):
                    # back to back, in ABBA order over repeats, so drift hits both alike
                    for name, stack in stacks if i % 2 == 0 else stacks[::-1]:
                        run = load(stack, case, name, access_log, conns, args)
                        print(
                            f"  {case.name:12} {name:8} log={'on' if access_log else 'off':3} "
                            f"c={conns:<4} {run.requests_per_sec:9.0f} req/s "
                            f"p50 {run.p50_ms:.2f} ms p99 {run.p99_ms:.2f} ms",
                            file=sys.stderr,
                        )
                        runs[name].append(run)
                results += [median_run(r) for r in runs.values()]
    finally:
        for stack in [bare, *apps.values()]:
            stack.stop()
    return results


@stops_on_sigterm
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.access_log]
    runs = len(modes) * len(args.cases) * len(args.connections) * 2 * args.repeat
    if args.pin:
        sharing = (
            f"handlers pinned to CPU {min(args.handler_cpus)}, wrk and Mongrel2 to CPUs "
            f"{','.join(map(str, sorted(args.other_cpus)))}"
        )
    else:
        sharing = f"{os.cpu_count()} CPUs shared by wrk, Mongrel2 and the handler"
    print(
        f"{runs} runs of {args.warmup}+{args.duration}s, about "
        f"{runs * (args.warmup + args.duration) + 5 * len(modes)}s; {sharing}",
        file=sys.stderr,
    )
    results: list[Result] = []
    own_cpus = os.sched_getaffinity(0)
    try:
        if args.pin:
            os.sched_setaffinity(0, args.other_cpus)  # wrk and each Mongrel2 inherit it
        for access_log in modes:
            with tempfile.TemporaryDirectory(prefix="brubeck-bench-") as tmp:
                results += run_mode(access_log, args, Path(tmp))
    except (KeyboardInterrupt, BenchError, RuntimeError, OSError) as exc:
        return stopped_by(exc)
    finally:
        os.sched_setaffinity(0, own_cpus)
    rows = compare(results)
    print_table(rows, results)
    if args.json:
        meta = {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "wrk_threads": args.threads,
            "repeat": args.repeat,
            "cases": [asdict(c) for c in args.cases],
            "app_cmd": args.app_cmd,
            "bare_cmd": args.bare_cmd,
            "pinned": args.pin,
        }
        write_json(args.json, meta, results=[asdict(r) for r in results], ratios=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
