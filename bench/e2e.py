"""End-to-end benchmark: wrk -> Mongrel2 -> handler, Brubeck app versus a framework-free handler.

Each configuration (access log on/off x connection count x handler) gets a fresh Mongrel2 on free
ports in a temporary directory and a fresh handler process. Results include the Brubeck/bare
ratio, which is more meaningful than the absolute rates.

    python bench/e2e.py --duration 10 --connections 50,100 --access-log both --json out.json

On a shared or virtual machine single runs are noisy; use --repeat 3 (median) for decisions.

Only 127.0.0.1 is used. Every child is stopped by pid when the run ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from brubeck.mongrel2 import Mongrel2Config, Mongrel2Process  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The Brubeck app under test. ADJUST THIS when the CLI changes (or pass --app-cmd).
# Placeholders: {python} (this interpreter), {pull} (Mongrel2's send_spec, where the handler's
# PULL socket connects) and {pub} (Mongrel2's recv_spec, where the handler's PUB socket connects).
# The command runs from the repository root.
APP_CMD = (
    "{python} -m brubeck --log-level warning"
    " run examples/hello/app.py:app --pull {pull} --pub {pub}"
)
# ---------------------------------------------------------------------------------------------
BARE_CMD = "{python} bench/bare_handler.py {pull} {pub}"

HANDLER_READY_TIMEOUT = 15.0
HANDLER_STOP_TIMEOUT = 3.0

# NOTE: wrk, Mongrel2 and the handler share this machine's cores. Mongrel2 is single-threaded and
# usually the first bottleneck; absolute numbers depend on the core count, so compare the ratio.


@dataclass
class Result:
    handler: str
    access_log: bool
    connections: int
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int
    non_2xx: int
    samples_rps: list[float]


class BenchError(RuntimeError):
    pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_handler(template: str, config: Mongrel2Config, log: Path) -> subprocess.Popen[bytes]:
    argv = shlex.split(
        template.format(
            python=shlex.quote(sys.executable),
            pull=shlex.quote(config.send_spec),
            pub=shlex.quote(config.recv_spec),
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with open(log, "ab") as out:
        # Own session: a terminal Ctrl-C reaches only this script, which then stops the child.
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_handler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(HANDLER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_handler(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Block until one request goes through, so that wrk never measures the handler's startup."""
    deadline = time.monotonic() + HANDLER_READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"handler exited with code {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    resp.read()
                    return
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    raise BenchError(f"no 200 from {url} within {HANDLER_READY_TIMEOUT}s:\n{tail(log)}")


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


def run_wrk(url: str, connections: int, threads: int, seconds: int) -> str:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def measure(
    name: str, template: str, access_log: bool, connections: int, args: argparse.Namespace
) -> Result:
    with tempfile.TemporaryDirectory(prefix="brubeck-bench-") as tmp:
        config = Mongrel2Config.on_free_ports(access_log=access_log)
        m2 = Mongrel2Process(config, Path(tmp) / "mongrel2")
        log = Path(tmp) / "handler.log"
        handler = None
        try:
            m2.start()
            handler = start_handler(template, config, log)
            url = m2.url + args.path
            wait_for_handler(url, handler, log)
            if args.warmup:
                run_wrk(url, connections, args.threads, args.warmup)
            stats = parse_wrk(run_wrk(url, connections, args.threads, args.duration))
            if handler.poll() is not None:
                raise BenchError(f"{name} handler died during the run:\n{tail(log)}")
        finally:
            stop_handler(handler)
            m2.stop()
    return Result(name, access_log, connections, **stats, samples_rps=[])  # type: ignore[arg-type]


def median_run(runs: list[Result]) -> Result:
    """The run with the median rate (its own latencies), carrying every repetition's rate."""
    ordered = sorted(runs, key=lambda r: r.requests_per_sec)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.samples_rps = [r.requests_per_sec for r in runs]
    chosen.socket_errors = sum(r.socket_errors for r in runs)
    chosen.non_2xx = sum(r.non_2xx for r in runs)
    return chosen


