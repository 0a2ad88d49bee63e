"""Adversarial checks of WebSockets: ``wsframes``, ``WebSocketHandler`` and the registry.

Bad input from a client (or an app) must end in a clear result: a close frame with the right
code, an HTTP refusal, a log line or an exception at the faulty call, never silent data loss,
frames out of order, frames to the wrong connection or unbounded memory. Tests whose docstring
starts with "Was a bug." pin a defect that was found while writing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

import pytest
import tnetstring

from brubeck import Brubeck, HTTPError, WebSocketHandler
from brubeck.protocol import parse
from brubeck.testing import TestClient
from brubeck.wsframes import (
    CloseCode,
    FrameError,
    Opcode,
    decode_frame,
    encode_close,
    encode_frame,
    parse_close,
    parse_flags,
)
from tests import fixtures

ACCEPT = b"i7/c7XWCeQrSwxOumCFE1x/0KdY="  # the accept key of the verified handshake (§B7)
REPLY_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n"
)
ROUTE = r"^/ws/echo$"  # the path of the verified handshake
CID = 26


def raw_handshake(conn_id: int = CID, **extra: bytes) -> bytes:
    """The verified handshake message, with extra Mongrel2 headers."""
    message = parse(fixtures.WEBSOCKET_HANDSHAKE)
    headers = {**message.headers, **{k.encode(): v for k, v in extra.items()}}
    return b"%s %d %s %s%s" % (
        message.sender,
        conn_id,
        message.path,
        tnetstring.dumps(headers),
        tnetstring.dumps(ACCEPT),
    )


def raw_frame(flags: bytes, body: bytes = b"", conn_id: int = CID) -> bytes:
    """A ``METHOD: WEBSOCKET`` message for the verified connection."""
    message = parse(fixtures.WEBSOCKET_HANDSHAKE)
    headers = {**message.headers, b"METHOD": b"WEBSOCKET", b"FLAGS": flags}
    return b"%s %d %s %s%s" % (
        message.sender,
        conn_id,
        message.path,
        tnetstring.dumps(headers),
        tnetstring.dumps(body),
    )


def credits_notice(amount: int, conn_id: int = CID) -> bytes:
    headers = tnetstring.dumps({b"METHOD": b"JSON", b"DOWNLOAD_CREDITS": b"%d" % amount})
    body = tnetstring.dumps(b'{"type":"credits"}')
    return b"%s %d @* %s%s" % (fixtures.SENDER, conn_id, headers, body)


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Every whole frame in ``data``, as ``(opcode, payload)``."""
    frames, offset = [], 0
    while (found := decode_frame(data, offset)) is not None:
        _fin, opcode, payload, offset = found
        frames.append((opcode, payload))
    assert offset == len(data), f"a cut frame: {data[offset:]!r}"
    return frames


async def round_trip(client: TestClient) -> None:
    """An HTTP request and its answer: every message sent before it has been handled."""
    await client.get("/nothing-here")


def pending(client: TestClient, conn_id: int = CID) -> list[bytes]:
    """What the app sent to a connection and the test did not read yet."""
    return list(client._inbox.get(b"%d" % conn_id, []))


def spy_on_sends(client: TestClient) -> list[bytes]:
    conn = client.app.msg_conn
    assert conn is not None
    sent: list[bytes] = []
    send_raw = conn.send_raw
    conn.send_raw = lambda data: (sent.append(data), send_raw(data))[1]  # type: ignore[method-assign]
    return sent


def targets_of(message: bytes) -> list[bytes]:
    """The connection ids a Mongrel2 reply is addressed to."""
    _sender, rest = message.split(b" ", 1)
    size, rest = rest.split(b":", 1)
    return rest[: int(size)].split()


class Log(WebSocketHandler):
    """Echoes text and binary messages; records callbacks in ``events``."""

    events: ClassVar[list[Any]] = []

    def open(self, *args: Any, **kwargs: Any) -> None:
        Log.events.append(("open",))

    def on_message(self, message: str | bytes) -> None:
        Log.events.append(("message", message))
        self.write_message(message)

    def on_ping(self, data: bytes) -> None:
        Log.events.append(("ping", data))

    def on_close(self, code: int, reason: str) -> None:
        Log.events.append(("close", code, reason))


