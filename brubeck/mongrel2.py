"""Run Mongrel2 as a child process, for tests, benchmarks and local development.

Brubeck handlers only speak ZeroMQ; the HTTP side belongs to Mongrel2. Getting it to start reliably
takes a run directory laid out for its chroot, a config loaded with ``m2sh``, a foreground process
and a readiness check. This module does those steps once, with the standard library only, so tests
and scripts do not each reinvent them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .uploads import resolve_reported_path

__all__ = ["Mongrel2Config", "Mongrel2Process", "Route", "StaticDir", "free_port"]

INSTALL_HINT = "apt-get install -y mongrel2-core"

DEFAULT_SETTINGS: dict[str, str | int] = {
    "server.daemonize": 0,
    "limits.content_length": 20480,
    "upload.temp_store": "tmp/upload.XXXXXX",
    # Uploads may hold private data: readable by Mongrel2's user only (the handler's, normally).
    "upload.temp_store_mode": "0600",
}

_IDENT_RE = re.compile(r"[A-Za-z0-9-]+")
_SPEC_RE = re.compile(r"(tcp|ipc|inproc)://[^\s\"'\\]+")
_SETTING_KEY_RE = re.compile(r"[A-Za-z0-9_.]+")
# Every setting Mongrel2 1.12.2 reads (each Setting_get_* call); m2sh stores any other key and
# Mongrel2 ignores it, so a misspelt name would silently have no effect.
KNOWN_SETTINGS = frozenset(
    {
        "server.daemonize", "limits.content_length", "limits.buffer_size",
        "limits.handler_targets", "limits.header_count", "limits.min_ping",
        "limits.min_read_rate", "limits.min_write_rate", "limits.kill_limit",
        "limits.tick_timer", "limits.client_read_retries", "limits.connection_stack_size",
        "limits.handler_stack", "limits.url_path", "limits.host_name", "limits.mime_ext_len",
        "upload.temp_store", "upload.temp_store_mode", "upload.stream",
        "download.flow_control", "disable.access_logging", "no_clobber_xff", "request.relaxed",
        "control_port", "zeromq.threads", "net.tcp_keepalive", "superpoll.max_fd",
        "superpoll.hot_dividend", "certdir", "ssl_ciphers", "ssl.ca_chain",
        "ssl.verify_optional", "ssl.verify_required", "limits.dir_max_path",
        "limits.dir_send_buffer", "limits.fdtask_stack", "limits.proxy_read_retries",
        "limits.proxy_read_retry_warn",
    }
)  # fmt: skip
# Mongrel2 parses integer settings with atoi(): anything outside a C int is garbage.
_C_INT_MIN, _C_INT_MAX = -(2**31), 2**31 - 1
# Characters that could break out of a double-quoted string in the m2sh config language.
_UNSAFE_CHARS = frozenset('"\\\n\r')


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quote(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {type(value).__name__}")
    if any(ch in _UNSAFE_CHARS or ch < " " or ch == "\x7f" for ch in value):
        raise ValueError(
            f"{what} must not contain quotes, backslashes or control characters: {value!r}"
        )
    try:
        value.encode("utf-8")  # a lone surrogate (os.fsdecode of bad bytes) cannot be written
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode: {value!r}") from None
    return f'"{value}"'


def _int_setting(settings: dict[str, str | int], key: str, default: int) -> int:
    value = settings.get(key, default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"setting {key!r} must be an integer, got {value!r}") from None


def _check_port(port: object, what: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what} must be an int in 1..65535, got {port!r}")


@dataclass(frozen=True)
class StaticDir:
    """A route target that Mongrel2 serves itself from disk, without calling the handler.

    ``base`` is relative to the run directory (Mongrel2's chroot) and must end with ``/``:
    without it ``m2sh`` only logs an error and Mongrel2 starts without the route.
    """

    base: str
    index_file: str = "index.html"
    default_ctype: str = "text/plain"

    def validate(self) -> None:
        """Raise ValueError if Mongrel2 would reject or misread this directory."""
        _quote(self.base, "StaticDir.base")
        _quote(self.index_file, "StaticDir.index_file")
        _quote(self.default_ctype, "StaticDir.default_ctype")
        if not self.base.endswith("/"):
            raise ValueError(f"StaticDir.base must end with '/', got {self.base!r}")
        if self.base.startswith("/"):
            raise ValueError(f"StaticDir.base must be relative to the run directory: {self.base!r}")
        if ".." in Path(self.base).parts:
            raise ValueError(f"StaticDir.base must not contain '..': {self.base!r}")

    def render(self) -> str:
        return (
            f"Dir(base={_quote(self.base, 'base')}, "
            f"index_file={_quote(self.index_file, 'index_file')}, "
            f"default_ctype={_quote(self.default_ctype, 'default_ctype')})"
        )


Route = Literal["handler"] | StaticDir
"""A route target: the literal ``'handler'`` (the app's handler) or a ``StaticDir``."""


@dataclass
class Mongrel2Config:
    """One Mongrel2 server with one ZeroMQ handler, rendered as an ``m2sh`` config file.

    Only what a Brubeck deployment needs is modelled; ``settings`` passes anything else through.
    """

    send_spec: str
    """Mongrel2 binds a PUSH socket here; the handler's PULL socket connects to it."""
    recv_spec: str
    """Mongrel2 binds a SUB socket here; the handler's PUB socket connects to it."""
    send_ident: str = field(default_factory=lambda: str(uuid.uuid4()))
    port: int = 6767
    bind_addr: str = "127.0.0.1"
    server_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    host: str = "localhost"
    routes: dict[str, Route] = field(default_factory=lambda: {"/": "handler"})
    settings: dict[str, str | int] = field(default_factory=dict)
    access_log: bool = True

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def on_free_ports(cls, **overrides: object) -> Mongrel2Config:
        """A config on 127.0.0.1 with free HTTP and ZeroMQ ports, so runs never collide."""
        values: dict[str, object] = {
            "send_spec": f"tcp://127.0.0.1:{free_port()}",
            "recv_spec": f"tcp://127.0.0.1:{free_port()}",
            "port": free_port(),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def effective_settings(self) -> dict[str, str | int]:
        """Defaults, then ``access_log``, then the explicit ``settings`` (which win)."""
        merged = dict(DEFAULT_SETTINGS)
        if not self.access_log:
            merged["disable.access_logging"] = 1
        merged.update(self.settings)
        return merged

    def validate(self) -> None:
        """Raise ValueError with a readable message for anything m2sh or Mongrel2 would reject."""
        for name in ("send_spec", "recv_spec"):
            spec = getattr(self, name)
            if not isinstance(spec, str) or not _SPEC_RE.fullmatch(spec):
                raise ValueError(
                    f"{name} must be a ZeroMQ endpoint like 'tcp://127.0.0.1:9997', got {spec!r}"
                )
        if self.send_spec == self.recv_spec:
            raise ValueError(f"send_spec and recv_spec must differ, both are {self.send_spec!r}")
        for name in ("send_ident", "server_uuid"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _IDENT_RE.fullmatch(value):
                raise ValueError(f"{name} may only contain [A-Za-z0-9-], got {value!r}")
        _check_port(self.port, "port")
        try:
            ipaddress.ip_address(self.bind_addr)
        except ValueError:
            raise ValueError(f"bind_addr must be an IP address, got {self.bind_addr!r}") from None
        _quote(self.host, "host")
        if not self.host or any(ch.isspace() for ch in self.host):
            raise ValueError(f"host must be a non-empty name without spaces, got {self.host!r}")
        if not isinstance(self.routes, dict) or not self.routes:
            raise ValueError("routes must be a non-empty dict of pattern -> 'handler' | StaticDir")
        for pattern, target in self.routes.items():
            _quote(pattern, "route pattern")
            if not pattern:
                raise ValueError("route patterns must not be empty")
            if isinstance(target, StaticDir):
                target.validate()
            elif target != "handler":
                raise ValueError(
                    f"route {pattern!r} must map to 'handler' or a StaticDir, got {target!r}"
                )
        for key, value in self.effective_settings.items():
            if not isinstance(key, str) or not _SETTING_KEY_RE.fullmatch(key):
                raise ValueError(f"setting names may only contain [A-Za-z0-9_.], got {key!r}")
            if isinstance(value, str):
                _quote(value, f"setting {key!r}")
            elif not isinstance(value, int):
                raise ValueError(f"setting {key!r} must be a str or an int, got {value!r}")
            elif not _C_INT_MIN <= value <= _C_INT_MAX:
                raise ValueError(f"setting {key!r} must fit a 32-bit C int, got {value!r}")
            if key not in KNOWN_SETTINGS:
                warnings.warn(
                    f"Mongrel2 1.12 does not read setting {key!r}; it will have no effect",
                    UserWarning,
                    stacklevel=2,
                )
        content_length = _int_setting(self.effective_settings, "limits.content_length", 20480)
        buffer_size = _int_setting(self.effective_settings, "limits.buffer_size", 4096)
        if content_length < buffer_size:
            # Observed with 1.12.2: bodies just over such a limit stall (no upload-done ever
            # arrives) and larger ones reach the temp file with a few dozen bytes corrupted.
            raise ValueError(
                f"limits.content_length ({content_length}) must be >= limits.buffer_size "
                f"({buffer_size}): Mongrel2 stalls or corrupts uploads below that"
            )
        if self.effective_settings["server.daemonize"] not in (0, "0"):
            # Mongrel2 would fork away from any supervisor; it also logs nowhere useful then.
            raise ValueError("server.daemonize must be 0: the process is meant to be supervised")

    def render(self) -> str:
        """The config text for ``m2sh load``: tnetstring protocol, chroot in the run directory."""
        self.validate()
        dirs: dict[StaticDir, str] = {}
        lines = [
            "# Generated by brubeck.mongrel2 (a managed Mongrel2 rewrites this file each start).",
            f"handler = Handler(send_spec={_quote(self.send_spec, 'send_spec')},",
            f"                  send_ident={_quote(self.send_ident, 'send_ident')},",
            f"                  recv_spec={_quote(self.recv_spec, 'recv_spec')},",
            '                  recv_ident="", protocol="tnetstring")',
        ]
        route_items = []
        for pattern, target in self.routes.items():
            if target == "handler":
                name = "handler"
            else:
                assert isinstance(target, StaticDir)
                if target not in dirs:
                    dirs[target] = f"dir_{len(dirs)}"
                    lines.append(f"{dirs[target]} = {target.render()}")
                name = dirs[target]
            route_items.append(f"{_quote(pattern, 'route pattern')}: {name}")
        host = _quote(self.host, "host")
        settings = ", ".join(
            f"{_quote(k, 'setting')}: {_quote(v, k) if isinstance(v, str) else int(v)}"
            for k, v in self.effective_settings.items()
        )
        lines += [
            "main = Server(",
            f"    uuid={_quote(self.server_uuid, 'server_uuid')},",
            '    access_log="/logs/access.log",',
            '    error_log="/logs/error.log",',
            '    chroot="./",',
            '    pid_file="/run/mongrel2.pid",',
            f"    default_host={host},",
            '    name="main",',
            f"    bind_addr={_quote(self.bind_addr, 'bind_addr')},",
            f"    port={int(self.port)},",
            f"    hosts=[Host(name={host}, routes={{{', '.join(route_items)}}})]",
            ")",
            f"settings = {{{settings}}}",
            "servers = [main]",
            "",
        ]
        return "\n".join(lines)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Mongrel2Process:
    """A Mongrel2 server started in, and confined to, its own run directory.

    As root Mongrel2 chroots into ``run_dir`` (its logs land in ``run_dir/logs/error.log``); as
    another user it runs in "test mode" in that directory and logs to ``logs/stdout.log``.
    """

    def __init__(
        self,
        config: Mongrel2Config,
        run_dir: str | Path,
        *,
        mongrel2_bin: str = "mongrel2",
        m2sh_bin: str = "m2sh",
    ) -> None:
        config.validate()
        self.config = config
        self._run_dir = Path(run_dir).absolute()
        self.mongrel2_bin = mongrel2_bin
        self.m2sh_bin = m2sh_bin
        self._popen: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        # Mongrel2 can only chroot as root; otherwise upload paths are not chroot-relative.
        self._chrooted = os.geteuid() == 0

    # -- paths and addresses ------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self._run_dir

    @property
    def pid_file(self) -> Path:
        return self._run_dir / "run" / "mongrel2.pid"

    @property
    def error_log(self) -> Path:
        return self._run_dir / "logs" / "error.log"

    @property
    def stdout_log(self) -> Path:
        return self._run_dir / "logs" / "stdout.log"

    @property
    def upload_dir(self) -> Path:
        """Where Mongrel2 writes request bodies too large to send over ZeroMQ."""
        store = str(self.config.effective_settings["upload.temp_store"])
        return self.resolve_path(store).parent

    @property
    def pid(self) -> int | None:
        """Mongrel2's pid while it runs (read from its pid file, which is authoritative)."""
        return self._pid

    @property
    def url(self) -> str:
        """Base URL for clients, e.g. ``http://127.0.0.1:6767``."""
        host = self._connect_host()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.config.port}"

    def _connect_host(self) -> str:
        addr = ipaddress.ip_address(self.config.bind_addr)
        if addr.is_unspecified:
            return "127.0.0.1" if addr.version == 4 else "::1"
        return str(addr)

    def resolve_path(self, path: str) -> Path:
        """Map a path Mongrel2 reports (e.g. an upload's temp file) to a real filesystem path.

        Mongrel2 reports paths inside its chroot (``/tmp/upload.X`` or ``tmp/upload.X``). Raises
        ValueError for a path that would leave the run directory, so a handler never deletes or
        reads a file outside it because of a forged header.
        """
        if os.path.isabs(path) and not self._chrooted:
            # Not chrooted, an absolute path is literal: accept it only in the configured
            # temp_store directory, never anywhere a forged header points.
            store = str(self.config.effective_settings.get("upload.temp_store", ""))
            literal = Path(os.path.normpath(path))
            if not os.path.isabs(store) or literal.parent != Path(os.path.dirname(store)):
                raise ValueError(f"{path!r} is not in Mongrel2's upload directory")
            return literal
        return resolve_reported_path(self._run_dir, path)

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Load the config, start Mongrel2 and return once it accepts HTTP connections."""
        if self._popen is not None:
            raise RuntimeError(f"{self!r} was already started")
        mongrel2 = shutil.which(self.mongrel2_bin)
        m2sh = shutil.which(self.m2sh_bin)
        if mongrel2 is None or m2sh is None:
            missing = self.mongrel2_bin if mongrel2 is None else self.m2sh_bin
            raise FileNotFoundError(
                f"{missing!r} not found on PATH; install Mongrel2 with `{INSTALL_HINT}`"
            )
        for sub in ("logs", "run", "tmp"):
            (self._run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self._clear_pid_file()
        self._check_zmq_ports_free()
        self._load_config(m2sh)

        with open(self.stdout_log, "ab") as out:
            self._popen = subprocess.Popen(
                [mongrel2, "config.sqlite", self.config.server_uuid],
                cwd=self._run_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _clear_pid_file(self) -> None:
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return
        if text.isdigit() and _pid_alive(int(text)):
            raise RuntimeError(
                f"Mongrel2 already runs in {self._run_dir} (pid {text} in {self.pid_file})"
            )
        # A stale file (left by an unclean exit) would make Mongrel2 refuse to write its own.
        self.pid_file.unlink()

    def _check_zmq_ports_free(self) -> None:
        # Mongrel2 only logs "Failed to bind ... trying again" for a taken handler port and then
        # serves HTTP with no handler behind it: requests would hang, so refuse up front.
        for spec in (self.config.send_spec, self.config.recv_spec):
            host, sep, port = spec.removeprefix("tcp://").rpartition(":")
            if not spec.startswith("tcp://") or not sep or not port.isdigit():
                continue
            host = host.strip("[]")
            host = "0.0.0.0" if host == "*" else host
            try:
                family = (
                    socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
                )
            except ValueError:
                continue  # a host name or an interface: let zmq resolve it
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as zmq does
                try:
                    probe.bind((host, int(port)))
                except OSError as exc:
                    raise RuntimeError(
                        f"cannot bind {spec} for Mongrel2 ({exc.strerror}): is another "
                        "Mongrel2 or program using it?"
                    ) from None

    def _load_config(self, m2sh: str) -> None:
        conf = self._run_dir / "mongrel2.conf"
        db = self._run_dir / "config.sqlite"
        conf.write_text(self.config.render())
        db.unlink(missing_ok=True)
        env = {**os.environ, "LOGNAME": os.environ.get("LOGNAME") or "brubeck"}
        result = subprocess.run(
            [m2sh, "load", "-config", conf.name, "-db", db.name],
            cwd=self._run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        output = (result.stdout + result.stderr).strip()
        # m2sh exits 0 even when the file does not parse, so look at its log and the db too.
        errors = [line for line in output.splitlines() if "[ERROR]" in line]
        if result.returncode != 0 or errors or not self._db_has_server(db):
            raise RuntimeError(f"m2sh load failed for {conf} (exit {result.returncode}):\n{output}")

    def _db_has_server(self, db: Path) -> bool:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        except sqlite3.Error:
            return False
        try:
            row = conn.execute(
                "SELECT count(*) FROM server WHERE uuid = ?", (self.config.server_uuid,)
            ).fetchone()
            return bool(row and row[0])
        except sqlite3.Error:
            return False
        finally:
            conn.close()

    def _wait_ready(self, timeout: float) -> None:
        assert self._popen is not None
        deadline = time.monotonic() + timeout
        address = (self._connect_host(), self.config.port)
        while True:
            if self._popen.poll() is not None:
                raise RuntimeError(
                    f"mongrel2 exited with code {self._popen.returncode} during startup\n"
                    + self._log_tails()
                )
            if self._pid is None:
                text = self.pid_file.read_text().strip() if self.pid_file.exists() else ""
                if text.isdigit():
                    self._pid = int(text)
            if self._pid is not None:
                try:
                    with socket.create_connection(address, timeout=0.5):
                        return
                except OSError:
                    pass
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"mongrel2 not ready on {address[0]}:{address[1]} after {timeout}s\n"
                    + self._log_tails()
                )
            time.sleep(0.02)

    def _log_tails(self) -> str:
        parts = []
        for path in (self.stdout_log, self.error_log):
            tail = _tail(path)
            if tail:
                parts.append(f"--- {path} (tail) ---\n{tail}")
        return "\n".join(parts) or "(no log output)"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop Mongrel2 gracefully (SIGINT), then with SIGKILL if needed. Safe to call twice."""
        popen, self._popen = self._popen, None
        pid, self._pid = self._pid, None
        if popen is None:
            return
        pid = pid or popen.pid
        try:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(popen.pid, signal.SIGKILL)
                    popen.wait()
        finally:
            # An unclean exit can leave the pid file behind; it must not block the next start.
            if self.pid_file.exists() and not _pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> Mongrel2Process:
        if self._popen is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._pid}" if self.running else "stopped"
        return f"<Mongrel2Process {state} url={self.url} run_dir={str(self._run_dir)!r}>"
