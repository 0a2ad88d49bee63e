"""The command line and the generated Mongrel2 config under bad input: clear errors, no injection.

Config values must be refused before they reach ``m2sh``; a user's mistake must end in one
clear line and a non-zero exit, not a traceback; nothing started may be left behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brubeck import cli
from brubeck.mongrel2 import Mongrel2Config, Mongrel2Process, StaticDir, free_port
from brubeck.supervisor import Backoff, Supervisor

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "hello" / "app.py") + ":app"
HAVE_MONGREL2 = shutil.which("mongrel2") is not None and shutil.which("m2sh") is not None
needs_mongrel2 = pytest.mark.skipif(not HAVE_MONGREL2, reason="needs mongrel2 and m2sh")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep pytest's log handlers, ``sys.path`` and ``sys.modules`` as they were."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    monkeypatch.setattr(cli, "setup_logging", lambda *a, **kw: None)
    for name in [n for n in os.environ if n.startswith("BRUBECK_")]:
        monkeypatch.delenv(name)
    yield
    for name in set(sys.modules) - modules:
        if not name.startswith("brubeck"):
            del sys.modules[name]


def free_specs() -> list[str]:
    """``--pull``/``--pub`` on free ports, so no run collides with another."""
    return ["--pull", f"tcp://127.0.0.1:{free_port()}", "--pub", f"tcp://127.0.0.1:{free_port()}"]


def exit_message(argv: list[str]) -> str:
    """Run the CLI, expect a SystemExit with a message (not any other exception)."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code not in (0, None)
    return str(info.value.code)


# -- (1) config injection --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": 'evil"\n    port=1'},
        {"host": "a\\b"},
        {"host": "two words"},
        {"routes": {'/a": handler, "/b': "handler"}},
        {"routes": {"/x\n": "handler"}},
        {"routes": {"/s/": StaticDir('st/", index_file="x/')}},
        {"routes": {"/s/": StaticDir("st/", default_ctype="text/plain\r\n")}},
        {"settings": {'a"b': 1}},
        {"settings": {"x.y": 'v", "server.daemonize": 1, "z": "'}},
        {"send_ident": 'a"b'},
        {"bind_addr": '127.0.0.1"'},
    ],
)
def test_quotes_newlines_and_backslashes_are_refused(kwargs: dict[str, Any]) -> None:
    """Anything that could close an m2sh string early is a ValueError, never rendered."""
    with pytest.raises(ValueError):
        Mongrel2Config.on_free_ports(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "admin\x00.example.com"},
        {"routes": {"/admin\x00/public": "handler"}},
        {"settings": {"upload.temp_store": "tmp/up\x00load.XXXXXX"}},
    ],
)
def test_nul_bytes_are_refused(kwargs: dict[str, Any]) -> None:
    """Was a bug. A NUL passes ``validate``; m2sh then stores the value cut at the NUL
    (host ``admin``, route ``/admin``): a different config from the one asked for."""
    with pytest.raises(ValueError):
        Mongrel2Config.on_free_ports(**kwargs)


def test_a_lone_surrogate_is_a_value_error_not_an_encoding_crash() -> None:
    """Was a bug. ``os.fsdecode`` of bad bytes gives lone surrogates; validation lets them
    through and ``Mongrel2Process.start`` dies later with UnicodeEncodeError writing the file."""
    with pytest.raises(ValueError):
        Mongrel2Config.on_free_ports(routes={"/caf\udce9/": "handler"})


@needs_mongrel2
def test_a_run_dir_full_of_shell_metacharacters_works(tmp_path: Path) -> None:
    """The run directory is never put in the config or a shell line: any name works."""
    run_dir = tmp_path / "we ird'\"$(touch pwned);`x`|d%s"
    config = Mongrel2Config.on_free_ports()
    with Mongrel2Process(config, run_dir), socket.create_connection(("127.0.0.1", config.port)):
        pass
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@needs_mongrel2
def test_odd_but_quotable_values_load_as_given(tmp_path: Path) -> None:
    """Single quotes, spaces in a static dir and non-ASCII reach m2sh's db unchanged."""
    config = Mongrel2Config.on_free_ports(
        host="héllo'",
        routes={"/it's/": "handler", "/s/": StaticDir("my static/", default_ctype="te'xt")},
    )
    process = Mongrel2Process(config, tmp_path)
    for sub in ("logs", "run", "tmp"):
        (tmp_path / sub).mkdir()
    process._load_config(shutil.which("m2sh") or "m2sh")
    db = sqlite3.connect(tmp_path / "config.sqlite")
    try:
        assert db.execute("SELECT name FROM host").fetchall() == [("héllo'",)]
        assert {r[0] for r in db.execute("SELECT path FROM route")} == {"/it's/", "/s/"}
        assert db.execute("SELECT base, default_ctype FROM directory").fetchall() == [
            ("my static/", "te'xt")
        ]
    finally:
        db.close()


