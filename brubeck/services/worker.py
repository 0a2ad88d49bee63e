"""A worker for MDP services: answers the requests a broker gives it for one service name.

Rules of this module:
- each of ``concurrency`` links is one MDP worker: its own DEALER socket, its own identity at
  the broker, and at most one request at a time, as MDP/0.1 requires;
- a link heartbeats whenever it has sent nothing for ``heartbeat`` seconds, also while its
  handler runs (a plain ``def`` handler runs on one of the worker's ``concurrency`` threads,
  so the event loop stays free; see ``running.py``);
- a link that hears nothing from the broker for ``liveness`` heartbeats, or is told
  DISCONNECT, closes its socket and registers again on a new one after ``reconnect`` seconds;
  a request it was working on is abandoned, since the broker gives it to another worker;
- a handler that raises answers with an ``error`` payload (the client raises ``RemoteError``),
  also when it ends in ``CancelledError`` that is not the link abandoning the request: the
  broker keeps a request held by a live worker until that worker replies;
- ``stop()`` lets the requests in progress finish (up to ``shutdown_timeout``), sends their
  replies, then DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from ..loops import run_until_signal
from . import mdp
from .checks import check_count
from .errors import PayloadError
from .payload import decode, encode, encode_error
from .running import Handler, Threads, being_cancelled, call_handler, describe
from .sockets import LoopSocket

log = logging.getLogger("brubeck.services.worker")

H = TypeVar("H", bound=Callable[..., Any])


class ServiceWorker:
    """Serve one MDP service: each request's payload goes to the handler, its return is the reply.

    Args:
        address: the broker's endpoint, e.g. ``tcp://127.0.0.1:5555``.
        service: the service name clients ask for (printable ASCII).
        handler: ``f(payload) -> reply``, ``def`` or ``async def``; or use ``@worker.handler``,
            or subclass and override ``handle``.
        heartbeat: seconds between heartbeats; use the broker's value.
        liveness: heartbeats the broker may miss before this worker reconnects.
        reconnect: seconds to wait before registering again.
        concurrency: requests handled at once (an int), each on its own link to the broker.
        shutdown_timeout: seconds ``stop()`` waits for requests in progress.
        context: the ZeroMQ context (by default the shared asyncio one).
    """

    def __init__(
        self,
        address: str,
        service: str,
        handler: Handler | None = None,
        *,
        heartbeat: float = 1.0,
        liveness: int = 3,
        reconnect: float = 1.0,
        concurrency: int = 1,
        shutdown_timeout: float = 10.0,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if not (0 < heartbeat < math.inf and liveness >= 1):  # NaN fails every comparison
            raise ValueError(
                f"need heartbeat > 0 and liveness >= 1, got {heartbeat}, {liveness}: the "
                f"heartbeat is a finite number of seconds"
            )
        check_count("concurrency", concurrency, 1)
        if not (reconnect >= 0 and shutdown_timeout >= 0):  # NaN fails every comparison
            raise ValueError(
                f"need reconnect >= 0 and shutdown_timeout >= 0 (seconds), got {reconnect}, "
                f"{shutdown_timeout}"
            )
        self.address = address
        self.service = service
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.reconnect = reconnect
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        #: Requests answered (handler failures included) since the worker started.
        self.handled = 0
        self._name = mdp.worker_service_name(service)
        self._threads = Threads(concurrency, f"brubeck-worker-{service}")
        self._handler = handler
        self._context = context
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._wakes: set[asyncio.Event] = set()

    def handler(self, func: H) -> H:
        """Decorator: make ``func`` this worker's handler."""
        self._handler = func
        return func

    async def handle(self, payload: Any) -> Any:
        """Answer one request; override it in a subclass, or give a handler."""
        if self._handler is None:
            raise NotImplementedError("this ServiceWorker has no handler")
        return await call_handler(self._handler, payload, self._threads)

    async def serve(self) -> None:
        """Register with the broker and answer requests until ``stop()``."""
        if self._handler is None and type(self).handle is ServiceWorker.handle:
            raise TypeError(
                f"ServiceWorker for {self.service!r} has no handler: pass handler=, decorate "
                f"a function with @worker.handler, or override handle()"
            )
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        loop = asyncio.get_running_loop()
        links = [
            loop.create_task(self._link(), name=f"mdp-worker-{self.service}-{n}")
            for n in range(self.concurrency)
        ]
        try:
            await asyncio.gather(*links)
        finally:
            for link in links:
                link.cancel()
            await asyncio.gather(*links, return_exceptions=True)
            self._threads.close()

    def stop(self) -> None:
        """Finish the requests in progress, say DISCONNECT, and return from ``serve()``.

        Call it from the worker's event loop (from another thread, through
        ``loop.call_soon_threadsafe``).
        """
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()
        for wake in self._wakes:
            wake.set()

    def run(self) -> None:
        """Serve in a new event loop until SIGINT or SIGTERM."""
        run_until_signal(self.serve, self.stop)

    # One link: a socket, a registration, a conversation; again after the broker is lost.

    async def _link(self) -> None:
        assert self._stopping is not None
        ctx = self._context or zmq.asyncio.Context.instance()
        while not self._stopping.is_set():
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.address)
            why = None
            try:
                why = await self._converse(sock)
            finally:
                # Stopping: give the last reply and the DISCONNECT a moment to leave.
                sock.close(linger=0 if why else 500)
            if why is None:
                return
            log.warning("%s; registering again in %gs", why, self.reconnect)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.reconnect)

    async def _converse(self, sock: zmq.asyncio.Socket) -> str | None:
        """Serve on one socket; return why to reconnect, or ``None`` when stopping.

        Requests are taken and answered by callbacks; this coroutine only keeps time: it
        heartbeats, notices a silent broker, and winds down on ``stop()``.
        """
        stopping = self._stopping
        assert stopping is not None
        loop = asyncio.get_running_loop()
        beat, expiry = self.heartbeat, self.heartbeat * self.liveness
        link = _Link(loop.time())
        wire: LoopSocket

        def send(frames: list[bytes]) -> None:
            if not wire.send(frames):
                log.warning("the link to the broker is full: a message to it was dropped")
            link.sent = loop.time()

        def answered(job: asyncio.Task[list[bytes]]) -> None:
            if link.job is job:  # not abandoned: the broker holds the request until we reply
                link.job = None
                send(mdp.reply(link.address, self._reply_of(job)))
                self.handled += 1
                if stopping.is_set():
                    link.wake.set()

        def receive(frames: list[bytes]) -> None:
            link.heard = loop.time()
            try:
                command = mdp.parse_at_worker(frames)
            except mdp.MDPError as exc:
                log.warning("dropped a malformed message from the broker: %s", exc)
                return
            if command.command == mdp.REQUEST:
                if link.job is not None or stopping.is_set():
                    # MDP gives a worker one request at a time; when stopping, the DISCONNECT
                    # that follows makes the broker give this one to another worker.
                    log.warning("got a request while busy or stopping: not taken")
                    return
                link.address = command.address
                link.job = loop.create_task(self._answer(command.body))
                link.job.add_done_callback(answered)
            elif command.command == mdp.DISCONNECT:
                link.why = f"the broker at {self.address} asked this worker to reconnect"
                link.wake.set()

        wire = LoopSocket(sock, receive)
        self._wakes.add(link.wake)
        drain_until: float | None = None
        try:
            send(mdp.ready(self._name))
            while True:
                now = loop.time()
                if link.why is not None:
                    return link.why
                if now - link.heard >= expiry:
                    wire.drain()  # the loop may be late, not the broker: read what waits
                    if now - link.heard >= expiry:
                        return f"heard nothing from the broker at {self.address} for {expiry:g}s"
                if stopping.is_set() and drain_until is None:
                    drain_until = now + self.shutdown_timeout
                if drain_until is not None and (link.job is None or now >= drain_until):
                    send(mdp.disconnect())
                    return None
                if now - link.sent >= beat:
                    send(mdp.heartbeat())
                wake = min(link.heard + expiry, link.sent + beat, drain_until or float("inf"))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wake - loop.time(), 0.001)):
                        await link.wake.wait()
                link.wake.clear()
        finally:
            self._wakes.discard(link.wake)
            wire.detach()
            job, link.job = link.job, None
            if job is not None and not job.done():
                job.cancel()
                log.warning("abandoned a request in progress (the broker gives it to another)")

    async def _answer(self, body: tuple[bytes, ...]) -> list[bytes]:
        """The reply frames for one request body, whatever the handler does."""
        try:
            payload = decode(body)
        except PayloadError as exc:
            return encode_error(f"PayloadError: {exc}")
        try:
            result = await call_handler(self.handle, payload, self._threads)
        except asyncio.CancelledError:
            if being_cancelled():  # the link abandons this request: no reply
                raise
            log.exception("the %r handler ended in CancelledError", self.service)
            return encode_error("CancelledError: the handler awaited something that was cancelled")
        except Exception as exc:
            log.exception("the %r handler failed", self.service)
            return encode_error(describe(exc))
        try:
            return encode(result)
        except (TypeError, ValueError) as exc:  # ValueError: a lone surrogate, from JSON's \ud800
            log.error("the %r handler returned what cannot be sent: %s", self.service, exc)
            return encode_error(describe(exc))

    def _reply_of(self, job: asyncio.Task[list[bytes]]) -> list[bytes]:
        """The reply frames a finished job made; an error reply when the job itself failed or
        was cancelled by someone else, since a live worker must answer every request."""
        if job.cancelled():
            why = "CancelledError: the request was cancelled"
        elif (exc := job.exception()) is not None:
            why = describe(exc)
        else:
            return job.result()
        log.error("answering a %r request failed: %s", self.service, why)
        return encode_error(why)


class _Link:
    """What one conversation with the broker tracks: times, the request in progress, and
    why to reconnect (with the event that wakes the conversation to act on it)."""

    __slots__ = ("address", "heard", "job", "sent", "wake", "why")

    def __init__(self, now: float) -> None:
        self.heard = self.sent = now
        self.job: asyncio.Task[list[bytes]] | None = None
        self.address = b""
        self.why: str | None = None
        self.wake = asyncio.Event()