def print_table(results: list[Result]) -> list[dict[str, object]]:
    rows = []
    header = (
        f"{'access_log':>10} {'conns':>5} | {'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'brubeck req/s':>13} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    by_key = {(r.handler, r.access_log, r.connections): r for r in results}
    for r in results:
        if r.handler != "bare":
            continue
        app = by_key.get(("brubeck", r.access_log, r.connections))
        if app is None:
            continue
        ratio = app.requests_per_sec / r.requests_per_sec if r.requests_per_sec else 0.0
        print(
            f"{'on' if r.access_log else 'off':>10} {r.connections:>5} | "
            f"{r.requests_per_sec:>10.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} | "
            f"{app.requests_per_sec:>13.0f} {app.p50_ms:>7.2f} {app.p99_ms:>7.2f} | {ratio:>5.2f}"
        )
        rows.append(
            {"access_log": r.access_log, "connections": r.connections, "ratio": round(ratio, 4)}
        )
    bad = [r for r in results if r.socket_errors or r.non_2xx]
    for r in bad:
        print(
            f"WARNING: {r.handler} (access_log={r.access_log}, c={r.connections}): "
            f"{r.socket_errors} socket errors, {r.non_2xx} non-2xx responses"
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up (1)")
    parser.add_argument(
        "--connections",
        type=lambda s: [int(c) for c in s.split(",") if c],
        default=[50, 100],
        help="comma-separated wrk connection counts (50,100)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per configuration, median reported (1)"
    )
    logs = parser.add_mutually_exclusive_group()
    logs.add_argument("--access-log", choices=["on", "off", "both"], default="on")
    logs.add_argument(
        "--no-access-log", dest="access_log", action="store_const", const="off",
        help="same as --access-log off",
    )  # fmt: skip
    parser.add_argument("--path", default="/brubeck", help="request path (/brubeck)")
    parser.add_argument("--app-cmd", default=APP_CMD, help=f"Brubeck app command ({APP_CMD!r})")
    parser.add_argument("--bare-cmd", default=BARE_CMD, help=f"baseline command ({BARE_CMD!r})")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if min(args.duration, args.threads, args.repeat) < 1 or args.warmup < 0:
        parser.error("--duration, --threads and --repeat must be >= 1, --warmup >= 0")
    if not args.connections or min(args.connections) < args.threads:
        parser.error("--connections must be a list of counts >= --threads")
    if not args.path.startswith("/"):
        parser.error("--path must start with '/'")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.access_log]
    handlers = [("bare", args.bare_cmd), ("brubeck", args.app_cmd)]
    runs = len(modes) * len(args.connections) * len(handlers) * args.repeat
    print(
        f"{runs} runs of {args.warmup}+{args.duration}s, about "
        f"{runs * (args.warmup + args.duration + 1)}s; {os.cpu_count()} CPUs shared by wrk, "
        "Mongrel2 and the handler",
        file=sys.stderr,
    )
    results: list[Result] = []
    try:
        for access_log in modes:
            for connections in args.connections:
                runs_by_handler: dict[str, list[Result]] = {name: [] for name, _ in handlers}
                for _ in range(args.repeat):
                    # bare and brubeck back to back, so the ratio compares like with like
                    for name, template in handlers:
                        run = measure(name, template, access_log, connections, args)
                        print(
                            f"  {name:8} access_log={'on' if access_log else 'off':3} "
                            f"c={connections:<4} {run.requests_per_sec:9.0f} req/s "
                            f"p50 {run.p50_ms:.2f} ms p99 {run.p99_ms:.2f} ms",
                            file=sys.stderr,
                        )
                        runs_by_handler[name].append(run)
                results += [median_run(runs) for runs in runs_by_handler.values()]
    except KeyboardInterrupt:
        print("interrupted; children stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ratios = print_table(results)
    if args.json:
        meta = {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "wrk_threads": args.threads,
            "repeat": args.repeat,
            "path": args.path,
            "app_cmd": args.app_cmd,
            "bare_cmd": args.bare_cmd,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
        payload = {"meta": meta, "results": [asdict(r) for r in results], "ratios": ratios}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