# -- (2) bad command-line input --------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ["--port", "0"],
        ["--port", "70000"],
        ["--bind", "localhost"],
        ["--bind", '127.0.0.1" port=1'],
        ["--pull", 'tcp://127.0.0.1:7001"', "--pub", "tcp://127.0.0.1:7002"],
        ["--pull", "tcp://127.0.0.1:7001", "--pub", "tcp://127.0.0.1:7001"],
    ],
)
def test_bad_mongrel2_flags_are_a_clear_error_not_a_traceback(extra: list[str]) -> None:
    """Was a bug. ``Mongrel2Config`` refuses these with a ValueError, but the CLI lets it
    escape as a traceback; expected: ``brubeck: ...`` and exit 1, like ``--workers 0``."""
    message = exit_message(["mongrel2", "config", EXAMPLE, *extra])
    assert message.startswith("brubeck:")


def test_bad_mongrel2_settings_from_the_app_are_a_clear_error(tmp_path: Path) -> None:
    """Was a bug. An app's ``mongrel2_settings`` with a quote in a value gives a traceback."""
    app = tmp_path / "quoted_app.py"
    app.write_text(
        "from brubeck import Brubeck, Mongrel2Connection\n"
        "app = Brubeck(msg_conn=Mongrel2Connection('tcp://127.0.0.1:7101', "
        "'tcp://127.0.0.1:7102'), mongrel2_settings={'x.y': 'a\"b'})\n"
    )
    assert "x.y" in exit_message(["mongrel2", "config", f"{app}:app"])


def test_a_missing_attribute_or_module_is_one_line() -> None:
    """``app.py:missing`` and an unknown module end in a ``brubeck:`` message, exit 1."""
    assert "missing" in exit_message(["run", EXAMPLE.replace(":app", ":missing")])
    assert "no_such_module_xyz" in exit_message(["run", "no_such_module_xyz"])
    assert "no such file" in exit_message(["run", "no/such/file.py"])


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_zero_or_negative_workers_are_refused(workers: str) -> None:
    """Refused before anything starts."""
    assert "--workers" in exit_message(["run", EXAMPLE, "--workers", workers])


