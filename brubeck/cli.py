"""The ``brubeck`` command: run an app, optionally behind a Mongrel2 it manages itself."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .access import ACCESS_LOGGER
from .app import Brubeck
from .connection import Mongrel2Connection
from .logs import LEVELS, setup_logging
from .loops import EVENT_LOOPS
from .settings import SettingsError, apply_to_app, from_environment

log = logging.getLogger("brubeck.cli")


def load_app(target: str) -> Brubeck:
    """Import ``pkg.module:attr`` or ``path/to/file.py:attr`` (``attr`` defaults to ``app``)."""
    location, _, attr = target.partition(":")
    attr = attr or "app"
    if location.endswith(".py") or "/" in location:
        path = Path(location).resolve()
        if not path.is_file():
            raise SystemExit(f"brubeck: no such file: {location}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"brubeck: cannot import {location}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise SystemExit(f"brubeck: cannot import {location!r}: {exc}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, Brubeck):
        raise SystemExit(f"brubeck: {location}:{attr} is {type(app).__name__}, not a Brubeck app")
    return app


def app_directory(target: str) -> Path:
    """The directory ``--reload`` watches: the app file's, or its top-level package's."""
    location = target.partition(":")[0]
    if location.endswith(".py") or "/" in location:
        return Path(location).resolve().parent
    module = sys.modules.get(location.split(".")[0])
    file = getattr(module, "__file__", None)
    return Path(file).resolve().parent if file else Path.cwd()


def _mongrel2_config(app: Brubeck, args: argparse.Namespace) -> Any:
    from .mongrel2 import Mongrel2Config

    assert app.msg_conn is not None
    wanted = app.settings.get("mongrel2_settings") or {}
    if not isinstance(wanted, dict):
        raise SystemExit(f"the mongrel2_settings setting must be a dict, got {wanted!r}")
    try:
        return Mongrel2Config(
            send_spec=app.msg_conn.pull_addr,
            recv_spec=app.msg_conn.pub_addr,
            port=args.port,
            bind_addr=args.bind,
            access_log=args.mongrel2_access_log,
            settings=dict(wanted),
        )
    except ValueError as exc:  # a user's flag or setting: one line, not a traceback
        raise SystemExit(f"brubeck: {exc}") from None


def _env_value(args: argparse.Namespace, key: str, default: Any = None) -> Any:
    found = args.env.get(key)
    return found[1] if found is not None else default


def _prepare(args: argparse.Namespace) -> Brubeck:
    """Load the app, then apply the environment, then the command line (which wins)."""
    app = load_app(args.target)
    pull = args.pull or _env_value(args, "pull")
    pub = args.pub or _env_value(args, "pub")
    if pull or pub:
        if app.msg_conn is None and not (pull and pub):
            raise SystemExit("brubeck: this app has no msg_conn; give both --pull and --pub")
        pull = pull or app.msg_conn.pull_addr  # type: ignore[union-attr]
        pub = pub or app.msg_conn.pub_addr  # type: ignore[union-attr]
        try:
            app.msg_conn = Mongrel2Connection(pull, pub)
        except ValueError as exc:
            raise SystemExit(f"brubeck: {exc}") from None
    if app.msg_conn is None:
        raise SystemExit("brubeck: this app has no msg_conn; give --pull and --pub")
    apply_to_app(app, args.env)
    if getattr(args, "access_log", None) is not None:
        app.settings["access_log"] = args.access_log
    if getattr(args, "loop", None) is not None:
        app.settings["event_loop"] = args.loop
    return app


def cmd_run(args: argparse.Namespace) -> int:
    app = _prepare(args)
    if app.settings.get("access_log"):
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    workers = args.workers if args.workers is not None else _env_value(args, "workers", 1)
    if workers < 1:
        raise SystemExit(f"brubeck: --workers must be at least 1, got {workers}")
    if not args.mongrel2:
        ignored = [
            flag
            for flag, given in (
                ("--port", args.port != 6767),
                ("--bind", args.bind != "127.0.0.1"),
                ("--no-mongrel2-access-log", not args.mongrel2_access_log),
                ("--run-dir", args.run_dir is not None),
            )
            if given
        ]
        if ignored:
            log.warning("%s only apply with --mongrel2; ignored", ", ".join(ignored))
        return _serve(app, args, workers)
    if args.run_dir:
        return _serve_with_mongrel2(app, args, workers, args.run_dir)
    with tempfile.TemporaryDirectory(prefix="brubeck-mongrel2-") as run_dir:
        return _serve_with_mongrel2(app, args, workers, run_dir)


def _serve_with_mongrel2(app: Brubeck, args: argparse.Namespace, workers: int, run_dir: str) -> int:
    from .mongrel2 import Mongrel2Process

    # The Mongrel2 started here writes its uploads under run_dir, whatever a setting said.
    app.settings["mongrel2_run_dir"] = run_dir
    with contextlib.ExitStack() as stack:
        try:
            m2 = stack.enter_context(Mongrel2Process(_mongrel2_config(app, args), run_dir))
        except (RuntimeError, TimeoutError, OSError) as exc:  # a busy port, a bad run dir…
            raise SystemExit(
                f"brubeck: Mongrel2 did not start on port {args.port}: {exc}"
            ) from None
        print(f"Mongrel2 listening on {m2.url}  (run dir {run_dir}); Ctrl-C stops both", flush=True)
        # Mongrel2 stops only after the handlers: their last replies go through it.
        return _serve(app, args, workers)


def _serve(app: Brubeck, args: argparse.Namespace, workers: int) -> int:
    """Serve in this process, or supervise ``workers`` processes that each serve."""
    from .supervisor import (
        SUPERVISOR_PID_ENV,
        WORKER_ID_ENV,
        Backoff,
        Supervisor,
        stop_when_orphaned,
    )

    if workers == 1 and not args.reload:
        parent = os.environ.get(SUPERVISOR_PID_ENV, "")
        if parent.isdigit() and int(parent) == os.getppid():
            stop_when_orphaned(app, int(parent))
            worker = os.environ.get(WORKER_ID_ENV, "")
            if app.settings.get("websocket_peers") and worker.isdigit():
                app.settings.setdefault("websocket_peer_index", int(worker) - 1)
        app.run()
        _flush_zeromq()
        return 0
    from .reloader import Reloader

    env = dict(os.environ)
    if app.settings.get("mongrel2_run_dir"):
        env["BRUBECK_MONGREL2_RUN_DIR"] = str(app.settings["mongrel2_run_dir"])
    reloader = Reloader(app_directory(args.target)) if args.reload else None
    if reloader is not None:
        log.info("reloading the workers when a .py file under %s changes", reloader.root)
    with contextlib.ExitStack() as cleanup:
        peers: Callable[[int], dict[str, str]] | None = None
        if workers > 1 and not app.settings.get("websocket_peers"):
            # Mongrel2 deals a connection's messages out to every worker in turn: WebSocket
            # frames and streamed upload pieces must reach the one that owns the connection.
            directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="brubeck-"))

            def peers(generation: int) -> dict[str, str]:
                # Each set of workers (a SIGHUP starts the next) has endpoints of its own: a
                # new worker must never reach an old one still bound there, finishing up.
                endpoints = _peer_endpoints(directory, workers, generation)
                return {"BRUBECK_WEBSOCKET_PEERS": " ".join(endpoints)}

            log.info("the workers pass each other WebSocket and upload messages in %s", directory)
        supervisor = Supervisor(
            _worker_command(app, args),
            workers,
            env=env,
            env_for_generation=peers,
            shutdown_timeout=app.shutdown_timeout + 5,
            reloader=reloader,
            # while reloading, a crash waits for the next edit rather than ending the server
            backoff=Backoff(give_up_after=0) if reloader is not None else None,
        )
        return supervisor.run()


def _peer_endpoints(directory: str, workers: int, generation: int = 0) -> list[str]:
    """One ``ipc://`` endpoint per worker of a set (worker N binds the (N-1)th)."""
    return [f"ipc://{directory}/g{generation}-peer-{i}" for i in range(workers)]


