"""Long-polling: park requests, then answer all of them with one ZeroMQ message per 128.

Why: Mongrel2 takes one reply for up to 128 connections at once, so releasing a thousand
waiting clients costs eight messages, not a thousand. Rules: a parked request's handler task
stays alive (it is what holds the request's place among pipelined answers, and what a
disconnect cancels); release encodes the response once per HTTP framing and wakes the tasks;
a request that cannot take the shared message (an earlier pipelined answer is still pending,
or its connection runs download flow control) gets the response from its own ``wait``, so it
goes out in order and within its credits; two pipelined requests of one connection both wait.
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
        #: by request, not connection id: pipelined requests of one connection may both wait
        self._waiting: dict[Any, asyncio.Future[Response | None]] = {}

    async def wait(
        self, request: Any, timeout: float | None = None, on_timeout: Response | None = None
    ) -> Response:
        """Park until released (the answer is then already sent) or until ``timeout``.

        On timeout the request gets ``on_timeout`` (by default an empty 204).
        """
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        try:
            # Awaited directly (not through wait_for): a timeout or a disconnect cancels the
            # task, which cancels this future at once, so a release in the same turn skips it.
            async with asyncio.timeout(timeout):
                answer = await future
        except TimeoutError:
            return on_timeout if on_timeout is not None else Response(b"", 204)
        finally:
            if self._waiting.get(request) is future:
                del self._waiting[request]
        return ALREADY_SENT if answer is None else answer

    def release(self, response: Response) -> int:
        """Send ``response`` to every waiting request at once; returns how many got it."""
        app = self._app
        # A done future is a waiter that timed out or whose client left (cancelled): its
        # task answers for itself, or nobody is there to answer.
        entries = [
            (request, future) for request, future in self._waiting.items() if not future.done()
        ]
        self._waiting.clear()
        shared = [
            request
            for request, _ in entries
            if app.may_stream(request) and app.credit_window(request) is None
        ]
        count = app.deliver(shared, response)
        sent = set(map(id, shared))
        for request, future in entries:
            if future.done():
                continue
            if id(request) in sent:
                future.set_result(None)  # answered by the shared message
            else:  # answered by its handler, in its turn and within its credits
                future.set_result(response)
                count += request.epoch == app.epoch
        return count

    def __len__(self) -> int:
        return len(self._waiting)
