"""connection.py and ownership.py: the error branches, against raw sockets and misuse.

What is owed in each: a reply that cannot be sent is logged and the ones after it still go;
a Mongrel2 that went away is reported even when the app's hook fails; a WebSocket message
whose owner process does not read ends its connection cleanly instead of vanishing.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import tnetstring
import zmq
import zmq.asyncio

from brubeck import Brubeck, Mongrel2Connection
from brubeck import ownership as ownership_module
from brubeck.testing import TestClient
from brubeck.wstesting import TestWebSocket
from tests.test_connection import Mongrel2Side, handshaken, until
from tests.test_ownership import Counter

_PULL, _PUB = 0, 1


@pytest.fixture
async def tcp_mongrel2(new_mongrel2: Callable[..., Mongrel2Side]) -> Mongrel2Side:
    """Over TCP: only there do ZeroMQ's monitors report a disconnect."""
    return new_mongrel2("tcp")


# Replies that cannot be sent


async def test_a_reply_zeromq_refuses_is_logged_and_the_next_still_goes(
    new_mongrel2: Callable[..., Mongrel2Side], caplog: pytest.LogCaptureFixture
) -> None:
    mongrel2 = new_mongrel2()
    connection = mongrel2.connection(sender_id="S")
    connection.open()
    try:
        connection.send(None, 1, b"first")
        assert await mongrel2.replies(1) == [b"S 1:1, first"]
        connection.send_raw("not bytes")  # type: ignore[arg-type]
        connection.send(None, 2, b"second")
        assert await mongrel2.replies(1) == [b"S 1:2, second"]
    finally:
        await connection.close()
    assert "dropped a reply of 9 bytes: it could not be sent" in caplog.text


async def test_a_backlogged_reply_zeromq_refuses_does_not_stall_the_ones_behind_it(
    new_mongrel2: Callable[..., Mongrel2Side], caplog: pytest.LogCaptureFixture
) -> None:
    """Held until Mongrel2 subscribes, a bad reply must not stop the flusher for good."""
    mongrel2 = new_mongrel2(bound=False)
    connection = mongrel2.connection(sender_id="S")
    connection.open()
    try:
        connection.send(None, 1, b"before")
        connection.send_raw("not bytes")  # type: ignore[arg-type]
        connection.send(None, 2, b"after")
        mongrel2.bind_sub()
        assert await mongrel2.replies(2) == [b"S 1:1, before", b"S 1:2, after"]
        assert connection.pending == 0
    finally:
        await connection.close(flush_timeout=0.5)
    assert "dropped a reply of 9 bytes: it could not be sent" in caplog.text


def test_a_reply_sent_with_no_event_loop_running_goes_out_at_once() -> None:
    """From synchronous code between two runs of the loop nothing would send it later."""
    with asyncio.Runner() as runner:
        context = zmq.asyncio.Context()

        async def setup() -> tuple[Mongrel2Side, Mongrel2Connection]:
            side = Mongrel2Side(context, "inproc")
            side.bind_sub()
            conn = side.connection(sender_id="S")
            conn.open()
            await until(lambda: conn._live, "the subscription")
            return side, conn

        mongrel2, connection = runner.run(setup())
        try:
            connection.send(None, 7, b"from sync code")
            assert connection.pending == 0
            assert runner.run(mongrel2.replies(1)) == [b"S 1:7, from sync code"]
        finally:
            runner.run(connection.close(flush_timeout=0.1))
            runner.run(mongrel2.close())
            context.destroy(linger=0)


# Mongrel2 going away


async def test_a_failing_on_lost_hook_is_logged_and_the_loss_still_handled(
    tcp_mongrel2: Mongrel2Side, caplog: pytest.LogCaptureFixture
) -> None:
    connection = tcp_mongrel2.connection(sender_id="S")
    calls: list[tuple[int, int]] = []

    def on_lost(queued: int, unsent: int) -> None:
        calls.append((queued, unsent))
        raise RuntimeError("the app's hook is broken")

    connection.on_lost = on_lost
    connection.open()
    try:
        await handshaken(connection)
        await tcp_mongrel2.stop()
        await until(lambda: calls, "the loss")
        assert connection.epoch == 1
        tcp_mongrel2.start()
        await handshaken(connection)
        connection.send(None, 1, b"to the new one")
        assert await tcp_mongrel2.replies(1) == [b"S 1:1, to the new one"]
    finally:
        await connection.close(flush_timeout=0.1)
    assert "on_lost failed" in caplog.text
    assert "the app's hook is broken" in caplog.text


async def test_without_on_lost_a_loss_is_logged_with_what_was_discarded(
    tcp_mongrel2: Mongrel2Side, caplog: pytest.LogCaptureFixture
) -> None:
    connection = tcp_mongrel2.connection(sender_id="S")
    connection.open()
    try:
        await handshaken(connection)
        for n in range(3):
            await tcp_mongrel2.push.send(b"old %d" % n)
        await until(lambda: connection._pull_sync.get(zmq.EVENTS) & zmq.POLLIN, "queued")
        await asyncio.sleep(0.05)  # all three in this process's queue
        await tcp_mongrel2.stop()
        await until(lambda: connection.epoch == 1, "the loss")
    finally:
        await connection.close(flush_timeout=0.1)
    found = re.search(r"Mongrel2 went away .*: (\d+) queued requests and (\d+) unsent", caplog.text)
    assert found, caplog.text
    assert found[1] == "3"


