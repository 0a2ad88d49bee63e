"""What the workers share: calling a user's handler, and telling its failures apart from
being stopped. (Running until a signal, which the broker shares too, is
``brubeck.loops.run_until_signal``, the same as the app's.)"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], Any]


async def call_handler(func: Handler, payload: Any) -> Any:
    """Await an ``async def`` handler; run a plain one in a thread, so the loop keeps beating."""
    if inspect.iscoroutinefunction(func):
        return await func(payload)
    result = await asyncio.to_thread(func, payload)
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
