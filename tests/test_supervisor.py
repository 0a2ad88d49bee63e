"""supervisor.py: restarts, back-off and signal forwarding, with tiny stand-in workers."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from brubeck.supervisor import Backoff, Supervisor, describe_exit


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base=0.5, cap=4)
    assert [backoff.delay(n) for n in range(7)] == [0, 0.5, 1, 2, 4, 4, 4]
    assert Backoff().delay(10_000) == 30


def test_exits_are_described() -> None:
    assert describe_exit(0) == "exited"
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"


def test_a_crashing_worker_is_restarted_later_each_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "brubeck.supervisor")
    command = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor(command, 1, backoff=Backoff(base=0.5, cap=1))
    slot = supervisor.slots[0]
    supervisor._tick(0.0)
    first = slot.process
    assert first is not None
    first.wait(10)
    supervisor._tick(0.1)  # seen exiting: first failure, half a second
    assert slot.process is None and slot.restart_at == pytest.approx(0.6)
    supervisor._tick(0.5)
    assert slot.process is None
    supervisor._tick(0.6)
    assert slot.process is not None and slot.process is not first
    slot.process.wait(10)
    supervisor._tick(0.7)  # second failure: one second (the cap)
    assert slot.restart_at == pytest.approx(1.7)
    expected = f"worker 1 (pid {first.pid}) exited with code 3 after 0.1s; restarting it in 0.5s"
    assert expected in caplog.text


def test_a_clean_exit_after_a_while_is_replaced_at_once() -> None:
    supervisor = Supervisor([sys.executable, "-c", "pass"], 1)
    slot = supervisor.slots[0]
    supervisor._tick(0.0)
    first = slot.process
    assert first is not None
    first.wait(10)
    supervisor._tick(30.0)  # in the same tick: seen gone, replaced
    try:
        assert slot.process is not None and slot.process is not first
        assert slot.failures == 0 and slot.started == 30.0
    finally:
        supervisor._kill_all()


def test_sigterm_is_passed_on_and_waited_for(tmp_path: Path) -> None:
    """Each worker gets the signal, takes its time to stop, and the supervisor waits for it."""
    worker = (
        "import signal, sys, time, pathlib\n"
        "def stop(*_):\n"
        "    time.sleep(0.2)\n"
        f"    pathlib.Path({str(tmp_path)!r}, str(__import__('os').getpid())).write_text('done')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "time.sleep(30)\n"
    )
    supervisor = Supervisor([sys.executable, "-c", worker], 2, shutdown_timeout=10)

    def stop_soon() -> None:
        deadline = time.monotonic() + 10
        while len(supervisor.pids) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the workers install their handler
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_soon, daemon=True).start()
    started = time.monotonic()
    assert supervisor.run() == 0
    assert time.monotonic() - started < 8
    assert sorted(p.read_text() for p in tmp_path.iterdir()) == ["done", "done"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
