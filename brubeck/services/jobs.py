"""Fire-and-forget jobs over PUSH/PULL: a producer deals them round robin to a pool of workers.

Rules of this module:
- a job is one payload (``payload.py``: an encoding tag frame, then the data); nothing else
  travels, so a worker in any language reads two frames (or one, untagged, as bytes);
- the producer's PUSH deals each job to the next connected worker that has room, which is
  how a new worker process joins the rotation: it connects, and gets the next jobs;
- queues are bounded: ``hwm`` jobs per worker link at the producer. ``push`` waits up to
  ``timeout`` for room, then raises ``ServiceUnavailable``; it never drops a job silently and
  never waits forever;
- delivery is at most once: a job handed to a worker that dies with it is lost. Use a service
  (``ServiceClient``) when the caller must know the work was done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ..loops import run_until_signal
from .errors import PayloadError, ServiceUnavailable
from .payload import decode, encode
from .running import Handler, being_cancelled, call_handler
from .sockets import bind_or_connect

log = logging.getLogger("brubeck.services.jobs")

H = TypeVar("H", bound=Callable[..., Any])


class JobQueue:
    """The producer's end: ``await jobs.push(payload)`` hands a job to the worker pool.

    Args:
        address: where workers find the queue, e.g. ``tcp://127.0.0.1:5560``.
        bind: bind ``address`` (the default: workers connect to it) or connect to it (when
            the workers' side binds, e.g. a results collector).
        hwm: most jobs queued per connected worker before ``push`` has to wait.
        timeout: default seconds ``push`` waits for room before ``ServiceUnavailable``.
        context: the ZeroMQ context (by default the shared asyncio one).
    """

    def __init__(
        self,
        address: str,
        *,
        bind: bool = True,
        hwm: int = 1000,
        timeout: float = 5.0,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if not (hwm >= 1 and 0 <= timeout < math.inf):  # NaN fails every comparison
            raise ValueError(
                f"need hwm >= 1 and timeout >= 0, got {hwm}, {timeout}: the timeout is a finite "
                f"number of seconds"
            )
        self.address = address
        self.bind = bind
        self.hwm = hwm
        self.timeout = timeout
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._peers: set[int] = set()
        self._peers_changed: asyncio.Event | None = None

    def open(self) -> None:
        """Create the socket (``push`` does it on first use); call it inside the event loop."""
        if self._socket is not None:
            return
        ctx = self._context or zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 1000)
        # Connected, not bound: queue nothing for a peer that is not there.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        monitor = sock.get_monitor_socket(
            zmq.EVENT_ACCEPTED
            | zmq.EVENT_CONNECTED
            | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_DISCONNECTED
        )
        try:
            self.address = bind_or_connect(
                sock, self.address, bind=self.bind, owner="the job queue"
            )
        except OSError:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            raise
        self._socket, self._monitor = sock, monitor
        self._peers_changed = asyncio.Event()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(monitor))

    @property
    def workers(self) -> int:
        """Workers connected now (over tcp or ipc; inproc peers are not counted)."""
        return len(self._peers)

    async def wait_for_workers(self, count: int = 1, timeout: float | None = None) -> None:
        """Return once ``count`` workers are connected; ``ServiceUnavailable`` after ``timeout``."""
        self.open()
        assert self._peers_changed is not None
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                while len(self._peers) < count:
                    self._peers_changed.clear()
                    await self._peers_changed.wait()
        except TimeoutError:
            raise ServiceUnavailable(
                f"{len(self._peers)} of {count} job workers connected to {self.address} in time"
            ) from None

    async def push(self, payload: Any, *, timeout: float | None = None) -> None:
        """Queue one job; wait up to ``timeout`` for room, then raise ``ServiceUnavailable``."""
        frames = encode(payload)
        self.open()
        sock = self._socket
        assert sock is not None
        if send_now(sock, frames):
            return
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            await sock.poll(max(1, int(left * 1000)), zmq.POLLOUT)  # type: ignore[call-arg]
            if send_now(sock, frames):
                return
        if self._peers:
            why = f"all {len(self._peers)} connected workers have {self.hwm} jobs waiting"
        else:
            why = "no worker is connected"
        raise ServiceUnavailable(
            f"no job worker took a job at {self.address} within {timeout:g}s: {why}. Start a "
            f"worker, or give push() a longer timeout"
        )

    async def close(self, linger: float = 1.0) -> None:
        """Close; jobs still queued get ``linger`` seconds to reach a worker."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if self._socket is not None:
            assert self._monitor is not None
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._socket.close(linger=int(linger * 1000))
            self._socket = self._monitor = None
            self._peers.clear()

    async def __aenter__(self) -> JobQueue:
        self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Keep ``_peers``, the file descriptors of workers past the ZMTP handshake, up to date.

        A handshake event does not name its connection; connections finish their handshakes
        in the order they opened, so the oldest one still shaking hands is the one.
        """
        assert self._peers_changed is not None
        shaking: dict[int, None] = {}
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            kind, fd = event["event"], int(event["value"])
            if kind in (zmq.EVENT_ACCEPTED, zmq.EVENT_CONNECTED):
                shaking[fd] = None
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and shaking:
                oldest = next(iter(shaking))
                del shaking[oldest]
                self._peers.add(oldest)
            elif kind == zmq.EVENT_DISCONNECTED:
                shaking.pop(fd, None)
                self._peers.discard(fd)
            self._peers_changed.set()


class JobWorker:
    """The worker's end: takes jobs from a ``JobQueue`` and runs a handler on each payload.

    Args:
        address: the queue's address.
        handler: ``f(payload)``, ``def`` or ``async def``; its return value is ignored. Or use
            ``@worker.job``, or subclass and override ``handle``.
        bind: connect to ``address`` (the default) or bind it (a collector many push to).
        concurrency: jobs run at once by this process.
        shutdown_timeout: seconds ``stop()`` waits for jobs in progress.
        context: the ZeroMQ context (by default the shared asyncio one).
    """

    def __init__(
        self,
        address: str,
        handler: Handler | None = None,
        *,
        bind: bool = False,
        concurrency: int = 1,
        shutdown_timeout: float = 10.0,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if not (concurrency >= 1 and shutdown_timeout >= 0):  # NaN fails every comparison
            raise ValueError(
                f"need concurrency >= 1 and shutdown_timeout >= 0, got {concurrency}, "
                f"{shutdown_timeout}"
            )
        self.address = address
        self.bind = bind
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        #: Jobs finished (failed ones included) and jobs whose handler raised.
        self.done = 0
        self.failed = 0
        self._handler = handler
        self._context = context
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._bound = asyncio.Event()

    def job(self, func: H) -> H:
        """Decorator: make ``func`` this worker's handler."""
        self._handler = func
        return func

    async def handle(self, payload: Any) -> None:
        """Run one job; override it in a subclass, or give a handler."""
        if self._handler is None:
            raise NotImplementedError("this JobWorker has no handler")
        await call_handler(self._handler, payload)

    async def started(self) -> str:
        """Wait until the socket is bound or connected; return its address."""
        await self._bound.wait()
        return self.address

    async def serve(self) -> None:
        """Take and run jobs until ``stop()``."""
        if self._handler is None and type(self).handle is JobWorker.handle:
            raise TypeError(
                "JobWorker has no handler: pass handler=, decorate a function with "
                "@worker.job, or override handle()"
            )
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        ctx = self._context or zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        # Take few jobs ahead: the rest stay at the producer for workers with room.
        sock.setsockopt(zmq.RCVHWM, self.concurrency)
        try:
            self.address = bind_or_connect(
                sock, self.address, bind=self.bind, owner="the job worker"
            )
        except OSError:
            sock.close()
            raise
        self._bound.set()
        loop = asyncio.get_running_loop()
        lanes = [loop.create_task(self._lane(sock)) for _ in range(self.concurrency)]
        try:
            await self._stopping.wait()
            _, late = await asyncio.wait(lanes, timeout=self.shutdown_timeout)
            if late:
                log.warning("stopping: cancelled %d jobs still running", len(late))
        finally:
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            sock.close()
            self._bound.clear()

    def stop(self) -> None:
        """Take no more jobs; ``serve()`` returns once the running ones finish."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    def run(self) -> None:
        """Serve in a new event loop until SIGINT or SIGTERM."""
        run_until_signal(self.serve, self.stop)

    async def _lane(self, sock: zmq.asyncio.Socket) -> None:
        """Receive a job, run it, repeat; one lane per unit of concurrency."""
        assert self._stopping is not None
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                incoming = cast("asyncio.Future[Any]", sock.recv_multipart())
                await asyncio.wait({incoming, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not incoming.done():
                    incoming.cancel()
                    return
                await self._run_one(incoming.result())
        finally:
            stopping.cancel()

    async def _run_one(self, frames: list[bytes]) -> None:
        try:
            payload = decode(frames)
        except PayloadError as exc:
            log.warning("dropped a job that is not a payload: %s", exc)
            return
        try:
            await call_handler(self.handle, payload)
        except asyncio.CancelledError:
            if being_cancelled():  # stop() ran out of time for this job
                raise
            self.failed += 1  # not a stop: the handler awaited something cancelled under it
            log.exception("a job failed: its handler ended in CancelledError")
        except Exception:
            self.failed += 1
            log.exception("a job failed")
        finally:
            self.done += 1


def send_now(sock: zmq.asyncio.Socket, frames: list[bytes]) -> bool:
    """Send at once if there is room; never leaves a send waiting on the socket.

    Through pyzmq's asyncio socket (not a raw send), so that other pushes waiting in
    ``poll(POLLOUT)`` are still woken: a raw send could consume their edge-triggered wake-up.
    """
    future = cast("asyncio.Future[Any]", sock.send_multipart(frames, flags=zmq.NOBLOCK))
    if not future.done():  # queued behind a send that waits for room: the socket is full
        future.cancel()
        return False
    return future.exception() is None
