"""Coroutines that can never suspend are run on the spot, without a task.

Many ``async def`` handlers await nothing (they are async by habit, or for one branch that is
not taken). Making each an asyncio task costs as much as the rest of the request together.
Whether a coroutine can suspend is a fact of its bytecode: a coroutine frame gives up control
only at a yield, and ``await``, ``async with`` and ``async for`` all compile to one. A
coroutine whose own code has no yield instruction therefore runs to its end on the first
``send(None)``, exactly as a task's first step would run it.

The one visible difference: ``asyncio.current_task()`` returns None inside such a coroutine,
as it does in a ``def`` handler.
"""

from __future__ import annotations

import dis
from types import CodeType, CoroutineType
from typing import Any

_cannot_suspend: dict[CodeType, bool] = {}


def never_suspends(coro: Any) -> bool:
    """Whether ``coro`` is a native coroutine whose code has no instruction that yields."""
    if type(coro) is not CoroutineType:
        return False
    code = coro.cr_code
    known = _cannot_suspend.get(code)
    if known is None:
        if len(_cannot_suspend) >= 10_000:  # code made at run time (exec): stay bounded
            _cannot_suspend.clear()
        known = _cannot_suspend[code] = not any(
            "YIELD" in ins.opname or ins.opname == "SEND" for ins in dis.get_instructions(code)
        )
    return known


def run_to_end(coro: Any) -> Any:
    """Run a coroutine that ``never_suspends`` and return its value (or raise its error)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError(f"{coro.__qualname__} suspended although its code cannot yield")
