"""A process's life: startup state, the concurrency limit, and what a graceful stop answers."""

from __future__ import annotations

import asyncio
import sys

import pytest
import zmq
import zmq.asyncio

from brubeck import Brubeck, Mongrel2Connection, WebMessageHandler
from brubeck.testing import TestClient


async def test_state_set_at_startup_is_seen_by_handlers_and_shutdown() -> None:
    closed: list[str] = []

    class Reads(WebMessageHandler):
        def get(self) -> str:
            return self.application.state.pool

    app = Brubeck(handler_tuples=[(r"^/$", Reads)])

    @app.on_startup
    async def open_pool() -> None:
        app.state.pool = "pool-1"

    @app.on_shutdown
    def close_pool() -> None:
        closed.append(app.state.pool)

    async with TestClient(app) as client:
        assert (await client.get("/")).text == "pool-1"
    assert closed == ["pool-1"]


async def test_stop_answers_the_requests_still_queued_in_zeromq() -> None:
    """With one request in flight and the limit reached, 599 wait: in the receive loop's
    batch, or unread in the PULL socket. A stop must answer every one of them."""
    gate = asyncio.Event()
    entered = asyncio.Event()

    class Gated(WebMessageHandler):
        async def get(self) -> str:
            entered.set()
            await gate.wait()
            return self.get_argument("n")

    app = Brubeck(handler_tuples=[(r"^/$", Gated)], max_in_flight=1)
    count = 600
    async with TestClient(app) as client:
        for n in range(1, count + 1):
            await client.send_raw(client.build_message("GET", "/", conn_id=n, query=f"n={n}"))
        await asyncio.wait_for(entered.wait(), 2)
        await asyncio.sleep(0.05)  # every message reaches the app's process
        app.stop()
        asyncio.get_running_loop().call_later(0.05, gate.set)
        replies = [await client.receive(n) for n in range(1, count + 1)]
    bodies = [reply.rpartition(b"\r\n\r\n")[2] for reply in replies]
    assert bodies == [b"%d" % n for n in range(1, count + 1)]


async def test_stop_receiving_takes_the_queue_then_disconnects() -> None:
    ctx = zmq.asyncio.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("inproc://lifecycle-stop-receiving")
    conn = Mongrel2Connection(
        "inproc://lifecycle-stop-receiving", "inproc://lifecycle-unused", context=ctx
    )
    try:
        conn.open()
        for n in range(5):
            await push.send(b"m%d" % n)
        await asyncio.sleep(0.02)
        assert conn.stop_receiving() == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        await asyncio.sleep(0.02)
        # Disconnected: a new message has nowhere to go.
        with __import__("contextlib").suppress(zmq.Again):
            await push.send(b"late", zmq.NOBLOCK)
        assert conn.stop_receiving() == []
    finally:
        await conn.close()
        push.close()


def test_the_event_loop_factory() -> None:
    from brubeck.loops import event_loop_factory

    assert event_loop_factory("asyncio") is None
    with pytest.raises(ValueError, match="event_loop must be one of"):
        event_loop_factory("trio")
    uvloop = pytest.importorskip("uvloop")
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("auto") is uvloop.new_event_loop


def test_uvloop_asked_for_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from brubeck.loops import event_loop_factory

    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes the import fail
    assert event_loop_factory("auto") is None
    with pytest.raises(RuntimeError, match=r"pip install 'brubeck\[uvloop\]'"):
        event_loop_factory("uvloop")
