"""Fire-and-forget jobs over PUSH/PULL: a producer deals them round robin to a pool of workers.

Rules of this module:
- a job is one payload (``payload.py``: an encoding tag frame, then the data); nothing else
  travels, so a worker in any language reads two frames (or one, untagged, as bytes);
- the producer's PUSH deals each job to the next connected worker that has room, which is
  how a new worker process joins the rotation: it connects, and gets the next jobs;
- queues are bounded: ``hwm`` jobs per worker link at the producer. ``push`` waits up to
  ``timeout`` for room, then raises ``ServiceUnavailable``; it never discards a job itself and
  never waits forever. Its ``timeout``, like the constructor's, is a finite number of seconds;
- delivery is at most once, and a job ``push`` has queued is not yet delivered. The jobs
  ZeroMQ has queued for one worker are lost when that worker disconnects, **even when it stops
  gracefully** (``stop()`` finishes the jobs running, not the ones queued): up to ``hwm`` at
  the producer's link to it, what that TCP connection holds in transit (libzmq's I/O batches
  and the kernel's socket buffers: bytes, so thousands of small jobs), and up to
  ``concurrency`` at the worker. PUSH/PULL has no acknowledgement, so neither end can tell
  which jobs those were, nor resend them. A small ``hwm`` bounds the part queued at the
  producer; when work must not be lost, use a service (``ServiceClient``), which answers
  every request or raises, and resends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ..loops import run_until_signal
from .checks import check_count, check_seconds
from .errors import PayloadError, ServiceUnavailable
from .payload import decode, encode
from .running import Handler, Threads, being_cancelled, call_handler
from .sockets import bind_or_connect

log = logging.getLogger("brubeck.services.jobs")

H = TypeVar("H", bound=Callable[..., Any])


class JobQueue:
    """The producer's end: ``await jobs.push(payload)`` hands a job to the worker pool.

    Args:
        address: where workers find the queue, e.g. ``tcp://127.0.0.1:5560``.
        bind: bind ``address`` (the default: workers connect to it) or connect to it (when
            the workers' side binds, e.g. a results collector).
        hwm: most jobs queued per connected worker before ``push`` has to wait (an int). They
            are lost if that worker disconnects before taking them (see the module's rules).
        timeout: default seconds ``push`` waits for room before ``ServiceUnavailable``
            (finite, 0 or more).
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
        self.address = address
        self.bind = bind
        self.hwm = check_count("hwm", hwm, 1)
        self.timeout = check_seconds("timeout", timeout)
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._connections = _Connections()
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
        monitor = sock.get_monitor_socket(_Connections.EVENTS)
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
        """Workers connected now, past the ZMTP handshake (over tcp or ipc; inproc peers are
        not counted)."""
        return self._connections.workers

    async def wait_for_workers(self, count: int = 1, timeout: float | None = None) -> None:
        """Return once ``count`` workers are connected; ``ServiceUnavailable`` after ``timeout``."""
        check_count("count", count, 0)
        timeout = self.timeout if timeout is None else check_seconds("timeout", timeout)
        self.open()
        assert self._peers_changed is not None
        try:
            async with asyncio.timeout(timeout):
                while self.workers < count:
                    self._peers_changed.clear()
                    await self._peers_changed.wait()
        except TimeoutError:
            raise ServiceUnavailable(
                f"{self.workers} of {count} job workers connected to {self.address} in time"
            ) from None

    async def push(self, payload: Any, *, timeout: float | None = None) -> None:
        """Queue one job; wait up to ``timeout`` for room, then raise ``ServiceUnavailable``.

        Queued is not delivered: see the module's rules for when a queued job is lost.
        """
        timeout = self.timeout if timeout is None else check_seconds("timeout", timeout)
        frames = encode(payload)
        self.open()
        sock = self._socket
        assert sock is not None
        if send_now(sock, frames):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                await sock.poll(max(1, int(left * 1000)), zmq.POLLOUT)  # type: ignore[call-arg]
            except asyncio.CancelledError:
                if being_cancelled() or not sock.closed:
                    raise
                # close() closed the socket under the poll, and pyzmq cancelled it.
                raise ServiceUnavailable(f"the JobQueue at {self.address} was closed") from None
            if send_now(sock, frames):
                return
        if self.workers:
            why = f"all {self.workers} connected workers have {self.hwm} jobs waiting"
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
            self._connections = _Connections()

    async def __aenter__(self) -> JobQueue:
        self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Keep ``_connections`` up to date with the socket's monitor events."""
        assert self._peers_changed is not None
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            self._connections.on_event(event["event"], int(event["value"]))
            self._peers_changed.set()


class _Connections:
    """The queue's connections, and how many are workers past the ZMTP handshake.

    libzmq's monitor names a connection, by its file descriptor, when it opens (ACCEPTED or
    CONNECTED) and closes (DISCONNECTED), but not in a handshake event: SUCCEEDED and the
    FAILED_NO_DETAIL, _PROTOCOL and _AUTH events carry 0 or an error code. So:

    - a success is credited to the oldest connection still shaking hands: peers greet and are
      answered in about the order they connected;
    - a failure is a connection that never shakes hands. libzmq reports it just before that
      connection's DISCONNECTED, from the same call (an AUTH failure may come earlier, but a
      socket without a security mechanism, like this one, never has one). So a DISCONNECTED
      that follows a failure not yet matched is a connection that never shook hands, and any
      other DISCONNECTED is one that had (libzmq reports no failure for it).

    That makes the count of workers exact: successes, less the disconnects of connections
    that had shaken hands. Which connection holds a credit can still be wrong, and no event
    tells: a connection that never greets (a plain TCP health probe) stays the oldest one
    shaking, so the success of a worker that connects behind it is credited to the probe.
    Each disconnect shows whether its connection had shaken hands, and a mistake is put right
    then, keeping the count exact: a connection that closes holding a credit it did not earn
    passes it on to the oldest connection still shaking, and one that closes without the
    credit it earned takes one back from the oldest credited connection (the place mistakes
    go to). Only the count is used, never which descriptor holds a credit.

    The count can be off when events of different connections interleave between a failure
    and its DISCONNECTED, which needs a context with several I/O threads, and then only until
    those connections close. Peers speaking ZMTP 1.0 or 2.0 (libzmq 2.x and 3.x) report no
    handshake success, so they are never counted.
    """

    EVENTS = (
        zmq.EVENT_ACCEPTED
        | zmq.EVENT_CONNECTED
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_DISCONNECTED
    )
    _OPENED = zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED
    _FAILED = (
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    )

    def __init__(self) -> None:
        #: Open connections by file descriptor, oldest first: whether each holds a credit.
        self.credited: dict[int, bool] = {}
        #: Connections credited with a handshake: the workers.
        self.workers = 0
        #: Handshake failures whose DISCONNECTED has not come yet.
        self.failures = 0

    def on_event(self, kind: int, value: int) -> None:
        if kind & self._OPENED:
            self._closed(value, shook=self.credited.get(value, False))  # a reused descriptor
            self.credited[value] = False
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._credit_oldest_shaking()
        elif kind & self._FAILED:
            self.failures += 1
        elif kind == zmq.EVENT_DISCONNECTED:
            shook = self.failures == 0
            self.failures = max(0, self.failures - 1)
            self._closed(value, shook=shook)

    def _closed(self, fd: int, *, shook: bool) -> None:
        credited = self.credited.pop(fd, None)
        if credited is None:  # not seen opening: an inproc peer, or opened before the monitor
            return
        if credited:
            self.workers -= 1
            if not shook:  # it held a worker's credit: the worker is among those still shaking
                self._credit_oldest_shaking()
        elif shook:  # its credit went to an older connection, still shaking: take it back
            oldest = next((other for other, held in self.credited.items() if held), None)
            if oldest is not None:
                self.credited[oldest] = False
                self.workers -= 1

    def _credit_oldest_shaking(self) -> None:
        oldest = next((fd for fd, held in self.credited.items() if not held), None)
        if oldest is not None:
            self.credited[oldest] = True
            self.workers += 1


class JobWorker:
    """The worker's end: takes jobs from a ``JobQueue`` and runs a handler on each payload.

    Args:
        address: the queue's address.
        handler: ``f(payload)``, ``def`` or ``async def``; its return value is ignored. Or use
            ``@worker.job``, or subclass and override ``handle``.
        bind: connect to ``address`` (the default) or bind it (a collector many push to).
        concurrency: jobs run at once by this process (an int); as many more wait at the
            worker, and are lost when it stops (see the module's rules).
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
        if not shutdown_timeout >= 0:  # NaN fails every comparison
            raise ValueError(f"need shutdown_timeout >= 0 (seconds), got {shutdown_timeout}")
        self.address = address
        self.bind = bind
        self.concurrency = check_count("concurrency", concurrency, 1)
        self.shutdown_timeout = shutdown_timeout
        #: Jobs finished (failed ones included) and jobs whose handler raised.
        self.done = 0
        self.failed = 0
        self._handler = handler
        self._context = context
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._bound = asyncio.Event()
        self._bind_error: OSError | None = None
        self._threads = Threads(self.concurrency, "brubeck-job-worker")

    def job(self, func: H) -> H:
        """Decorator: make ``func`` this worker's handler."""
        self._handler = func
        return func

    async def handle(self, payload: Any) -> None:
        """Run one job; override it in a subclass, or give a handler."""
        if self._handler is None:
            raise NotImplementedError("this JobWorker has no handler")
        await call_handler(self._handler, payload, self._threads)

    async def started(self) -> str:
        """Wait until the socket is bound or connected; return its address. Raises the
        ``OSError`` that ``serve()`` raised when it could not bind or connect."""
        await self._bound.wait()
        if self._bind_error is not None:
            raise self._bind_error
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
        except OSError as exc:
            sock.close()
            self._bind_error = exc
            self._bound.set()
            raise
        self._bind_error = None
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
            self._threads.close()
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
            await call_handler(self.handle, payload, self._threads)
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