@pytest.fixture(autouse=True)
def _reset() -> None:
    Log.events = []


def app_with(*routes: tuple[Any, ...], **settings: Any) -> Brubeck:
    return Brubeck(handler_tuples=routes, settings=settings)


async def close_code(ws: Any) -> int:
    """Read frames up to the app's close frame; its code."""
    while True:
        opcode, payload = await ws.receive()
        if opcode == Opcode.CLOSE:
            return int.from_bytes(payload[:2], "big")


# wsframes: values that must be refused


@pytest.mark.parametrize("flags", [b"0x181", b"0x1081", b"0x00000000000000181"])
def test_a_flags_value_wider_than_a_byte_is_a_protocol_error(flags: bytes) -> None:
    """Was a bug. FLAGS is frame byte 0: ``0x181`` is no byte, yet it read as a text message.

    ``parse_flags`` masks the opcode and RSV bits out of any integer and never checks the
    value fits in 8 bits.
    """
    with pytest.raises(FrameError) as error:
        parse_flags(flags)
    assert error.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("code", [1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535, 0])
def test_close_codes_never_on_the_wire_are_refused_when_received(code: int) -> None:
    """Reserved and out-of-range codes in a received close frame are a protocol error."""
    with pytest.raises(FrameError) as error:
        parse_close(code.to_bytes(2, "big") + b"why")
    assert error.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("code", [1012, 1013, 1014, 3000, 4999])
def test_registered_and_private_close_codes_are_accepted(code: int) -> None:
    """IANA's 1012-1014 and the private ranges pass, with their reason."""
    assert parse_close(code.to_bytes(2, "big") + "é".encode()) == (code, "é")


def test_encode_close_reason_limit_counts_utf8_bytes_not_characters() -> None:
    """A 123-byte reason fits a control frame; one more byte (a split 2-byte char) does not."""
    assert len(encode_close(1000, "é" * 61 + "x")) == 125
    with pytest.raises(ValueError):
        encode_close(1000, "é" * 61 + "xy")


# The handler: frames a client may send


async def test_a_close_frame_over_125_bytes_is_a_protocol_error() -> None:
    """Was a bug. A close payload of 202 bytes is no valid control frame (RFC 6455 §5.5).

    Pings over 125 bytes are refused with 1002, but ``_close_received`` (websocket.py) takes
    a long close as a normal one: it echoes 1000 and ``on_close`` gets a 200-byte reason.
    """
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send_frame(0x88, encode_close(1000) + b"r" * 200)
        assert await close_code(ws) == CloseCode.PROTOCOL_ERROR
        await ws.wait_closed()
    assert Log.events[-1][:2] == ("close", CloseCode.PROTOCOL_ERROR)


async def test_a_ping_of_125_bytes_is_answered_and_126_closes_with_1002() -> None:
    """The control frame limit, at its edge, both ways."""
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.ping(b"p" * 125)
        assert await ws.receive() == (Opcode.PONG, b"p" * 125)
        await ws.ping(b"p" * 126)
        assert await close_code(ws) == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "payload",
    [
        b"\xed\xa0\x80",  # a UTF-16 surrogate, encoded
        b"\xf4\x90\x80\x80",  # past U+10FFFF
        b"\xc0\x80",  # an overlong NUL
        b"ok\xe2\x82",  # cut in the middle of a character
    ],
)
async def test_invalid_utf8_text_closes_with_1007_and_is_not_delivered(payload: bytes) -> None:
    """Text that is not UTF-8 never reaches ``on_message``."""
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send_frame(0x81, payload)
        assert await close_code(ws) == CloseCode.INVALID_DATA
    assert not [event for event in Log.events if event[0] == "message"]