async def old_requests_after_the_publisher_lost_mongrel2(
    tcp_mongrel2: Mongrel2Side,
) -> Mongrel2Connection:
    """A connection whose publisher reported the loss, and 3 requests that came after it.

    The PULL socket reports its own disconnect later, once it queued all the old Mongrel2
    sent: everything it holds until then belongs to the lost epoch. (The reports are fed
    in by hand: their order over real sockets is up to ZeroMQ's threads.)
    """
    connection = tcp_mongrel2.connection(sender_id="S")
    connection.on_lost = lambda queued, unsent: None
    connection.open()
    await handshaken(connection)
    connection._on_events([(_PUB, zmq.EVENT_DISCONNECTED)])
    assert connection.epoch == 1
    for n in range(3):
        await tcp_mongrel2.push.send(b"old %d" % n)
    await until(lambda: connection._pull_sync.get(zmq.EVENTS) & zmq.POLLIN, "queued")
    await asyncio.sleep(0.05)
    return connection


async def test_the_pull_sockets_late_report_discards_and_counts_what_it_still_held(
    tcp_mongrel2: Mongrel2Side, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="brubeck.connection")
    connection = await old_requests_after_the_publisher_lost_mongrel2(tcp_mongrel2)
    try:
        connection._on_events([(_PULL, zmq.EVENT_DISCONNECTED)])
        assert connection.epoch == 1  # the same loss, reported twice: one epoch
        received: list[bytes] = []
        connection.start_reading(received.append)
        await tcp_mongrel2.push.send(b"new")
        await until(lambda: received, "the new request")
        assert received == [b"new"]
    finally:
        await connection.close(flush_timeout=0.1)
    assert "discarded 3 more messages from the Mongrel2 that went away" in caplog.text


async def test_a_graceful_stop_after_a_loss_does_not_answer_the_old_requests(
    tcp_mongrel2: Mongrel2Side,
) -> None:
    connection = await old_requests_after_the_publisher_lost_mongrel2(tcp_mongrel2)
    try:
        assert connection.stop_receiving() == []
    finally:
        await connection.close(flush_timeout=0.1)


async def test_stop_receiving_on_a_closed_connection_takes_nothing(
    new_mongrel2: Callable[..., Mongrel2Side],
) -> None:
    connection = new_mongrel2().connection()
    assert connection.stop_receiving() == []
    connection.open()
    await connection.close()
    assert connection.stop_receiving() == []


# WebSocket owners that do not read (ownership.py)


def handshake(client: TestClient, conn_id: int) -> bytes:
    message = client.build_message(
        "WEBSOCKET_HANDSHAKE",
        "/count",
        conn_id=conn_id,
        headers={
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version": "13",
        },
    )
    return message[: -len(b"0:,")] + tnetstring.dumps(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


def first_of_two_peers() -> tuple[Brubeck, list[str]]:
    """App 0 of two WebSocket peers (the other never starts), and the peers' addresses."""
    peers = [f"inproc://ws-edge-{uuid.uuid4()}" for _ in range(2)]
    app = Brubeck(
        handler_tuples=[(r"^/count$", Counter)],
        settings={"name": "only", "websocket_peers": peers, "websocket_peer_index": 0},
    )
    return app, peers


@pytest.fixture
async def owner_is_down(monkeypatch: pytest.MonkeyPatch) -> Any:
    """App 0 of 2, whose peer never started; its queue to that peer holds one message."""
    monkeypatch.setattr(ownership_module, "PEER_QUEUE", 1)
    app, _ = first_of_two_peers()
    async with TestClient(app, timeout=3.0) as client:
        await until(lambda: app.websockets.ownership is not None, "the ownership")
        ownership = app.websockets.ownership
        await client.send_raw(handshake(client, 1001))  # fills the queue to the peer
        await until(lambda: ownership.forwarded == 1, "the first forward")
        yield client, app


async def test_a_handshake_whose_owner_does_not_read_gets_503_and_a_close(
    owner_is_down: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = owner_is_down
    ws = await client.websocket_connect("/count")  # connection 1: owned by the missing peer
    assert not ws.accepted and ws.response is not None
    assert ws.response.status_code == 503
    assert ws.response.closed
    assert "has 1 messages waiting: is it running?" in caplog.text


async def test_a_frame_whose_owner_does_not_read_gets_close_1011_and_a_close(
    owner_is_down: Any,
) -> None:
    client, _ = owner_is_down
    ws = TestWebSocket(client, 3, handshake(client, 3))  # accepted earlier, by its owner
    await ws.send("hello")
    code, payload = await ws.receive()
    assert code == 0x8 and payload[:2] == (1011).to_bytes(2, "big")
    assert b"owner process unavailable" in payload
    assert await client.receive(3) == b""


async def test_junk_from_a_websocket_peer_is_logged_and_receiving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, peers = first_of_two_peers()
    async with TestClient(app, timeout=3.0) as client:
        await until(lambda: app.websockets.ownership is not None, "the ownership")
        ownership = app.websockets.ownership
        foreign = zmq.asyncio.Context.instance().socket(zmq.PUSH)
        foreign.linger = 0
        foreign.connect(peers[0])
        try:
            await foreign.send_multipart([b"X", b"what is this"])
            await foreign.send_multipart([b"R", b"\xff\xfe", b"frame"])  # not a UTF-8 room
            await foreign.send_multipart([b"M", handshake(client, 2)])  # connection 2 is ours
            reply = await client.receive(2)
        finally:
            foreign.close()
        assert reply.startswith(b"HTTP/1.1 101 ")
        assert ownership.received == 3
    assert "dropped a malformed message from a WebSocket peer" in caplog.text
    assert "a message from a WebSocket peer failed" in caplog.text