def _flush_zeromq(linger_ms: int = 2000) -> None:
    """Let ZeroMQ send the last replies before the process exits.

    A closed socket's queued messages go out only while its context lives; at interpreter exit
    pyzmq does not wait for them. Terminating the context waits, up to ``linger_ms``.
    """
    import zmq.asyncio

    zmq.asyncio.Context.instance().destroy(linger=linger_ms)


def _worker_command(app: Brubeck, args: argparse.Namespace) -> list[str]:
    """One worker: this command, serving in its own process on the same two addresses."""
    assert app.msg_conn is not None
    command = [sys.executable, "-m", "brubeck", "--log-level", args.log_level]
    if args.json_logs:
        command.append("--json-logs")
    command += [
        "run",
        args.target,
        "--pull",
        app.msg_conn.pull_addr,
        "--pub",
        app.msg_conn.pub_addr,
        "--workers",
        "1",
    ]
    if args.access_log is not None:
        command.append("--access-log" if args.access_log else "--no-access-log")
    if args.loop is not None:
        command += ["--loop", args.loop]
    return command


def cmd_mongrel2_config(args: argparse.Namespace) -> int:
    print(_mongrel2_config(_prepare(args), args).render())
    return 0


def _logging_args(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--log-level", default=default, choices=LEVELS, help="default: info ($BRUBECK_LOG_LEVEL)"
    )
    parser.add_argument(
        "--json-logs",
        action="store_true",
        default=default,
        help="log one JSON object a line ($BRUBECK_JSON_LOGS)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brubeck", description=__doc__)
    parser.add_argument("--version", action="version", version=f"brubeck {__version__}")
    _logging_args(parser, None)
    commands = parser.add_subparsers(dest="command", required=True)

    def app_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("target", help="the app: pkg.module:app or path/to/app.py:app")
        sub.add_argument(
            "--pull", help="the app's PULL address (Mongrel2's send_spec; $BRUBECK_PULL_ADDR)"
        )
        sub.add_argument(
            "--pub", help="the app's PUB address (Mongrel2's recv_spec; $BRUBECK_PUB_ADDR)"
        )
        sub.add_argument("--port", type=int, default=6767, help="Mongrel2's HTTP port")
        sub.add_argument("--bind", default="127.0.0.1", help="Mongrel2's HTTP address")
        sub.add_argument(
            "--no-mongrel2-access-log",
            dest="mongrel2_access_log",
            action="store_false",
            help="turn Mongrel2's access log off",
        )

    run = commands.add_parser("run", help="serve an app")
    app_args(run)
    # Also accepted after the subcommand; SUPPRESS keeps a value given before it.
    _logging_args(run, argparse.SUPPRESS)
    run.add_argument(
        "--mongrel2", action="store_true", help="also start a Mongrel2 that routes / to the app"
    )
    run.add_argument("--run-dir", help="Mongrel2's run directory (default: a new temp dir)")
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="handler processes to run and supervise (default 1; $BRUBECK_WORKERS)",
    )
    run.add_argument(
        "--reload",
        action="store_true",
        help="restart the workers when a .py file under the app's directory changes (development)",
    )
    run.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Brubeck's access log, one line a request (default off; $BRUBECK_ACCESS_LOG)",
    )
    run.add_argument(
        "--loop",
        choices=EVENT_LOOPS,
        default=None,
        help="the event loop: asyncio (default), uvloop, or auto (uvloop if installed; "
        "$BRUBECK_EVENT_LOOP)",
    )
    run.set_defaults(func=cmd_run)

    m2 = commands.add_parser("mongrel2", help="Mongrel2 helpers")
    m2_commands = m2.add_subparsers(dest="m2_command", required=True)
    config = m2_commands.add_parser("config", help="print the m2sh config for an app")
    app_args(config)
    config.set_defaults(func=cmd_mongrel2_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.env = from_environment(os.environ)
    except SettingsError as exc:
        raise SystemExit(f"brubeck: {exc}") from None
    args.log_level = args.log_level or _env_value(args, "log_level", "info")
    if args.json_logs is None:
        args.json_logs = _env_value(args, "json_logs", False)
    access_log = getattr(args, "access_log", None)
    if access_log is None:
        access_log = _env_value(args, "access_log", False)
    setup_logging(args.log_level, json_logs=args.json_logs, access_log=bool(access_log))
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