@pytest.mark.parametrize("flag", ["--workers", "--port"])
def test_non_numeric_values_are_usage_errors(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's usage error: exit 2 and a message naming the flag."""
    with pytest.raises(SystemExit) as info:
        cli.main(["run", EXAMPLE, flag, "abc"])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_workers_from_the_environment_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """``BRUBECK_WORKERS=0`` or ``abc`` is a one-line error too."""
    for value in ("0", "abc"):
        monkeypatch.setenv("BRUBECK_WORKERS", value)
        assert "BRUBECK_WORKERS" in exit_message(["run", EXAMPLE])


@needs_mongrel2
def test_a_busy_http_port_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was a bug. ``run --mongrel2 --port <busy>`` dumps a RuntimeError traceback (whose log
    paths point into the temp dir it has just deleted); expected: a ``brubeck:`` line naming
    the port, exit 1. No temp dir or Mongrel2 must stay behind either way."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["run", EXAMPLE, "--mongrel2", "--port", str(port), *free_specs()]
        try:
            message = exit_message(argv)
        finally:
            assert list(tmp_path.iterdir()) == []
    assert message.startswith("brubeck:") and str(port) in message


@needs_mongrel2
def test_a_run_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    """Was a bug. ``--run-dir some-file`` ends in a NotADirectoryError traceback."""
    afile = tmp_path / "afile"
    afile.write_text("")
    argv = ["run", EXAMPLE, "--mongrel2", "--run-dir", str(afile), *free_specs()]
    assert exit_message(argv).startswith("brubeck:")


def test_the_managed_run_dir_wins_over_a_stale_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was a bug. With ``--mongrel2`` the handler must look for uploads where that Mongrel2
    writes them, but ``setdefault`` keeps ``BRUBECK_MONGREL2_RUN_DIR`` (or the app's own
    ``mongrel2_run_dir``) and the handler then looks in the wrong directory."""
    import brubeck.mongrel2

    class FakeMongrel2:
        url = "http://127.0.0.1:1"

        def __init__(self, config: Any, run_dir: str) -> None:
            pass

        def __enter__(self) -> FakeMongrel2:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    seen: dict[str, Any] = {}

    def fake_serve(app: Any, args: Any, workers: int) -> int:
        seen.update(app.settings)
        return 0

    monkeypatch.setattr(brubeck.mongrel2, "Mongrel2Process", FakeMongrel2)
    monkeypatch.setattr(cli, "_serve", fake_serve)
    monkeypatch.setenv("BRUBECK_MONGREL2_RUN_DIR", str(tmp_path / "stale"))
    run_dir = str(tmp_path / "managed")
    assert cli.main(["run", EXAMPLE, "--mongrel2", "--run-dir", run_dir]) == 0
    assert seen["mongrel2_run_dir"] == run_dir


# -- (3) a worker that crashes in a loop -----------------------------------------------------


def test_a_crash_looping_worker_backs_off_and_keeps_one_process(tmp_path: Path) -> None:
    """Instant crashes are restarted ever later (never a busy loop); one process at a time."""
    marker = tmp_path / "starts"
    command = [
        sys.executable,
        "-c",
        f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)",
    ]
    supervisor = Supervisor(command, 1, backoff=Backoff(base=0.05, cap=0.4))
    slot = supervisor.slots[0]
    now, delays = 0.0, []
    try:
        for _ in range(7):
            supervisor._tick(now)
            assert slot.process is not None and len(supervisor.pids) <= 1
            slot.process.wait(10)
            supervisor._tick(now + 0.01)
            assert slot.process is None and slot.restart_at is not None
            delays.append(round(slot.restart_at - (now + 0.01), 3))
            supervisor._tick(slot.restart_at - 0.001)  # not before its time
            assert slot.process is None
            now = slot.restart_at
    finally:
        supervisor._kill_all()
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4, 0.4]
    assert len(marker.read_text()) == 7


def test_a_worker_that_exits_cleanly_right_away_counts_as_a_failure() -> None:
    """A clean exit within a second is not "restarted on purpose": it is backed off too."""
    supervisor = Supervisor([sys.executable, "-c", "pass"], 1, backoff=Backoff(base=0.2))
    slot = supervisor.slots[0]
    try:
        supervisor._tick(0.0)
        assert slot.process is not None
        slot.process.wait(10)
        supervisor._tick(0.05)
        assert slot.failures == 1 and slot.restart_at == pytest.approx(0.25)
    finally:
        supervisor._kill_all()


def test_a_worker_that_keeps_failing_makes_the_supervisor_give_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After give_up_after quick failures the others are stopped and run() returns 1."""
    caplog.set_level(logging.INFO, "brubeck.supervisor")
    healthy = [sys.executable, "-c", "import time; time.sleep(60)"]
    crashing = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor(healthy, 2, backoff=Backoff(base=0.01, cap=0.02, give_up_after=3))
    supervisor.poll_interval = 0.01
    # worker 2 runs the crashing command: the same Supervisor, another command for one slot
    original_spawn = supervisor._spawn

    def spawn(slot, now):  # type: ignore[no-untyped-def]
        supervisor.command = crashing if slot.index == 2 else healthy
        original_spawn(slot, now)

    supervisor._spawn = spawn  # type: ignore[method-assign]
    started = time.monotonic()
    code = supervisor.run()
    assert code == 1
    assert time.monotonic() - started < 10
    assert supervisor.pids == []
    assert "worker 2 exited with code 3 after" in caplog.text
    assert "3 quick failures in a row; giving up and stopping all workers" in caplog.text
    assert "giving up: stopping 1 workers" in caplog.text


def test_failures_spread_over_healthy_runs_never_give_up() -> None:
    """The count is of failures in a row: a worker that stayed up a while starts over."""
    supervisor = Supervisor(
        [sys.executable, "-c", "raise SystemExit(3)"],
        1,
        backoff=Backoff(base=0.01, healthy_after=5, give_up_after=2),
    )
    slot = supervisor.slots[0]
    try:
        now = 0.0
        for _ in range(4):
            supervisor._tick(now)
            assert slot.process is not None
            slot.process.wait(10)
            slot.started = now - 6  # as if it had run six seconds
            supervisor._tick(now + 0.01)
            assert slot.failures == 1 and not supervisor._gave_up
            now = slot.restart_at or now
    finally:
        supervisor._kill_all()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"give_up_after": -1}, ValueError),
        ({"give_up_after": 2.5}, TypeError),
        ({"give_up_after": True}, TypeError),
        ({"base": 0}, ValueError),
        ({"base": 5, "cap": 1}, ValueError),
        ({"healthy_after": -1}, ValueError),
    ],
)
def test_bad_backoff_settings_are_refused(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_give_up_after_zero_never_gives_up() -> None:
    assert not Backoff(give_up_after=0).gives_up(10_000)
    assert Backoff().gives_up(10) and not Backoff().gives_up(9)
