"""Brubeck against peer frameworks: aiohttp and Starlette+uvicorn hello world, in one run.

The peers are installed by this script in their own virtual environment, bench/.venv-peers
(created on first use; --setup-only just creates it), so they never mix with Brubeck's. Each
runs as one process on a free 127.0.0.1 port, access log off, with the asyncio event loop by
default (Brubeck's too) or uvloop (--peer-loop uvloop). Brubeck runs bench/apps/hello_bench.py
behind its own Mongrel2 (access log off by default, like the peers); the framework-free
handler behind Mongrel2 is shown for reference. All answer GET /text with "Hello, World!".

wrk loads each server in turn, rotating the order on each repeat, so the ratios compare runs
taken moments apart on the same machine.

    python bench/peers.py --duration 10 --repeat 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchlib import (
    APP_CMD,
    BARE_CMD,
    BENCH_APP,
    CASES,
    REPO,
    add_json_option,
    add_wrk_options,
    check_wrk_options,
    free_port,
    handler_argv,
    script_parser,
    start,
    stop,
    stopped_by,
    stops_on_sigterm,
    tail,
    write_json,
)
from e2e import BenchError, Result, Stack, load, median_run, wait_for_handler

VENV = REPO / "bench" / ".venv-peers"
PACKAGES = ["aiohttp", "starlette", "uvicorn", "httptools", "uvloop"]
APPS = REPO / "bench" / "peers_apps"
CASE = CASES["text"]
TARGET = 1.5  # Brubeck's rate over each peer's


def ensure_venv(venv: Path = VENV) -> Path:
    """The peers' interpreter, creating the virtual environment and installing them if needed."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import " + ", ".join(PACKAGES)]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with {' '.join(PACKAGES)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PACKAGES],
        check=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    return python


class Peer:
    """A peer framework's server process, as e2e.load expects a stack to look."""

    def __init__(self, name: str, argv: list[str], run_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log = run_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, probe_path: str) -> None:
        self.proc = start(self.argv, self.log, cwd=APPS)
        wait_for_handler(self.url + probe_path, self.proc, self.log)

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"{self.name} died during the run:\n{tail(self.log)}")

    def stop(self) -> None:
        stop(self.proc)


def servers(args: argparse.Namespace, python: Path, tmp: Path) -> list[tuple[str, object]]:
    placeholders = {"pull": "{pull}", "pub": "{pub}"}
    found: list[tuple[str, object]] = [
        (
            "brubeck",
            Stack(
                "brubeck",
                handler_argv(APP_CMD, app=BENCH_APP, **placeholders),
                args.access_log == "on",
                tmp / "brubeck",
            ),
        ),
        (
            "aiohttp",
            Peer("aiohttp", [str(python), "aiohttp_hello.py", "{port}", args.peer_loop], tmp),
        ),
        (
            "starlette",
            Peer("starlette", [str(python), "starlette_hello.py", "{port}", args.peer_loop], tmp),
        ),
    ]
    if not args.no_bare:
        bare = Stack(
            "bare", handler_argv(BARE_CMD, **placeholders), args.access_log == "on", tmp / "bare"
        )
        found.append(("bare", bare))
    return found


def report(results: list[Result], args: argparse.Namespace) -> list[dict[str, object]]:
    print(
        "| server | conns | req/s | p50 ms | p99 ms | brubeck ÷ server |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    rows = []
    brubeck = {r.connections: r for r in results if r.handler == "brubeck"}
    for r in results:
        ours = brubeck[r.connections].requests_per_sec
        ratio = ours / r.requests_per_sec if r.requests_per_sec else 0.0
        print(
            f"| {r.handler} | {r.connections} | {r.requests_per_sec:.0f} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} | {ratio:.2f} |"
        )
        rows.append({"server": r.handler, "connections": r.connections, "ratio": round(ratio, 3)})
    log = "on" if args.access_log == "on" else "off"
    print(
        f"\nbrubeck = bench/apps/hello_bench.py behind Mongrel2 (access log {log}); peers on "
        f"{args.peer_loop}. Target: brubeck ≥ {TARGET}x aiohttp and starlette."
    )
    for r in results:
        if r.socket_errors or r.non_2xx:
            print(
                f"WARNING: {r.handler} c={r.connections}: {r.socket_errors} socket errors, "
                f"{r.non_2xx} non-2xx responses"
            )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    add_wrk_options(parser, repeat="runs per server, median kept (1)")
    parser.add_argument("--access-log", choices=["on", "off"], default="off", help="Mongrel2's")
    parser.add_argument("--peer-loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare reference")
    parser.add_argument("--setup-only", action="store_true", help="create the venv, then exit")
    add_json_option(parser)
    args = parser.parse_args(argv)
    check_wrk_options(parser, args)
    return args


@stops_on_sigterm
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        python = ensure_venv()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"error: could not set up {VENV}: {exc}", file=sys.stderr)
        return 1
    if args.setup_only:
        print(python)
        return 0
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="brubeck-peers-") as tmp:
            found = servers(args, python, Path(tmp))
            try:
                for _, server in found:
                    server.start(CASE.at())  # type: ignore[attr-defined]
                for conns in args.connections:
                    runs: dict[str, list[Result]] = {name: [] for name, _ in found}
                    for i in range(args.repeat):
                        shift = i % len(found)
                        for name, server in found[shift:] + found[:shift]:
                            run = load(server, CASE, name, args.access_log == "on", conns, args)  # type: ignore[arg-type]
                            print(
                                f"  {name:10} c={conns:<4} {run.requests_per_sec:9.0f} req/s "
                                f"p50 {run.p50_ms:.2f} ms p99 {run.p99_ms:.2f} ms",
                                file=sys.stderr,
                            )
                            runs[name].append(run)
                    results += [median_run(r) for r in runs.values()]
            finally:
                for _, server in found:
                    server.stop()  # type: ignore[attr-defined]
    except (KeyboardInterrupt, BenchError, RuntimeError, OSError) as exc:
        return stopped_by(exc)
    rows = report(results, args)
    if args.json:
        meta = {
            "duration_s": args.duration,
            "repeat": args.repeat,
            "access_log": args.access_log,
            "peer_loop": args.peer_loop,
        }
        write_json(args.json, meta, results=[asdict(r) for r in results], ratios=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
