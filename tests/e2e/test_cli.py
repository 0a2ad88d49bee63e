"""The ``brubeck`` command: serve the hello example behind a Mongrel2 it runs itself, then stop."""

import contextlib
import importlib.util
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from brubeck.mongrel2 import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/hello/app.py:app"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class OutputLines:
    """Collect a child's output lines in a thread, so the test can wait for one without blocking."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if text in line:
                return line
        pytest.fail(f"{text!r} not printed within {timeout}s; output:\n{''.join(self.lines)}")

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)


NEEDS_UVLOOP = pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"
)


@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=NEEDS_UVLOOP)])
def test_run_with_mongrel2_serves_and_stops_on_sigterm(tmp_path, loop):
    port, pull, pub = free_port(), free_port(), free_port()
    run_dir = tmp_path / "site"
    command = [
        sys.executable, "-m", "brubeck", "run", EXAMPLE, "--mongrel2",
        "--port", str(port),
        "--pull", f"tcp://127.0.0.1:{pull}",
        "--pub", f"tcp://127.0.0.1:{pub}",
        "--run-dir", str(run_dir),
        "--loop", loop,
    ]  # fmt: skip
    m2_pid = None
    with subprocess.Popen(
        command,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        output = OutputLines(proc.stdout)
        try:
            url = f"http://127.0.0.1:{port}"
            output.wait_for(url, timeout=15)
            with httpx.Client(base_url=url, timeout=10) as client:
                resp = client.get("/brubeck")
                user = client.get("/user/42")  # an async def handler
            assert resp.status_code == 200
            assert resp.text == "Take five"
            assert user.json() == {"user": "42"}

            m2_pid = int((run_dir / "run" / "mongrel2.pid").read_text())
            assert pid_alive(m2_pid)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:  # only if the test failed: leave nothing behind
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if m2_pid is not None and pid_alive(m2_pid):
                os.kill(m2_pid, signal.SIGKILL)
            output.join(5)
    log = "".join(output.lines)
    assert code == 0, log
    assert elapsed < 5, elapsed
    assert not pid_alive(m2_pid), log
    assert not (run_dir / "run" / "mongrel2.pid").exists()
    assert "Traceback" not in log, log


def brubeck_commands() -> list:
    commands = [pytest.param([sys.executable, "-m", "brubeck"], id="python-m")]
    script = shutil.which("brubeck")
    commands.append(
        pytest.param(
            [script] if script else [],
            id="script",
            marks=pytest.mark.skipif(script is None, reason="brubeck script not installed"),
        )
    )
    return commands


@pytest.mark.parametrize("brubeck", brubeck_commands())
def test_mongrel2_config_prints_a_loadable_config(brubeck, tmp_path):
    result = subprocess.run(
        [*brubeck, "mongrel2", "config", EXAMPLE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    config = result.stdout
    assert 'protocol="tnetstring"' in config
    assert 'send_spec="tcp://127.0.0.1:9999"' in config  # the example's own addresses
    assert 'recv_spec="tcp://127.0.0.1:9998"' in config
    assert "port=6767" in config

    # m2sh accepts it as printed.
    (tmp_path / "mongrel2.conf").write_text(config)
    env = {**os.environ, "LOGNAME": os.environ.get("LOGNAME") or "brubeck"}
    subprocess.run(
        ["m2sh", "load", "-config", "mongrel2.conf", "-db", "config.sqlite"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    with contextlib.closing(sqlite3.connect(tmp_path / "config.sqlite")) as db:
        rows = db.execute("SELECT send_spec, recv_spec, protocol FROM handler").fetchall()
        ports = db.execute("SELECT port FROM server").fetchall()
    assert rows == [("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998", "tnetstring")]
    assert ports == [(6767,)]
