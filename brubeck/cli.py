"""The ``brubeck`` command: run an app, optionally behind a Mongrel2 it manages itself."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .app import Brubeck
from .connection import Mongrel2Connection

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


def _mongrel2_config(app: Brubeck, args: argparse.Namespace) -> Any:
    from .mongrel2 import Mongrel2Config

    assert app.msg_conn is not None
    return Mongrel2Config(
        send_spec=app.msg_conn.pull_addr,
        recv_spec=app.msg_conn.pub_addr,
        port=args.port,
        bind_addr=args.bind,
        access_log=args.access_log,
    )


def _prepare(args: argparse.Namespace) -> Brubeck:
    app = load_app(args.target)
    if args.pull or args.pub:
        if app.msg_conn is None and not (args.pull and args.pub):
            raise SystemExit("brubeck: this app has no msg_conn; give both --pull and --pub")
        pull = args.pull or app.msg_conn.pull_addr  # type: ignore[union-attr]
        pub = args.pub or app.msg_conn.pub_addr  # type: ignore[union-attr]
        app.msg_conn = Mongrel2Connection(pull, pub)
    if app.msg_conn is None:
        raise SystemExit("brubeck: this app has no msg_conn; give --pull and --pub")
    return app


def cmd_run(args: argparse.Namespace) -> int:
    app = _prepare(args)
    if not args.mongrel2:
        ignored = [
            flag
            for flag, given in (
                ("--port", args.port != 6767),
                ("--bind", args.bind != "127.0.0.1"),
                ("--no-access-log", not args.access_log),
                ("--run-dir", args.run_dir is not None),
            )
            if given
        ]
        if ignored:
            log.warning("%s only apply with --mongrel2; ignored", ", ".join(ignored))
        app.run()
        return 0
    if args.run_dir:
        _serve_with_mongrel2(app, args, args.run_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="brubeck-mongrel2-") as run_dir:
            _serve_with_mongrel2(app, args, run_dir)
    return 0


def _serve_with_mongrel2(app: Brubeck, args: argparse.Namespace, run_dir: str) -> None:
    from .mongrel2 import Mongrel2Process

    app.settings.setdefault("mongrel2_run_dir", run_dir)
    with Mongrel2Process(_mongrel2_config(app, args), run_dir) as m2:
        print(f"Mongrel2 listening on {m2.url}  (run dir {run_dir}); Ctrl-C stops both", flush=True)
        app.run()


def cmd_mongrel2_config(args: argparse.Namespace) -> int:
    print(_mongrel2_config(_prepare(args), args).render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brubeck", description=__doc__)
    parser.add_argument("--version", action="version", version=f"brubeck {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def app_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("target", help="the app: pkg.module:app or path/to/app.py:app")
        sub.add_argument("--pull", help="override the app's PULL address (Mongrel2 send_spec)")
        sub.add_argument("--pub", help="override the app's PUB address (Mongrel2 recv_spec)")
        sub.add_argument("--port", type=int, default=6767, help="Mongrel2's HTTP port")
        sub.add_argument("--bind", default="127.0.0.1", help="Mongrel2's HTTP address")
        sub.add_argument(
            "--no-access-log",
            dest="access_log",
            action="store_false",
            help="turn Mongrel2's access log off",
        )

    run = commands.add_parser("run", help="serve an app")
    app_args(run)
    run.add_argument(
        "--mongrel2", action="store_true", help="also start a Mongrel2 that routes / to the app"
    )
    run.add_argument("--run-dir", help="Mongrel2's run directory (default: a new temp dir)")
    run.set_defaults(func=cmd_run)

    m2 = commands.add_parser("mongrel2", help="Mongrel2 helpers")
    m2_commands = m2.add_subparsers(dest="m2_command", required=True)
    config = m2_commands.add_parser("config", help="print the m2sh config for an app")
    app_args(config)
    config.set_defaults(func=cmd_mongrel2_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
