"""Long-polling: park requests, then answer all of them with one ZeroMQ message per 128.

Why: Mongrel2 takes one reply for up to 128 connections at once, so releasing a thousand
waiting clients costs eight messages, not a thousand. Rules: a parked request's handler task
stays alive (it is what holds the request's place among pipelined answers, and what a
disconnect cancels); release encodes the response once per HTTP framing and wakes the tasks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .response import ALREADY_SENT, Response


class WaitingRoom:
    """Requests waiting for the same answer; ``release`` sends it to all of them.

    Use in an ``async def`` verb method: ``return await room.wait(self.request, timeout=30)``.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._waiting: dict[bytes, tuple[Any, asyncio.Future[None]]] = {}

    async def wait(
        self, request: Any, timeout: float | None = None, on_timeout: Response | None = None
    ) -> Response:
        """Park until released (the answer is then already sent) or until ``timeout``.

        On timeout the request gets ``on_timeout`` (by default an empty 204).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[request.conn_id] = (request, future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return on_timeout if on_timeout is not None else Response(b"", 204)
        finally:
            entry = self._waiting.get(request.conn_id)
            if entry is not None and entry[1] is future:
                del self._waiting[request.conn_id]
        return ALREADY_SENT

    def release(self, response: Response) -> int:
        """Send ``response`` to every waiting request at once; returns how many got it."""
        entries = list(self._waiting.values())
        self._waiting.clear()
        count = self._app.deliver([request for request, _ in entries], response)
        for _, future in entries:
            if not future.done():
                future.set_result(None)
        return count

    def __len__(self) -> int:
        return len(self._waiting)
