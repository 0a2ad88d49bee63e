"""Requests whose handler awaits: an asyncio task each, answered from its done callback.

A handler that cannot suspend is answered inside ``handle_message``; one that awaits becomes
a task that runs the handler's own coroutine, with no wrapper around it, and its answer goes
out from the task's done callback, in its connection's order. This module is that half of
``Brubeck`` (a base class: the state lives on the app): starting the tasks, answering them,
their timeouts (one sweep a second rather than a timer each), Mongrel2's keep-alive for
connections they hold, the ``max_in_flight`` limit, and waiting for them at shutdown.

At ``max_in_flight``, reading goes on: Mongrel2's notices are handled at once (a client that
left frees its slot; credits keep streams moving), requests wait here in order and start as
slots free up; only past ``held_limit`` waiting requests does reading stop, and the rest wait
in ZeroMQ's queue (once that is full, Mongrel2 hands new requests to other processes).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from .errors import HTTPError
from .handlers import MessageHandler, as_response
from .protocol import NOTICE_PATH
from .response import ALREADY_SENT, Response

if TYPE_CHECKING:
    from .connection import Mongrel2Connection
    from .inflight import InFlight
    from .ordering import AnswerOrder
    from .request import Request

log = logging.getLogger("brubeck.app")


class AwaitingRequests:
    """The tasks of a ``Brubeck`` app: requests whose handler awaits, and background work."""

    #: Requests that may wait in the process while ``max_in_flight`` run (about as many as
    #: ZeroMQ's own queue holds by default); past it reading stops.
    held_limit = 1000

    # Set by Brubeck.__init__.
    msg_conn: Mongrel2Connection | None
    max_in_flight: int
    shutdown_timeout: float
    request_timeout: float
    _tasks: set[asyncio.Task[Any]]
    _timed_out: set[asyncio.Task[Any]]
    _inflight: InFlight
    _order: AnswerOrder
    #: What reads each message (``handle_message``, or its owner-aware twin).
    _receiver: Callable[[bytes], None]
    #: Requests read while ``max_in_flight`` tasks run, in order; None while not full.
    _held: deque[bytes] | None

    if TYPE_CHECKING:

        def error_response(self, request: Request, exc: BaseException) -> Response: ...

        def _handlelogged(self, raw: bytes) -> None: ...

    def _on_finish(self, handler: MessageHandler) -> None:
        try:
            pending = handler.on_finish()
        except Exception:
            log.exception("%s.on_finish failed", type(handler).__name__)
            return
        if pending is not None and inspect.isawaitable(pending):
            self._spawn(logged(pending, f"{type(handler).__name__}.on_finish"))

    def _function_response(self, request: Request, result: Any) -> Response:
        try:
            return as_response(result)
        except Exception as exc:
            return self.error_response(request, exc)

    # A handler that awaits runs as a task; its answer is sent by the task's done callback,
    # so the task runs the handler's own coroutine and no wrapper around it.

    def _start_task(self, request: Request, pending: Any, handler: MessageHandler | None) -> None:
        slot = self._order.reserve(request)
        if type(pending) is not CoroutineType:
            pending = _awaited(pending)
        loop = asyncio.get_running_loop()
        if loop.get_task_factory() is None:
            task = asyncio.Task(pending, loop=loop)  # what create_task does, minus a frame
        else:
            task = loop.create_task(pending)
        self._track(task, partial(self._task_answered, slot, handler))
        now = loop.time()
        self._inflight.add(task, request, handler, now, now + self._timeout_of(handler))

    def _task_answered(
        self, slot: list[Any], handler: MessageHandler | None, task: asyncio.Task[Any]
    ) -> None:
        try:
            self._answer_task(slot, handler, task)
        finally:
            self._forget(task)  # whatever happens there, the slot is free again

    def _answer_task(
        self, slot: list[Any], handler: MessageHandler | None, task: asyncio.Task[Any]
    ) -> None:
        request = slot[0]
        self._inflight.discard(task, request.conn_id)
        timed_out = bool(self._timed_out) and task in self._timed_out
        if timed_out:
            self._timed_out.discard(task)
        finished = True  # then on_finish runs
        if task.cancelled():
            # A timeout answers 504; a client gone, or a stop, leaves nothing to send.
            finished = timed_out
            response = self._timed_out_response(request, handler) if timed_out else ALREADY_SENT
            if not timed_out and request.upload is not None:
                # Its connection was forgotten, so no answer goes out to delete the file.
                request.upload.discard()
        else:
            exc = task.exception()
            if exc is None:
                response = self._function_response(request, task.result())
            elif isinstance(exc, Exception):
                response = self.error_response(request, exc)
            else:  # a BaseException of the app's own, past every ``except Exception``
                log.error("request task failed", exc_info=exc)
                finished = False
                # Still end the request: silence would hold the client until Mongrel2 reaps it.
                if handler is not None and handler.abort_stream():
                    response = ALREADY_SENT
                else:
                    response = self.error_response(request, HTTPError(500))
        slot[1] = response
        self._order.release(request.conn_id)
        if handler is not None and finished:
            self._on_finish(handler)

    def _timed_out_response(self, request: Request, handler: MessageHandler | None) -> Response:
        timeout = self._timeout_of(handler, quiet=True)
        if handler is not None and handler.abort_stream():
            log.warning("%r took longer than %ss: stream closed", request, timeout)
            return ALREADY_SENT
        log.warning("%r took longer than %ss: answering 504", request, timeout)
        return self.error_response(request, HTTPError(504, f"no answer within {timeout} seconds"))

    def _timeout_of(self, handler: MessageHandler | None, quiet: bool = False) -> float:
        """The handler's ``timeout`` if it is one (seconds > 0), else ``request_timeout``."""
        timeout = getattr(handler, "timeout", None)
        if timeout is None:
            return self.request_timeout
        if isinstance(timeout, (int, float)) and timeout > 0:  # NaN fails: it never expires
            return timeout
        if not quiet:
            log.error(
                "%s.timeout must be seconds > 0 or None, got %r: using request_timeout (%ss)",
                type(handler).__name__,
                timeout,
                self.request_timeout,
            )
        return self.request_timeout

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._track(task, self._task_done)
        return task

    def _track(self, task: asyncio.Task[Any], done: Callable[[asyncio.Task[Any]], None]) -> None:
        """Count a task against ``max_in_flight`` until ``done`` runs (it calls ``_forget``)."""
        self._tasks.add(task)
        task.add_done_callback(done)
        full = len(self._tasks) >= self.max_in_flight
        if full and self._held is None and self.msg_conn is not None:
            self._held = deque()
            self.msg_conn.set_receiver(self._hold)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("a background task failed", exc_info=task.exception())
        self._forget(task)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._held is not None and len(self._tasks) < self.max_in_flight:
            self._start_held()

    def _hold(self, raw: bytes) -> None:
        """The receiver while full: notices now, requests in turn (see the module's doc)."""
        held = self._held
        if held is None:  # no longer full: a slot freed during this run of messages
            self._receiver(raw)
            return
        if raw.split(b" ", 3)[2:3] == [NOTICE_PATH]:
            self._receiver(raw)
            return
        held.append(raw)
        if len(held) >= self.held_limit and self.msg_conn is not None:
            self.msg_conn.pause_reading()  # the rest wait in ZeroMQ's queues

    def _start_held(self) -> None:
        """Slots are free: start the held requests, oldest first; once none is left, read."""
        held = self._held
        assert held is not None
        while held and len(self._tasks) < self.max_in_flight:
            self._handlelogged(held.popleft())
        if self.msg_conn is None:
            return
        if not held and len(self._tasks) < self.max_in_flight:
            self._held = None
            self.msg_conn.set_receiver(self._receiver)
            self.msg_conn.resume_reading()  # a no-op unless paused, and once stopping
        elif len(held) < self.held_limit:
            self.msg_conn.resume_reading()  # room to hold more, and notices to hear

    def _drop_held(self, conn_id: bytes | None = None) -> None:
        """Forget held requests of a client that left (of every client: ``None``)."""
        if self._held:
            if conn_id is None:
                self._held.clear()
            else:
                kept = [raw for raw in self._held if raw.split(b" ", 2)[1:2] != [conn_id]]
                self._held = deque(kept)

    def _take_held(self) -> list[bytes]:
        """At a stop: the held requests, to be answered before those still in ZeroMQ."""
        held, self._held = list(self._held or ()), None
        return held

    async def _housekeeping(self, interval: float) -> None:
        """Each tick: cancel handlers past their timeout; every ``interval``, reset Mongrel2's
        idle clock for connections held longer than that."""
        assert self.msg_conn is not None
        loop = asyncio.get_running_loop()
        tick = min(1.0, interval)
        next_ping = loop.time() + interval
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for task in self._inflight.expired(now):
                self._timed_out.add(task)
                task.cancel()
            if now >= next_ping:
                next_ping = now + interval
                for request in list(self._inflight.held_since(now - interval)):
                    try:
                        self.msg_conn.ctl(request.sender, request.conn_id, keep_alive=True)
                    except Exception:  # ZeroMQ's backlog is full, say: the timeouts go on
                        log.exception("could not send a keep-alive for %r", request)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info(
            "waiting up to %.1fs for %d requests in flight", self.shutdown_timeout, len(self._tasks)
        )
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "cancelled %d requests still running after %.1fs",
                len(pending),
                self.shutdown_timeout,
            )


async def _awaited(pending: Any) -> Any:
    """A coroutine for an awaitable that is not one (a task runs only coroutines)."""
    return await pending


async def logged(pending: Any, what: str) -> None:
    try:
        await pending
    except Exception:
        log.exception("%s failed", what)
