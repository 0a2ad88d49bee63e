"""Running a server until a signal, on asyncio's own event loop or uvloop (an optional extra).

uvloop schedules tasks and callbacks in C. In Brubeck's own benchmark it made no measurable
difference (the cost of a request is the Python run for it), so asyncio is the default and
an app should measure before switching. uvloop is imported only when asked for, so an app
that does not use it never needs it installed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

EVENT_LOOPS = ("asyncio", "uvloop", "auto")


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``asyncio.Runner``; None for asyncio's own loop."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}; got {name!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop  # an optional extra: imported only when asked for
    except ImportError:
        if name == "auto":
            return None
        raise RuntimeError(
            "event_loop 'uvloop' needs the uvloop package: pip install 'brubeck[uvloop]'"
        ) from None
    return uvloop.new_event_loop


def run_until_signal(
    serve: Callable[[], Awaitable[None]],
    stop: Callable[[], None],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Run ``serve()`` in a new event loop; SIGINT and SIGTERM call ``stop()``.

    Sets up logging at INFO first if nothing did, so a plain script still says what it does.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        await serve()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
