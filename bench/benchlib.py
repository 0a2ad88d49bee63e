"""What the benchmark scripts share: the cases, the handler commands, child processes, and the
options and JSON output they have in common.

Every child is started in its own session (a terminal's Ctrl-C reaches only the script, which
then stops its children) and stopped by pid: SIGTERM, then SIGKILL if it lingers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# re-exported: the scripts pick their ports with it
from brubeck.mongrel2 import free_port as free_port  # noqa: E402

HELLO_APP = "examples/hello/app.py:app"
BENCH_APP = "bench/apps/hello_bench.py:app"

# Placeholders: {python} (this interpreter), {app} (an app target such as HELLO_APP), {pull}
# (where the handler's PULL socket connects: Mongrel2's send_spec) and {pub} (where its PUB
# socket connects: Mongrel2's recv_spec). Commands run from the repository root.
APP_CMD = "{python} -m brubeck --log-level warning run {app} --pull {pull} --pub {pub}"
BARE_CMD = "{python} bench/bare_handler.py {pull} {pub}"

STOP_TIMEOUT = 3.0


@dataclass(frozen=True)
class Case:
    """One request path of one Brubeck app; the bare handler answers the same path alike.

    A ``{n}`` in the path is replaced by a number that changes with every request, so that no
    cache keyed by path can answer for the router.
    """

    name: str
    app: str
    path: str
    what: str

    @property
    def varied(self) -> bool:
        return "{n}" in self.path

    def at(self, n: int = 42) -> str:
        """The path of the ``n``-th request."""
        return self.path.replace("{n}", str(n))


CASES = {
    case.name: case
    for case in [
        Case("hello-text", HELLO_APP, "/brubeck", "examples/hello page, sync"),
        Case("hello-user", HELLO_APP, "/user/42", "examples/hello JSON + path param, async"),
        Case("text", BENCH_APP, "/text", "text, sync"),
        Case("json", BENCH_APP, "/json", "JSON, sync"),
        Case("param", BENCH_APP, "/user/42", "JSON + path param, sync"),
        Case("param-varied", BENCH_APP, "/user/{n}", "JSON + path param, new id each time, sync"),
        Case("async-text", BENCH_APP, "/async/text", "text, async"),
        Case("async-json", BENCH_APP, "/async/json", "JSON, async"),
        Case("async-param", BENCH_APP, "/async/user/42", "JSON + path param, async"),
        Case("await-json", BENCH_APP, "/await/json", "JSON, async def that awaits: a task"),
    ]
}


def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser: its module docstring, line breaks kept, is the ``--help`` text."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json FILE``; each script adds it after its own options, so it ends the usage line."""
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")


def add_wrk_options(parser: argparse.ArgumentParser, repeat: str) -> None:
    """The wrk options every wrk-driven benchmark takes, with the same defaults, then
    ``--repeat`` (its help: ``repeat``), which ``check_wrk_options`` checks with them."""
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up (1)")
    parser.add_argument(
        "--connections",
        type=lambda s: [int(c) for c in s.split(",") if c],
        default=[50, 100],
        help="comma-separated wrk connection counts (50,100)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--repeat", type=int, default=1, help=repeat)


def check_wrk_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error, before any child starts, when the wrk options cannot run."""
    if min(args.duration, args.threads, args.repeat) < 1 or args.warmup < 0:
        parser.error("--duration, --threads and --repeat must be >= 1, --warmup >= 0")
    if not args.connections or min(args.connections) < args.threads:
        parser.error("--connections must be a list of counts >= --threads")


def parse_cases(text: str) -> list[Case]:
    """``a,b,c`` or ``all`` to Case objects; raises ValueError naming the known cases."""
    if text == "all":
        return list(CASES.values())
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in CASES]
    if unknown or not names:
        raise ValueError(f"unknown case(s) {unknown}; known: {', '.join(CASES)} or 'all'")
    return [CASES[name] for name in names]


def handler_argv(template: str, pull: str, pub: str, app: str = HELLO_APP) -> list[str]:
    return shlex.split(
        template.format(
            python=shlex.quote(sys.executable),
            app=shlex.quote(app),
            pull=shlex.quote(pull),
            pub=shlex.quote(pub),
        )
    )


def start(
    argv: list[str],
    log: Path | None = None,
    cwd: Path = REPO,
    cpus: set[int] | None = None,
    env_extra: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session, with this repository importable; only on ``cpus``."""
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = STOP_TIMEOUT) -> None:
    """Stop one child by its pid: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stops_on_sigterm(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a script's main: while it runs, SIGTERM unwinds like Ctrl-C (so ``finally``
    blocks stop the children); the previous handler is put back when it returns."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return main(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from VmRSS in /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User plus system CPU time a process has used, from /proc/PID/stat; with ``thread``,
    that one thread's (the main thread's id is the process id)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def stopped_by(exc: BaseException) -> int:
    """Say on stderr why a run ended early (its children are stopped by then); the exit status:
    130 after Ctrl-C or SIGTERM, as a shell reports an interrupt, else 1."""
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted; children stopped", file=sys.stderr)
        return 130
    print(f"error: {exc}", file=sys.stderr)
    return 1


def write_json(path: Path, meta: dict[str, Any], **sections: Any) -> None:
    """Save ``{"meta": {**meta, **machine()}, **sections}``: a figure means little without the
    machine it was measured on."""
    payload = {"meta": {**meta, **machine()}, **sections}
    path.write_text(json.dumps(payload, indent=2) + "\n")


def machine() -> dict[str, object]:
    """What a result depends on: cores, Python, Mongrel2 and wrk versions, current load."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "mongrel2": _version(["dpkg-query", "-W", "-f=${Version}", "mongrel2-core"]),
        "wrk": _version(["wrk", "-v"]).split(" [")[0],
        "loadavg": [round(x, 2) for x in load],
    }
