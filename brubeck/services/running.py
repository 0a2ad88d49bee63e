"""What the workers share: calling a user's handler, and telling its failures apart from
being stopped. (Running until a signal, which the broker shares too, is
``brubeck.loops.run_until_signal``, the same as the app's.)

Rules of this module:
- a ``def`` handler runs on its worker's own threads (``Threads``), ``concurrency`` of them,
  not on asyncio's default executor: that one is shared by the process and capped at
  ``min(32, cpus + 4)``, and ``asyncio.Runner`` and interpreter exit join its threads, so one
  stuck handler would keep a stopped worker's process alive;
- they are daemon threads that nothing joins: a handler still running when its worker gives
  up on it (``shutdown_timeout``, or a lost broker) keeps its thread until it returns, and
  does not keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], Any]

_Call = tuple[concurrent.futures.Future[Any], Handler, Any, contextvars.Context]


class Threads:
    """Up to ``count`` daemon threads, started as calls need them, that run plain handlers."""

    def __init__(self, count: int, name: str) -> None:
        self.count, self.name = count, name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._started = 0

    async def call(self, func: Handler, payload: Any) -> Any:
        """``func(payload)`` on one of the threads, in a copy of the caller's context."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((future, func, payload, contextvars.copy_context()))
        if self._started < self.count:
            self._started += 1
            thread = threading.Thread(
                target=_serve_calls, args=(self._calls,), name=self.name, daemon=True
            )
            thread.start()
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """End the threads once their calls return; the next call starts new ones."""
        for _ in range(self._started):
            self._calls.put(None)
        self._calls, self._started = queue.SimpleQueue(), 0


def _serve_calls(calls: queue.SimpleQueue[_Call | None]) -> None:
    while (call := calls.get()) is not None:
        future, func, payload, context = call
        del call
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(context.run(func, payload))
            except BaseException as exc:  # the caller's to handle, as asyncio.to_thread does
                future.set_exception(exc)
        del future, func, payload, context  # hold nothing while waiting for the next call


async def call_handler(func: Handler, payload: Any, threads: Threads) -> Any:
    """Await an ``async def`` handler; run a plain one on ``threads``, so the loop keeps
    beating."""
    if inspect.iscoroutinefunction(func):
        return await func(payload)
    result = await threads.call(func, payload)
    if inspect.isawaitable(result):
        result = await result
    return result


def being_cancelled() -> bool:
    """Whether the running task is being cancelled. When it is not, a ``CancelledError`` from a
    handler means the handler failed (it awaited something cancelled under it), not "stop"."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def describe(exc: BaseException) -> str:
    """``"Type: message"`` for an error reply or log line; only the type when ``str(exc)``
    raises, so that reporting a failure cannot fail in turn."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        return f"{name} (its message could not be made)"
    return f"{name}: {message}" if message else name
