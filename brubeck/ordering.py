"""Answers to pipelined requests leave in the order the requests came.

HTTP/1.1 lets a client send several requests on one connection before any answer; the
answers must come back in that order, even when an earlier request awaits and a later one
does not. An answer that is ready too early waits in its connection's queue until those
before it are sent. Connections with nothing pending have no queue at all, so the common
case costs one dict lookup.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


class AnswerOrder:
    """Per-connection queues of ``[request, response]`` slots; None marks an answer to come."""

    __slots__ = ("_send", "queues")

    def __init__(self, send: Callable[[Any, Any], None]) -> None:
        self._send = send
        self.queues: dict[bytes, deque[list[Any]]] = {}

    def deliver(self, request: Any, response: Any) -> None:
        """Send now, or once the answers to earlier requests on its connection are sent."""
        if self.queues and request.conn_id in self.queues:
            self.reserve(request)[1] = response
            self.release(request.conn_id)
        else:
            self._send(request, response)

    def reserve(self, request: Any) -> list[Any]:
        """Hold the request's place; fill ``slot[1]`` and ``release`` when its answer is ready."""
        slot: list[Any] = [request, None]
        self.queues.setdefault(request.conn_id, deque()).append(slot)
        return slot

    def release(self, conn_id: bytes) -> None:
        """Send every answer at the head of the connection's queue that is ready."""
        queue = self.queues.get(conn_id)
        while queue and queue[0][1] is not None:
            request, response = queue.popleft()
            self._send(request, response)
        if not queue:
            self.queues.pop(conn_id, None)

    def may_stream(self, request: Any) -> bool:
        """Whether ``request`` is first in line (a stream cannot wait in a queue)."""
        queue = self.queues.get(request.conn_id)
        return not queue or queue[0][0] is request

    def forget(self, conn_id: bytes) -> list[Any]:
        """The client is gone: nothing more is sent to it.

        Returns the requests whose answers were ready and now never leave, so that the caller
        can free what they hold (a spooled upload); the others still belong to their tasks.
        """
        queue = self.queues.pop(conn_id, None)
        return [request for request, response in queue if response is not None] if queue else []
