"""Run N handler processes of one app and keep them running: ``brubeck run --workers N``.

Why: Mongrel2 spreads requests over every handler connected to its endpoints, so more
processes give Python more cores; a process that dies must come back without the others
noticing, and a stop must let each one finish what it holds.

Rules of this module:
- workers are fresh interpreters (``python -m brubeck run ...``), never forks: ``--reload``
  gets new code, and no ZeroMQ context or event loop crosses a fork;
- the supervisor never touches ZeroMQ or HTTP: it starts, watches, signals and restarts;
- a worker that exits while the supervisor runs is restarted: at once after a clean exit of a
  worker that had been up a while (someone restarted it on purpose), otherwise after a delay
  that doubles with each quick failure, up to a cap;
- a worker that keeps failing quickly (``Backoff.give_up_after`` times in a row) is a fault no
  restart will mend: the supervisor stops every worker and exits 1, so that the service
  manager sees the failure instead of a supervisor that looks healthy;
- SIGTERM or SIGINT is passed on to every worker, which stops gracefully; a second one kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .reloader import Reloader

__all__ = ["Backoff", "Supervisor", "stop_when_orphaned"]

log = logging.getLogger("brubeck.supervisor")

#: Set in each worker's environment: the supervisor's pid and the worker's number.
SUPERVISOR_PID_ENV = "BRUBECK_SUPERVISOR_PID"
WORKER_ID_ENV = "BRUBECK_WORKER_ID"


@dataclass(frozen=True)
class Backoff:
    """Restart delays for workers that keep failing.

    Args:
        base: the delay after a first quick failure, in seconds; it doubles with each one.
        cap: the longest delay.
        healthy_after: a worker up this long has recovered: its failure count starts over.
        give_up_after: quick failures in a row of one worker after which the supervisor
            stops them all and exits 1 (10: about two and a half minutes of retries with
            the default delays); 0 never gives up.
    """

    base: float = 0.5
    cap: float = 30.0
    healthy_after: float = 10.0
    give_up_after: int = 10

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap < math.inf and 0 <= self.healthy_after < math.inf):
            raise ValueError(
                f"Backoff needs 0 < base <= cap and healthy_after >= 0, finite: {self}"
            )
        if isinstance(self.give_up_after, bool) or not isinstance(self.give_up_after, int):
            raise TypeError(f"give_up_after must be an int, got {self.give_up_after!r}")
        if self.give_up_after < 0:
            raise ValueError(f"give_up_after must be 0 (never) or more, got {self.give_up_after}")

    def gives_up(self, failures: int) -> bool:
        return 0 < self.give_up_after <= failures

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.cap, self.base * 2 ** min(failures - 1, 30))


class _Slot:
    __slots__ = ("failures", "index", "process", "restart_at", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.failures = 0
        self.restart_at: float | None = 0.0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return "exited" if code == 0 else f"exited with code {code}"


class Supervisor:
    """Start ``workers`` copies of ``command``; restart them; stop them all on a signal.

    Args:
        command: the worker's command line (an interpreter and its arguments).
        workers: how many to keep running.
        env: the workers' environment (this process's by default); each also gets
            ``BRUBECK_SUPERVISOR_PID`` and ``BRUBECK_WORKER_ID`` (1 to N).
        shutdown_timeout: how long a worker may take to stop before it is killed; give it
            the app's own ``shutdown_timeout`` plus a margin.
        reloader: when given, a change it reports restarts every worker (``--reload``).
        backoff: restart delays for crashing workers.
        poll_interval: how often exits and changes are checked, in seconds.
        env_for_generation: more environment for the workers of each set, by its number (0
            first; a SIGHUP or a reload starts the next): for what the set being replaced,
            still finishing its requests, must not share with the new one (endpoints).
    """

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        *,
        env: Mapping[str, str] | None = None,
        shutdown_timeout: float = 15.0,
        reloader: Reloader | None = None,
        backoff: Backoff | None = None,
        poll_interval: float = 0.1,
        env_for_generation: Callable[[int], Mapping[str, str]] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        # NaN fails every comparison: it would never kill a worker, or never sleep.
        if not (0 <= shutdown_timeout < math.inf and 0 < poll_interval < math.inf):
            raise ValueError(
                f"need a finite shutdown_timeout >= 0 and poll_interval > 0, got "
                f"{shutdown_timeout!r}, {poll_interval!r}"
            )
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.shutdown_timeout = shutdown_timeout
        self.reloader = reloader
        self.backoff = backoff or Backoff()
        self.poll_interval = poll_interval
        self.slots = [_Slot(index) for index in range(1, workers + 1)]
        self._retiring: list[tuple[subprocess.Popen[bytes], float]] = []
        self._stop_signal: int | None = None
        self._force = False
        self._restart_all = False
        self._gave_up = False
        self._env_for_generation = env_for_generation
        self._generation = 0

    @property
    def pids(self) -> list[int]:
        """The pids of the workers running now."""
        return [s.process.pid for s in self.slots if s.process and s.process.poll() is None]

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._restart_all = True
        elif self._stop_signal is None:
            self._stop_signal = signum
        else:
            self._force = True

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT, then stop the workers; returns the exit code.

        The code is 0 after a signal, 1 when a worker kept failing and the supervisor gave up.
        """
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            while self._stop_signal is None:
                self._tick(time.monotonic())
                time.sleep(self.poll_interval)
            return self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()  # only does something if the loop above raised

    def _tick(self, now: float) -> None:
        for slot in self.slots:
            process = slot.process
            if process is not None and (code := process.poll()) is not None:
                self._exited(slot, code, now)
            if self._gave_up:
                return
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot, now)
        self._reap_retiring(now)
        changed = self.reloader.changed() if self.reloader is not None else []
        if changed or self._restart_all:
            if changed:
                shown = ", ".join(os.path.relpath(p) for p in changed[:3])
                more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
                log.info("%s%s changed: restarting the workers", shown, more)
            else:
                log.info("SIGHUP: restarting the workers")
            self._restart_all = False
            self._replace_all(now)

    def _spawn(self, slot: _Slot, now: float) -> None:
        env = {
            **self.env,
            **(self._env_for_generation(self._generation) if self._env_for_generation else {}),
            SUPERVISOR_PID_ENV: str(os.getpid()),
            WORKER_ID_ENV: str(slot.index),
        }
        try:
            slot.process = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            slot.failures += 1
            if self._give_up_on(slot, f"could not be started ({exc})"):
                return
            delay = self.backoff.delay(slot.failures)
            log.error("could not start worker %d: %s; retrying in %.1fs", slot.index, exc, delay)
            slot.restart_at = now + delay
            return
        slot.started = now
        slot.restart_at = None
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def _exited(self, slot: _Slot, code: int, now: float) -> None:
        assert slot.process is not None
        pid, uptime = slot.process.pid, now - slot.started
        slot.process = None
        if uptime >= self.backoff.healthy_after:
            slot.failures = 0
        if code == 0 and uptime >= 1.0:
            delay = 0.0  # stopped on purpose (a rolling restart): replace it now
        else:
            slot.failures += 1
            if self._give_up_on(slot, f"{describe_exit(code)} after {uptime:.1f}s"):
                return
            delay = self.backoff.delay(slot.failures)
        slot.restart_at = now + delay
        level = logging.INFO if code == 0 else logging.WARNING
        log.log(
            level,
            "worker %d (pid %d) %s after %.1fs; restarting it%s",
            slot.index,
            pid,
            describe_exit(code),
            uptime,
            f" in {delay:.1f}s" if delay else "",
        )

    def _give_up_on(self, slot: _Slot, what: str) -> bool:
        """Stop supervising if ``slot`` has failed too often in a row; True if so."""
        if not self.backoff.gives_up(slot.failures):
            return False
        log.error(
            "worker %d %s: %d quick failures in a row; giving up and stopping all workers",
            slot.index,
            what,
            slot.failures,
        )
        slot.restart_at = None
        self._gave_up = True
        if self._stop_signal is None:
            self._stop_signal = signal.SIGTERM
        return True

    def _replace_all(self, now: float) -> None:
        """Start new workers and stop the old ones, which finish what they hold."""
        self._generation += 1
        for slot in self.slots:
            old = slot.process
            if old is not None and old.poll() is None:
                self._signal(old, signal.SIGTERM)
                self._retiring.append((old, now))
            slot.process = None
            slot.failures = 0
            self._spawn(slot, now)

    def _reap_retiring(self, now: float) -> None:
        still = []
        for process, since in self._retiring:
            if process.poll() is not None:
                continue
            if now - since > self.shutdown_timeout:
                log.warning("worker pid %d did not stop in time: killing it", process.pid)
                self._signal(process, signal.SIGKILL)
                process.wait()
                continue
            still.append((process, since))
        self._retiring = still

    def _shutdown(self) -> int:
        sig = self._stop_signal or signal.SIGTERM
        running = [s.process for s in self.slots if s.process is not None]
        running += [process for process, _ in self._retiring]
        why = "giving up" if self._gave_up else signal.Signals(sig).name
        log.info("%s: stopping %d workers", why, len(running))
        for process in running:
            self._signal(process, sig)
        deadline = time.monotonic() + self.shutdown_timeout
        while any(p.poll() is None for p in running):
            if self._force or time.monotonic() >= deadline:
                late = [p.pid for p in running if p.poll() is None]
                log.warning("killing workers that did not stop: %s", late)
                for process in running:
                    self._signal(process, signal.SIGKILL)
                break
            time.sleep(0.02)
        codes = [p.wait() for p in running]
        for slot in self.slots:
            slot.process = None
        self._retiring = []
        failed = [code for code in codes if code not in (0, -signal.SIGTERM, -signal.SIGINT)]
        if failed:
            log.warning("workers %s", ", ".join(describe_exit(c) for c in failed))
        return 1 if self._gave_up else 0

    def _kill_all(self) -> None:
        processes = [s.process for s in self.slots if s.process is not None]
        processes += [process for process, _ in self._retiring]
        for process in processes:
            if process.poll() is None:
                self._signal(process, signal.SIGKILL)
                process.wait()

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def stop_when_orphaned(app: Any, parent_pid: int, interval: float = 1.0) -> None:
    """Make a worker stop gracefully if its supervisor dies without stopping it (SIGKILL).

    Registers a startup hook on ``app`` that checks, every ``interval`` seconds, that the
    worker's parent is still ``parent_pid``.
    """
    watchers: list[asyncio.Task[None]] = []  # holds the task: the loop keeps weak references

    async def watch() -> None:
        while os.getppid() == parent_pid:
            await asyncio.sleep(interval)
        log.warning("the supervisor (pid %d) is gone: stopping", parent_pid)
        app.stop()

    def start() -> None:
        watchers.append(asyncio.get_running_loop().create_task(watch()))

    app.on_startup(start)
