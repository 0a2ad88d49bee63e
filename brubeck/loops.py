"""Which event loop ``Brubeck.run`` serves on: asyncio's own, or uvloop (an optional extra).

uvloop schedules tasks and callbacks in C. In Brubeck's own benchmark it made no measurable
difference (the cost of a request is the Python run for it), so asyncio is the default and
an app should measure before switching. uvloop is imported only when asked for, so an app
that does not use it never needs it installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
