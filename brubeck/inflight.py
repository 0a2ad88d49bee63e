"""Requests being served by tasks, indexed by their Mongrel2 connection.

Why: a long-poll, a stream or a slow handler holds its client's connection. When Mongrel2
says the client left, its tasks must stop; while they run, Mongrel2's idle reaper
(``limits.min_ping``) must be told the connection is alive. Requests that finish without
awaiting never appear here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any


class InFlight:
    """A registry of request tasks by connection id."""

    __slots__ = ("_by_conn",)

    def __init__(self) -> None:
        self._by_conn: dict[bytes, dict[asyncio.Task[Any], tuple[Any, Any, float, float]]] = {}

    def add(
        self, task: asyncio.Task[Any], request: Any, handler: Any, started: float, deadline: float
    ) -> None:
        self._by_conn.setdefault(request.conn_id, {})[task] = (request, handler, started, deadline)

    def discard(self, task: asyncio.Task[Any], conn_id: bytes) -> None:
        tasks = self._by_conn.get(conn_id)
        if tasks is not None:
            tasks.pop(task, None)
            if not tasks:
                del self._by_conn[conn_id]

    def pop_connection(self, conn_id: bytes) -> list[tuple[asyncio.Task[Any], Any]]:
        """Forget a connection; returns its (task, handler) pairs for the caller to stop."""
        tasks = self._by_conn.pop(conn_id, {})
        return [(task, entry[1]) for task, entry in tasks.items()]

    def conn_ids(self) -> list[bytes]:
        """Every connection with a request in flight."""
        return list(self._by_conn)

    def expired(self, now: float) -> list[asyncio.Task[Any]]:
        """Tasks past their deadline (one periodic sweep instead of a timer per request)."""
        return [
            task
            for tasks in self._by_conn.values()
            for task, entry in tasks.items()
            if entry[3] <= now and not task.done()
        ]

    def held_since(self, before: float) -> Iterator[Any]:
        """One request per connection that has been held since before ``before``."""
        for tasks in self._by_conn.values():
            for request, _, started, _ in tasks.values():
                if started <= before:
                    yield request
                    break

    def __len__(self) -> int:
        return sum(len(tasks) for tasks in self._by_conn.values())

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self._by_conn
