"""Coroutines that can never suspend are run on the spot, without a task.

Many ``async def`` handlers await nothing (they are async by habit, or for one branch that is
not taken). Making each an asyncio task costs as much as the rest of the request together.
Whether a coroutine can suspend is a fact of its bytecode: a coroutine frame gives up control
only at a yield, and ``await``, ``async with`` and ``async for`` all compile to one. A
coroutine whose own code has no yield instruction therefore runs to its end on the first
``send(None)``, exactly as a task's first step would run it.

The one visible difference: ``asyncio.current_task()`` returns None inside such a coroutine,
as it does in a ``def`` handler. (Context variables are no difference: the receive loop runs
each message in a context of its own, as a task has.)
"""

from __future__ import annotations

import dis
from types import CodeType, CoroutineType
from typing import Any

_cannot_suspend: dict[CodeType, bool] = {}


#: What ``value_now`` returns for an awaitable that may suspend (and was left untouched).
SUSPENDS: Any = object()


def never_suspends(coro: Any) -> bool:
    """Whether ``coro`` is a native coroutine whose code has no instruction that yields."""
    if type(coro) is not CoroutineType:
        return False
    known = _cannot_suspend.get(coro.cr_code)
    return _learn(coro.cr_code) if known is None else known


def value_now(awaitable: Any) -> Any:
    """The awaitable's value if it ``never_suspends`` (run now; its error is raised), else
    ``SUSPENDS``, leaving it unstarted for a task to run."""
    if not never_suspends(awaitable):
        return SUSPENDS
    try:
        awaitable.send(None)
    except StopIteration as done:
        return done.value
    awaitable.close()
    raise RuntimeError(f"{awaitable.__qualname__} suspended although its code cannot yield")


def _learn(code: CodeType) -> bool:
    if len(_cannot_suspend) >= 10_000:  # code made at run time (exec): stay bounded
        _cannot_suspend.clear()
    known = _cannot_suspend[code] = not any(
        "YIELD" in ins.opname or ins.opname == "SEND" for ins in dis.get_instructions(code)
    )
    return known
