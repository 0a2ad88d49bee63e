"""Smoke tests for bench/: the scripts import, parse their arguments and run tiny versions.

They keep the benchmarks from rotting as the framework changes; nothing here times anything.
The one test that needs Mongrel2 and wrk skips without them.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench(name: str) -> ModuleType:
    """A bench/ script as a module (bench/ is a directory of scripts, not a package).

    bench/ is on sys.path only while importing, so that its scripts shadow nothing else.
    """
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture
def isolated_imports():
    """Loading an app by path adds to sys.path and sys.modules: undo that after the test."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    apps = (str(BENCH / "apps"), str(BENCH.parent / "examples"))
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", "")).startswith(apps):
            del sys.modules[name]


def run_main(module: ModuleType, argv: list[str]) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert module.main(argv) == 0
    return out.getvalue()


def test_cases_parse():
    benchlib = bench("benchlib")
    assert [c.name for c in benchlib.parse_cases("text,param")] == ["text", "param"]
    assert len(benchlib.parse_cases("all")) == len(benchlib.CASES)
    with pytest.raises(ValueError, match="known"):
        benchlib.parse_cases("nope")


def test_varied_case_paths():
    case = bench("benchlib").CASES["param-varied"]
    assert case.varied and case.at(7) == "/user/7" and case.at() == "/user/42"
    assert not bench("benchlib").CASES["param"].varied


def test_handler_argv_fills_placeholders():
    benchlib = bench("benchlib")
    argv = benchlib.handler_argv(benchlib.APP_CMD, "tcp://a:1", "tcp://b:2", app="x.py:app")
    assert argv[0] == sys.executable
    assert argv[-5:] == ["x.py:app", "--pull", "tcp://a:1", "--pub", "tcp://b:2"]


def test_process_readings_of_self():
    benchlib = bench("benchlib")
    assert benchlib.rss_kib(os.getpid()) > 1000
    assert benchlib.cpu_seconds(os.getpid()) > 0
    # The main thread's id is the process id; its time is part of the process's.
    main = benchlib.cpu_seconds(os.getpid(), os.getpid())
    assert 0 < main <= benchlib.cpu_seconds(os.getpid())


async def test_bare_handler_answers_as_long_as_brubeck(isolated_imports):
    """The baseline is only fair if it sends as many bytes as Brubeck for each case."""
    bare, micro, capacity = bench("bare_handler"), bench("micro"), bench("capacity")
    apps = {}
    for case in bench("benchlib").CASES.values():
        app = apps.get(case.app) or apps.setdefault(case.app, micro.load(case.app))
        app.handle_message(capacity.request_bytes(case.at().encode(), 7))
        for _ in range(20):
            if app.msg_conn.last:
                break
            await asyncio.sleep(0)
        reply = app.msg_conn.last.split(b", ", 1)[1]
        app.msg_conn.last = b""
        expected = bare.answer(case.at().encode())
        assert len(reply) == len(expected), case.name

        assert without_date(reply) == without_date(expected), case.name


