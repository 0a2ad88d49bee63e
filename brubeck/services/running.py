"""What the workers share: calling a user's handler. (Running until a signal, which the
broker shares too, is ``brubeck.loops.run_until_signal``, the same as the app's.)"""

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