async def test_a_close_reason_that_is_not_utf8_is_answered_1007() -> None:
    """The reason of a close frame must be UTF-8 too."""
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send_frame(0x88, encode_close(1000) + b"\xff")
        assert await close_code(ws) == CloseCode.INVALID_DATA
        await ws.wait_closed()
    assert Log.events[-1][:2] == ("close", CloseCode.INVALID_DATA)


async def test_the_size_limit_is_inclusive_and_counts_bytes() -> None:
    """``max_message_size`` bytes pass; one byte more closes with 1009 and is dropped."""

    class Small(Log):
        max_message_size = 4

    async with TestClient(app_with((r"^/ws$", Small))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("éé")  # 2 characters, 4 bytes
        assert await ws.receive_text() == "éé"
        await ws.send("ééx")  # 5 bytes
        assert await close_code(ws) == CloseCode.MESSAGE_TOO_BIG
    assert ("message", "ééx") not in Log.events


async def test_after_the_servers_close_data_is_dropped_and_pings_unanswered() -> None:
    """Once the close frame left, nothing else may follow it (RFC 6455 §5.5.1)."""

    class Closer(Log):
        close_timeout = 5.0

        def on_message(self, message: str | bytes) -> None:
            self.close(4000, "bye")

    async with TestClient(app_with((r"^/ws$", Closer))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("x")
        assert await ws.receive() == (Opcode.CLOSE, encode_close(4000, "bye"))
        await ws.send("late")
        await ws.ping(b"late")
        await round_trip(client)
        assert pending(client, ws.conn_id) == []
        await ws.close(4000)
        await ws.wait_closed()
    assert Log.events[-1] == ("close", 4000, "")


async def test_a_ping_during_an_async_open_is_answered_after_the_101() -> None:
    """Was a bug. A ping that arrives while ``open`` awaits never gets its pong.

    ``_receive`` (websocket.py) sends a pong only when ``_state == _OPEN``; in ``_CONNECTING``
    nothing is sent, though ``_send`` would hold the pong until the 101 left. RFC 6455 §5.5.2:
    a ping must be answered unless a close frame came first.
    """

    class SlowOpen(Log):
        async def open(self, *args: Any, **kwargs: Any) -> None:
            await asyncio.sleep(0.05)

    async with TestClient(app_with((ROUTE, SlowOpen)), timeout=1.0) as client:
        await client.send_raw(raw_handshake())
        await client.send_raw(raw_frame(b"0x89", b"are you there"))
        reply = await client.receive(CID)
        assert reply.startswith(REPLY_101)
        data = reply[len(REPLY_101) :]
        await round_trip(client)
        await asyncio.sleep(0.05)
        await round_trip(client)
        data += b"".join(pending(client))
        assert (Opcode.PONG, b"are you there") in split_frames(data)


async def test_a_refused_handshake_never_calls_on_ping() -> None:
    """Was a bug. A ping queued during an async ``open`` that then refuses reaches ``on_ping``.

    ``_deliver`` drops messages for a handler that never opened, but ``_receive`` feeds
    ``on_ping``/``on_pong`` unguarded (websocket.py), so they run on a refused handler whose
    ``open`` state was never set up.
    """

    class Refuses(Log):
        async def open(self, *args: Any, **kwargs: Any) -> None:
            await asyncio.sleep(0.05)
            raise HTTPError(403, "no")

    async with TestClient(app_with((ROUTE, Refuses))) as client:
        await client.send_raw(raw_handshake())
        await client.send_raw(raw_frame(b"0x89", b"hello?"))
        reply = await client.receive(CID)
        assert reply.startswith(b"HTTP/1.1 403 ")
        await round_trip(client)
    assert not [event for event in Log.events if event[0] == "ping"]


async def test_a_ping_flood_behind_a_slow_callback_is_bounded() -> None:
    """Was a bug. Pings sent while an async ``on_message`` runs pile up without any limit.

    ``max_pending_messages`` is only checked for data messages; every ping and pong is
    appended to ``_events`` by ``_feed(self.on_ping, ...)`` (websocket.py ``_receive``)
    however many wait, so a client can grow the queue (and memory) at will. Expected: the
    queue stays bounded (past the limit a close with 1008, as for data messages, or no
    queued ``on_ping`` for a handler that does not override it).
    """
    release = asyncio.Event()

    class Slow(WebSocketHandler):
        max_pending_messages = 10

        async def on_message(self, message: str | bytes) -> None:
            await release.wait()

    async with TestClient(app_with((r"^/ws$", Slow))) as client:
        ws = await client.websocket_connect("/ws")
        handler = client.app.websockets.get(ws.conn_id)
        assert handler is not None
        await ws.send("hold")
        for _ in range(200):
            await ws.ping(b"p")
        await round_trip(client)
        queued = len(handler._events)
        release.set()
        assert queued <= 2 * Slow.max_pending_messages, queued


# The handshake


async def test_a_malformed_origin_is_refused_403_not_a_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Was a bug. ``Origin: http://[::1`` answers 500 and logs a traceback at ERROR.

    ``check_origin`` (websocket.py) calls ``urlsplit``, which raises ValueError on an
    unclosed IPv6 bracket; ``_handshake`` turns that into an unexpected 500. An origin that
    cannot be parsed is not the page's own host: 403.
    """
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws", headers={"origin": "http://[::1"})
        assert ws.response is not None
        status = ws.response.status_code
    assert status == 403
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert ("open",) not in Log.events


@pytest.mark.parametrize(
    "origin", ["null", "", "http://testserver.evil.example", "http://evil.example/testserver"]
)
async def test_foreign_or_opaque_origins_are_refused(origin: str) -> None:
    """Sandboxed pages (``null``) and look-alike hosts do not pass the default check."""
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws", headers={"origin": origin})
        assert ws.response is not None and ws.response.status_code == 403
    assert Log.events == []


async def test_a_101_that_cannot_be_encoded_still_closes_an_opened_handler() -> None:
    """Was a bug. ``open`` returned, the 101 failed, and ``on_close`` never ran.

    ``set_header`` takes any text, but ``handshake_reply`` (wsframes.py) encodes the headers as
    latin-1. ``_accept`` (websocket.py) sets ``_opened``, ``_handshaken`` and ``_OPEN`` (and
    an idle timer) before building the 101, so when it raises, ``_refuse`` answers 500 and
    drops the handler without ``on_close``: whatever ``open`` set up leaks. Either ``open``
    must fail (refuse the header where it is set) or ``on_close`` must follow.
    """

    class Named(Log):
        def open(self, *args: Any, **kwargs: Any) -> None:
            self.set_header("X-Room", "snow \u2603")
            Log.events.append(("open returned",))

    async with TestClient(app_with((r"^/ws$", Named))) as client:
        ws = await client.websocket_connect("/ws")
        assert not ws.accepted
        await round_trip(client)
    opened = ("open returned",) in Log.events
    closed = [event for event in Log.events if event[0] == "close"]
    assert len(closed) == (1 if opened else 0), Log.events


async def test_a_subprotocol_with_a_newline_is_never_echoed() -> None:
    """The client's own offer goes back in the 101: CR/LF there is refused, not sent."""

    class Any1(Log):
        def select_subprotocol(self, subprotocols: list[str]) -> str | None:
            return subprotocols[0]

    async with TestClient(app_with((ROUTE, Any1))) as client:
        await client.send_raw(raw_handshake(**{"sec-websocket-protocol": b"v1\r\nX-Evil: 1"}))
        reply = await client.receive(CID)
        assert b"X-Evil" not in reply.split(b"\r\n\r\n", 1)[0]
        assert not reply.startswith(b"HTTP/1.1 101 ")


# Sending: what an app may pass


@pytest.mark.parametrize("value", [5, True, 0])
async def test_write_message_refuses_an_int_instead_of_sending_nul_bytes(value: Any) -> None:
    """Was a bug. ``write_message(5)`` sends a binary message of five NUL bytes.

    ``encode_message`` (wsframes.py) calls ``bytes(message)`` on anything that is not str,
    and ``bytes(5)`` is ``b"\\0" * 5``: silent garbage instead of a TypeError. The same path
    serves ``broadcast`` and ``ping(5)`` (``bytes(data)`` in websocket.py).
    """
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        handler = client.app.websockets.get(ws.conn_id)
        assert handler is not None
        with pytest.raises(TypeError):
            handler.write_message(value)
        await round_trip(client)
        assert pending(client, ws.conn_id) == []


async def test_write_message_with_a_lone_surrogate_raises_and_sends_nothing() -> None:
    """A str that cannot be UTF-8 fails at the call; no half frame leaves."""
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        handler = client.app.websockets.get(ws.conn_id)
        assert handler is not None
        with pytest.raises(UnicodeEncodeError):
            handler.write_message("\ud800")
        await round_trip(client)
        assert pending(client, ws.conn_id) == []


# Broadcasts


async def test_broadcast_to_a_connection_id_given_as_bytes_reaches_only_that_one() -> None:
    """Was a bug. ``broadcast(msg, to=b"26")`` delivers to connections 50 and 54.

    ``to`` is an iterable of targets and bytes iterates as ints, each taken as a connection
    id (``WebSocketRegistry.broadcast``/``send_frame``): the message goes to strangers. A
    single id (``handler.conn_id`` is bytes) must reach that connection, or be refused.
    """
    async with TestClient(app_with((ROUTE, Log))) as client:
        await client.send_raw(raw_handshake())
        assert await client.receive(CID) == REPLY_101
        sent = spy_on_sends(client)
        with contextlib.suppress(TypeError):  # refusing a lone id would do too
            client.app.websockets.broadcast("for 26 only", to=b"26")
        await round_trip(client)
    addressed = {cid for message in sent for cid in targets_of(message)}
    assert addressed <= {b"26", b"1"}, addressed  # 1: the round trip's own request


async def test_a_broadcast_to_an_id_keeps_the_order_of_that_connections_writes() -> None:
    """Was a bug. ``write_message("first")`` then a broadcast to the same id: "second" wins.

    ``send_frame`` (wsregistry.py) flushes a target's paced frames only when given the
    handler; a raw id of a handler of this process skips that and goes straight out,
    overtaking what the handler wrote in the same turn.
    """

    class Writer(Log):
        def on_message(self, message: str | bytes) -> None:
            self.write_message("first")
            self.application.websockets.broadcast("second", to=[int(self.conn_id)])

    async with TestClient(app_with((r"^/ws$", Writer))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("go")
        assert [await ws.receive_text(), await ws.receive_text()] == ["first", "second"]


async def test_a_broadcast_to_an_id_after_its_close_sends_nothing() -> None:
    """Was a bug. After ``close()``, a broadcast naming the connection's id still sends data,
    ahead of the close frame.

    Writes after the close are dropped for handlers (``_sendable``), but ``send_frame``
    (wsregistry.py) does not look raw ids up among its own handlers.
    """

    class Closer(Log):
        def on_message(self, message: str | bytes) -> None:
            self.close(4000)
            self.application.websockets.broadcast("after", to=[int(self.conn_id)])

    async with TestClient(app_with((r"^/ws$", Closer))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("go")
        assert await ws.receive() == (Opcode.CLOSE, encode_close(4000))
        await ws.close(4000)
        await ws.wait_closed()
        rest = ws._buffer
    assert (Opcode.TEXT, b"after") not in split_frames(rest)


async def test_a_broadcast_under_flow_control_waits_behind_frames_awaiting_credits() -> None:
    """Was a bug. With download flow control, a room broadcast overtakes frames that wait
    for credits (and is not counted against the window).

    ``send_frame`` (wsregistry.py) sends with ``conn.deliver`` directly; ``_flush`` has
    nothing to flush because ``_send`` gave the frames to the credit window, which still
    holds them. Frames of one connection must leave in the order they were written.
    """

    class Member(Log):
        def open(self, *args: Any, **kwargs: Any) -> None:
            self.join("room")

        def on_message(self, message: str | bytes) -> None:
            self.write_message("a" * 100)
            self.write_message("b" * 100)

    room = len(REPLY_101) + 102 + 50  # the 101 and one of the two 100-byte messages
    async with TestClient(app_with((ROUTE, Member)), timeout=1.0) as client:
        await client.send_raw(raw_handshake(DOWNLOAD_CREDITS=b"%d" % room))
        assert await client.receive(CID) == REPLY_101
        await client.send_raw(raw_frame(b"0x81", b"go"))
        data = await client.receive(CID)
        await round_trip(client)
        client.app.websockets.broadcast("news", to="room")
        await round_trip(client)
        await client.send_raw(credits_notice(100_000))
        texts = [payload for _, payload in split_frames(data)]
        while len(texts) < 3:
            texts += [payload for _, payload in split_frames(await client.receive(CID))]
    assert texts == [b"a" * 100, b"b" * 100, b"news"]


async def test_a_member_that_vanished_is_skipped_by_the_next_broadcast() -> None:
    """A disconnect notice between broadcasts removes the member: no frame, no count."""

    class Member(Log):
        def open(self, *args: Any, **kwargs: Any) -> None:
            self.join("room")

    async with TestClient(app_with((r"^/ws$", Member))) as client:
        sockets = [await client.websocket_connect("/ws") for _ in range(3)]
        await sockets[1].disconnect()
        await round_trip(client)
        sent = spy_on_sends(client)
        assert client.app.websockets.broadcast("hi", to="room") == 2
        await round_trip(client)
        for ws in (sockets[0], sockets[2]):
            assert await ws.receive_text() == "hi"
    addressed = {cid for message in sent for cid in targets_of(message)}
    assert b"%d" % sockets[1].conn_id not in addressed


async def test_a_member_closing_mid_room_still_gets_frames_in_order_then_none() -> None:
    """A member that starts closing keeps its close frame last; later broadcasts skip it."""

    class Member(Log):
        close_timeout = 5.0

        def open(self, *args: Any, **kwargs: Any) -> None:
            self.join("room")

        def on_message(self, message: str | bytes) -> None:
            self.write_message("mine")
            self.close(4001)

    async with TestClient(app_with((r"^/ws$", Member))) as client:
        a, b = [await client.websocket_connect("/ws") for _ in range(2)]
        await a.send("bye")
        assert await a.receive_text() == "mine"
        assert await a.receive() == (Opcode.CLOSE, encode_close(4001))
        assert client.app.websockets.broadcast("after", to="room") == 1
        assert await b.receive_text() == "after"
        await round_trip(client)
        assert pending(client, a.conn_id) == []


async def test_frames_after_the_close_handshake_go_nowhere() -> None:
    """A late frame for a finished connection neither reaches a handler nor gets a 1011."""
    async with TestClient(app_with((ROUTE, Log))) as client:
        await client.send_raw(raw_handshake())
        assert await client.receive(CID) == REPLY_101
        await client.send_raw(raw_frame(b"0x88", encode_close(1000)))
        assert await client.receive(CID) == encode_frame(Opcode.CLOSE, encode_close(1000))
        assert await client.receive(CID) == b""
        await client.send_raw(raw_frame(b"0x81", b"late"))
        await round_trip(client)
        assert pending(client) == []
    assert ("message", "late") not in Log.events


async def test_a_connection_named_twice_gets_a_broadcast_once_and_exclude_takes_its_id() -> None:
    """A handler and its own id in one ``to`` are one connection; ``exclude`` holds for both
    spellings."""

    class Twice(Log):
        def on_message(self, message: str | bytes) -> None:
            registry = self.application.websockets
            sent = registry.broadcast("once", to=[self, self.conn_id, int(self.conn_id)])
            skipped = registry.broadcast("never", to=[self.conn_id], exclude=self)
            self.write_message(f"counts {sent} {skipped}")

    async with TestClient(app_with((r"^/ws$", Twice))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("go")
        assert await ws.receive_text() == "once"
        assert await ws.receive_text() == "counts 1 0"