def without_date(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\r\n") if not line.startswith(b"Date:")]


def test_io_only_app_answers_as_the_bare_handler(isolated_imports):
    """The diagnostic app must do the bare handler's work, no more and no less."""
    bare, micro, capacity = bench("bare_handler"), bench("micro"), bench("capacity")
    app = micro.load("bench/apps/io_only.py:app")
    for path in (b"/brubeck", b"/user/42", b"/nothing"):
        app.handle_message(capacity.request_bytes(path, 7))
        expected = b"%s 1:7, %s" % (capacity.SENDER, bare.answer(path))
        # the Date line may tick over between the two answers
        assert without_date(app.msg_conn.last) == without_date(expected)
    sent = app.msg_conn.sent
    app.handle_message(capacity.disconnect_bytes(7))
    assert app.msg_conn.sent == sent  # a notice gets no answer


def test_micro_tiny(isolated_imports):
    micro = bench("micro")
    out = run_main(micro, ["--number", "20", "--repeat", "1"])
    lines = [line for line in out.splitlines()[2:] if line.strip()]
    assert len(lines) == len(micro.sync_cases()) + len(micro.async_cases())
    for line in lines:
        best, median = line.split()[-2:]
        assert float(best) > 0 and float(median) > 0


def test_micro_filter_and_args():
    micro = bench("micro")
    assert micro.parse_args(["--filter", "parse"]).filter == "parse"
    with pytest.raises(SystemExit):
        micro.parse_args(["--number", "0"])


def bare_process(driver, *options: str) -> subprocess.Popen[bytes]:
    benchlib = bench("benchlib")
    argv = benchlib.handler_argv(benchlib.BARE_CMD, driver.pull_addr, driver.pub_addr)
    return benchlib.start([*argv, *options])


@pytest.mark.parametrize("options", [(), ("--spin-us", "50")], ids=["plain", "spinning"])
def test_capacity_drive_200_against_bare(options):
    capacity, benchlib = bench("capacity"), bench("benchlib")
    with capacity.Driver(window=50) as driver:
        proc = bare_process(driver, *options)
        try:
            driver.wait_ready(capacity.request_bytes(b"/json", 1), 10, lambda: proc.poll() is None)
            messages = [capacity.request_bytes(b"/user/7", 10 + i) for i in range(10)]
            seconds, replies = driver.run(
                200,
                lambda i: messages[i % 10],
                lambda i: capacity.disconnect_bytes(10 + i % 10) if i % 50 == 49 else None,
            )
        finally:
            benchlib.stop(proc)
    assert replies == 200
    assert seconds > 0
    assert proc.returncode is not None


def test_bare_handler_spin_burns_cpu():
    bare = bench("bare_handler")
    start = time.process_time()
    bare.spin(0.02)
    assert time.process_time() - start >= 0.019  # CPU time, not wall time


def test_capacity_args():
    capacity = bench("capacity")
    args = capacity.parse_args(["--cases", "json,async-param", "--requests", "10"])
    assert [c.path for c in args.cases] == ["/json", "/async/user/42"]
    with pytest.raises(SystemExit):
        capacity.parse_args(["--cases", "nope"])


def test_memory_tiny_run():
    memory = bench("memory")
    argv = ["--requests", "400", "--baseline", "200", "--samples", "2", "--window", "20"]
    out = run_main(memory, [*argv, "--per-connection", "10"])
    assert "| 200 |" in out and "| 400 |" in out
    assert "RSS" in out


def test_memory_checkpoints_and_args():
    memory = bench("memory")
    assert memory.checkpoints(10_000, 1_000_000, 3) == [10_000, 340_000, 670_000, 1_000_000]
    with pytest.raises(SystemExit):
        memory.parse_args(["--requests", "10", "--baseline", "10"])


WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:40000/text
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  300.00us   9.00ms   90.00%
    Req/Sec    45.00k     1.00k   47.00k    70.00%
  Latency Distribution
     50%    1.05ms
     75%    1.20ms
     90%    1.40ms
     99%    2.50ms
  134000 requests in 3.00s, 20.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:  44666.67
Transfer/sec:      6.67MB
"""


def test_e2e_parses_wrk_and_compares():
    e2e = bench("e2e")
    stats = e2e.parse_wrk(WRK_OUTPUT)
    assert stats == {
        "requests_per_sec": 44666.67,
        "p50_ms": 1.05,
        "p99_ms": 2.5,
        "requests": 134000,
        "socket_errors": 3,
        "non_2xx": 4,
    }
    bare = e2e.Result(
        "text", "bare", True, 50, **stats, handler_cpu_us=12.5, handler_main_cpu_us=7.5
    )
    bare.samples_rps = [44666.67, 40000.0]
    app = e2e.Result(
        "text",
        "brubeck",
        True,
        50,
        **{**stats, "requests_per_sec": 22333.3},
        handler_cpu_us=20.25,
        handler_main_cpu_us=14.0,
        mongrel2_cpu_us=31.0,
    )
    app.samples_rps = [22333.3, 32000.0]
    rows = e2e.compare([bare, app])
    assert rows[0]["pair_ratios"] == [0.5, 0.8]
    assert rows[0]["ratio"] == 0.5 and rows[0]["target"] == "rate<0.85"
    out = io.StringIO()
    with redirect_stdout(out):
        e2e.print_table(rows, [bare, app])
    assert "| text | on | 50 | 44667 | 22333 | 0.50 | 0.50 to 0.80 |" in out.getvalue()
    assert "| 12.5 (7.5), 20.2 (14.0), 31.0 | rate<0.85 |" in out.getvalue()


def test_e2e_args():
    e2e = bench("e2e")
    args = e2e.parse_args([])
    assert args.connections == [50, 100] and args.access_log == "both"
    assert {c.at() for c in args.cases} >= {"/brubeck", "/json", "/user/42"}
    custom = e2e.parse_args(["--path", "/deco/x"]).cases
    assert [(c.name, c.path) for c in custom] == [("custom", "/deco/x")]
    with pytest.raises(SystemExit):
        e2e.parse_args(["--connections", ""])
    assert args.handler_cpus is None and args.other_cpus is None


def test_e2e_pin_splits_the_cpus(monkeypatch):
    """--pin: the handler gets the last CPU this process may use, wrk and Mongrel2 the rest."""
    e2e = bench("e2e")
    monkeypatch.setattr(e2e.os, "sched_getaffinity", lambda pid: {0, 2, 3})
    args = e2e.parse_args(["--pin"])
    assert args.handler_cpus == {3} and args.other_cpus == {0, 2}
    monkeypatch.setattr(e2e.os, "sched_getaffinity", lambda pid: {1})
    with pytest.raises(SystemExit):
        e2e.parse_args(["--pin"])


def test_peers_args_and_apps_compile():
    peers = bench("peers")
    args = peers.parse_args(["--peer-loop", "uvloop", "--connections", "50"])
    assert args.peer_loop == "uvloop" and args.access_log == "off"
    for app in (BENCH / "peers_apps").glob("*.py"):
        compile(app.read_text(), str(app), "exec")  # their imports live in the peers' venv
    assert peers.VENV.name == ".venv-peers"


@pytest.mark.skipif(
    not (shutil.which("wrk") and shutil.which("mongrel2") and shutil.which("m2sh")),
    reason="needs wrk and Mongrel2",
)
def test_e2e_tiny_run(tmp_path):
    """Both stacks through a real Mongrel2 answer alike; wrk's output parses."""
    e2e, benchlib = bench("e2e"), bench("benchlib")
    case = benchlib.CASES["param-varied"]  # also runs wrk with bench/varied_path.lua
    args = e2e.parse_args(["--duration", "1", "--warmup", "0", "--connections", "4"])
    slots = {"pull": "{pull}", "pub": "{pub}"}
    bare = e2e.Stack("bare", benchlib.handler_argv(args.bare_cmd, **slots), False, tmp_path / "b")
    argv = benchlib.handler_argv(args.app_cmd, app=case.app, **slots)
    one_cpu = {max(os.sched_getaffinity(0))}  # as --pin does
    app = e2e.Stack("brubeck", argv, False, tmp_path / "a", one_cpu)
    try:
        bare.start(case.at())
        app.start(case.at())
        assert os.sched_getaffinity(app.pids()[0]) == one_cpu
        assert e2e.check_same_answers(case, bare, app)
        result = e2e.load(app, case, "brubeck", False, 4, args)
    finally:
        bare.stop()
        app.stop()
    assert result.requests > 0 and result.non_2xx == 0
    # The main thread is part of the process: its CPU per request can only be the smaller.
    assert 0 <= result.handler_main_cpu_us <= result.handler_cpu_us


def test_instructions_args_and_child(isolated_imports):
    instructions = bench("instructions")
    with pytest.raises(SystemExit):
        instructions.main(["--number", "150"])
    with pytest.raises(SystemExit):
        instructions.main(["--cases", "no-such-case"])
    # The child that valgrind would run, run plainly: both sides handle their messages.
    code = instructions.CHILD.format(bench=str(instructions.HERE), repo=str(instructions.REPO))
    for which, target, path in [
        ("bare", "examples/hello/app.py:app", "/brubeck"),
        ("brubeck", "examples/hello/app.py:app", "/user/42"),
        ("brubeck", "bench/apps/hello_bench.py:app", "/await/json"),
    ]:
        result = subprocess.run(
            [sys.executable, "-c", code, "100", which, target, path],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=instructions.REPO,
        )
        assert result.returncode == 0, result.stderr


def test_uploads_args():
    uploads = bench("uploads")
    args = uploads.parse_args(["--size-mb", "2", "--windows", "4096,65536"])
    assert (args.size_mb, args.windows) == (2, [4096, 65536])
    for bad in (["--size-mb", "0"], ["--windows", "big"]):
        with pytest.raises(SystemExit):
            uploads.parse_args(bad)


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("mongrel2") and shutil.which("m2sh")),
    reason="needs curl and Mongrel2",
)
def test_uploads_tiny_run(tmp_path):
    """Every mode uploads 1 MB through a real Mongrel2 and gets its SHA-256 back."""
    uploads = bench("uploads")
    argv = ["--size-mb", "1", "--repeat", "1", "--windows", "65536"]
    out = run_main(uploads, [*argv, "--json", str(tmp_path / "u.json")])
    assert "| m2-file |" in out and "| stream-live | 65536 |" in out
    rows = json.loads((tmp_path / "u.json").read_text())["rows"]
    assert [row["mode"] for row in rows] == ["m2-file", "stream-file", "stream-live"]
