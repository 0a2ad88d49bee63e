"""cli.py: flags, the environment, and what workers are started with (no Mongrel2 needed)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brubeck import cli

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "hello" / "app.py") + ":app"


@pytest.fixture(autouse=True)
def no_logging_setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """``main`` would replace the root logger's handlers, which belong to pytest here; and
    loading an app adds to ``sys.path`` and ``sys.modules``, which are put back after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    calls: list[dict[str, Any]] = []

    def record(level: str, **kw: Any) -> None:
        calls.append({"level": level, **kw})

    monkeypatch.setattr(cli, "setup_logging", record)
    for name in [n for n in os.environ if n.startswith("BRUBECK_")]:
        monkeypatch.delenv(name)
    yield calls
    for name in set(sys.modules) - modules:
        if not name.startswith("brubeck"):
            del sys.modules[name]  # the example app, loaded as a module called "app"


def test_access_log_flags_are_brubecks_and_mongrel2_has_its_own() -> None:
    parse = cli.build_parser().parse_args
    args = parse(["run", EXAMPLE])
    assert args.access_log is None and args.mongrel2_access_log is True
    assert parse(["run", EXAMPLE, "--access-log"]).access_log is True
    assert parse(["run", EXAMPLE, "--no-access-log"]).access_log is False
    assert parse(["run", EXAMPLE, "--no-mongrel2-access-log"]).mongrel2_access_log is False
    both = parse(["--log-level", "debug", "run", EXAMPLE, "--json-logs"])
    assert (both.log_level, both.json_logs) == ("debug", True)
    after = parse(["run", EXAMPLE, "--log-level", "error"])
    assert after.log_level == "error"


def test_mongrel2_config_takes_the_environment_then_the_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRUBECK_PULL_ADDR", "tcp://127.0.0.1:7001")
    monkeypatch.setenv("BRUBECK_PUB_ADDR", "tcp://127.0.0.1:7002")
    assert cli.main(["mongrel2", "config", EXAMPLE, "--pub", "tcp://127.0.0.1:7003"]) == 0
    config = capsys.readouterr().out
    assert 'send_spec="tcp://127.0.0.1:7001"' in config
    assert 'recv_spec="tcp://127.0.0.1:7003"' in config
    assert "disable.access_logging" not in config
    cli.main(["mongrel2", "config", EXAMPLE, "--no-mongrel2-access-log"])
    assert '"disable.access_logging": 1' in capsys.readouterr().out


def test_mongrel2_config_takes_the_apps_mongrel2_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["mongrel2", "config", "examples/streamed_upload/app.py:app"]) == 0
    assert '"upload.stream": 1' in capsys.readouterr().out
    bad = tmp_path / "bad_app.py"
    bad.write_text(
        "from brubeck import Brubeck, Mongrel2Connection\n"
        "app = Brubeck(Mongrel2Connection('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2'),"
        " mongrel2_settings=['upload.stream'])\n"
    )
    with pytest.raises(SystemExit, match="mongrel2_settings setting must be a dict"):
        cli.main(["mongrel2", "config", f"{bad}:app"])


def test_logging_is_set_up_from_flags_or_environment(
    no_logging_setup: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRUBECK_LOG_LEVEL", "warning")
    monkeypatch.setenv("BRUBECK_JSON_LOGS", "1")
    cli.main(["mongrel2", "config", EXAMPLE])
    cli.main(["--log-level", "debug", "mongrel2", "config", EXAMPLE])
    assert no_logging_setup == [
        {"level": "warning", "json_logs": True, "access_log": False},
        {"level": "debug", "json_logs": True, "access_log": False},
    ]


def test_a_bad_environment_variable_stops_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRUBECK_WORKERS", "many")
    with pytest.raises(SystemExit, match="BRUBECK_WORKERS='many' is not usable"):
        cli.main(["run", EXAMPLE])


def test_workers_are_started_with_the_resolved_options() -> None:
    args = cli.build_parser().parse_args(
        ["run", EXAMPLE, "--pull", "tcp://127.0.0.1:7001", "--workers", "3", "--access-log"]
    )
    args.env, args.log_level, args.json_logs = {}, "warning", True
    app = cli._prepare(args)
    command = cli._worker_command(app, args)
    assert command[:3] == [sys.executable, "-m", "brubeck"]
    assert command[3:] == [
        "--log-level", "warning", "--json-logs", "run", EXAMPLE,
        "--pull", "tcp://127.0.0.1:7001", "--pub", "tcp://127.0.0.1:9998",
        "--workers", "1", "--access-log",
    ]  # fmt: skip
    assert app.settings["access_log"] is True


def test_the_directory_reload_watches(tmp_path: Path) -> None:
    assert cli.app_directory(EXAMPLE) == Path(EXAMPLE.rpartition(":")[0]).parent
    assert cli.app_directory("brubeck.cli:main") == Path(cli.__file__).resolve().parent


def test_the_event_loop_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = cli.build_parser().parse_args(["run", EXAMPLE, "--workers", "2", "--loop", "auto"])
    args.env, args.log_level, args.json_logs = {}, "info", False
    app = cli._prepare(args)
    assert app.settings["event_loop"] == "auto"
    assert cli._worker_command(app, args)[-2:] == ["--loop", "auto"]
    monkeypatch.setenv("BRUBECK_EVENT_LOOP", "uvloop")
    args = cli.build_parser().parse_args(["run", EXAMPLE])
    args.env, args.log_level, args.json_logs = cli.from_environment(os.environ), "info", False
    assert cli._prepare(args).settings["event_loop"] == "uvloop"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", EXAMPLE, "--loop", "trio"])


@pytest.mark.parametrize(("flags", "gives_up"), [(["--workers", "2"], True), (["--reload"], False)])
def test_workers_give_up_on_crash_loops_except_while_reloading(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], gives_up: bool
) -> None:
    from brubeck import supervisor

    seen: dict[str, Any] = {}

    class Recording(supervisor.Supervisor):
        def run(self) -> int:
            seen["backoff"] = self.backoff
            return 1

    monkeypatch.setattr(supervisor, "Supervisor", Recording)
    assert cli.main(["run", EXAMPLE, *flags]) == 1  # the supervisor's code is the exit code
    assert seen["backoff"].gives_up(10) is gives_up
