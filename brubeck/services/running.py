"""What workers and the broker share: calling a user's handler, and running until a signal."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
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


def run_until_signal(serve: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
    """Run ``serve()`` in a new event loop; SIGINT and SIGTERM call ``stop()``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        await serve()

    asyncio.run(main())
