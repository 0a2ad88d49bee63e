"""The error and edge branches of ``websocket.py`` and ``wsregistry.py``: handshakes that fail
late, clients that vanish mid-handshake, misbehaving callbacks, flow control, ids Mongrel2
reuses, and the app's stop. Each test drives them the way a client, Mongrel2 or an app can."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

import pytest
import tnetstring

from brubeck import Brubeck, HTTPError, WebSocketHandler, wsregistry
from brubeck.protocol import parse
from brubeck.testing import TestClient
from brubeck.wsframes import CloseCode, Opcode, encode_close, encode_frame
from tests import fixtures

ACCEPT = b"i7/c7XWCeQrSwxOumCFE1x/0KdY="  # §B7's accept key, the handshake's body
REPLY_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n"
)
ROUTE = r"^/ws/echo$"  # the path of the §B7 handshake


def handshake(conn_id: int = 26, body: bytes = ACCEPT, **extra: bytes) -> bytes:
    """The §B7 handshake, for another connection, body or extra (Mongrel2) headers."""
    message = parse(fixtures.WEBSOCKET_HANDSHAKE)
    headers = {**message.headers, **{k.encode(): v for k, v in extra.items()}}
    return b"%s %d %s %s%s" % (
        message.sender,
        conn_id,
        message.path,
        tnetstring.dumps(headers),
        tnetstring.dumps(body),
    )


def frame(conn_id: int, flags: bytes, body: bytes = b"") -> bytes:
    """A ``METHOD: WEBSOCKET`` message of the §B7 connection, under another id."""
    message = parse(fixtures.WEBSOCKET_HANDSHAKE)
    headers = {**message.headers, b"METHOD": b"WEBSOCKET", b"FLAGS": flags}
    return b"%s %d %s %s%s" % (
        message.sender,
        conn_id,
        message.path,
        tnetstring.dumps(headers),
        tnetstring.dumps(body),
    )


def credits_notice(conn_id: int, amount: int) -> bytes:
    headers = tnetstring.dumps({b"METHOD": b"JSON", b"DOWNLOAD_CREDITS": b"%d" % amount})
    return b"%s %d @* %s%s" % (
        fixtures.SENDER,
        conn_id,
        headers,
        tnetstring.dumps(b'{"type":"credits"}'),
    )


class Log(WebSocketHandler):
    """Records its callbacks in ``events``."""

    events: ClassVar[list[Any]] = []

    def open(self, *args: Any, **kwargs: Any) -> Any:
        Log.events.append(("open",))
        return None

    def on_message(self, message: str | bytes) -> Any:
        Log.events.append(("message", message))
        return None

    def on_close(self, code: int, reason: str) -> Any:
        Log.events.append(("close", code, reason))
        return None


@pytest.fixture(autouse=True)
def _reset() -> None:
    Log.events = []


def app_with(*routes: tuple[Any, ...], **kwargs: Any) -> Brubeck:
    return Brubeck(handler_tuples=routes, **kwargs)


async def round_trip(client: TestClient) -> None:
    """An HTTP request and its answer: every message sent before it has been handled."""
    await client.get("/nothing-here")


def silent(client: TestClient, conn_id: int) -> bool:
    return not client._inbox.get(b"%d" % conn_id)


async def close_frame(ws: Any) -> tuple[int, bytes]:
    """The next frame, which must be a close: its code and reason bytes."""
    opcode, payload = await ws.receive()
    assert opcode == Opcode.CLOSE, (opcode, payload)
    return int.from_bytes(payload[:2], "big"), payload[2:]


# Callbacks an app gets wrong


async def test_a_handler_without_on_message_closes_with_1011_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Forgetting on_message must not kill the process or leave the client hanging."""

    class NoOnMessage(WebSocketHandler):
        pass

    async with TestClient(app_with((r"^/ws$", NoOnMessage))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("hello")
        assert await close_frame(ws) == (CloseCode.INTERNAL_ERROR, b"")
    assert "NoOnMessage must define on_message" in caplog.text


async def test_an_async_on_message_that_raises_closes_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class AsyncFailing(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("async bug")

    async with TestClient(app_with((r"^/ws$", AsyncFailing))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("x")
        assert await close_frame(ws) == (CloseCode.INTERNAL_ERROR, b"")
    assert "AsyncFailing.on_message failed" in caplog.text
    assert "async bug" in caplog.text


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_an_on_close_that_raises_is_logged_under_its_own_name(
    asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The log must name the app's callback, not the internal step that called it."""

    class BadClose(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            pass

        if asynchronous:

            async def on_close(self, code: int, reason: str) -> None:
                await asyncio.sleep(0)
                raise RuntimeError("close bug")

        else:

            def on_close(self, code: int, reason: str) -> None:
                raise RuntimeError("close bug")

    async with TestClient(app_with((r"^/ws$", BadClose))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.disconnect()
        await round_trip(client)
        assert client.app.websockets.get(ws.conn_id) is None
    assert "BadClose.on_close failed" in caplog.text
    assert "close bug" in caplog.text


async def test_a_queued_message_whose_callback_raises_closes_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message held behind a slow callback fails later, in the task: still 1011, logged."""
    gate = asyncio.Event()

    class Queue(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            if message == "boom":
                raise RuntimeError("queued bug")
            await gate.wait()
            self.write_message(message)

    async with TestClient(app_with((r"^/ws$", Queue))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("slow")
        await ws.send("boom")
        await round_trip(client)  # "boom" now waits behind "slow"
        gate.set()
        assert await ws.receive_text() == "slow"
        assert await close_frame(ws) == (CloseCode.INTERNAL_ERROR, b"")
    assert "queued bug" in caplog.text


async def test_a_task_escaping_with_a_base_exception_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only a BaseException gets past the callbacks' own handling: it must not vanish."""

    class Escape(BaseException):
        pass

    class Escaping(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            await asyncio.sleep(0)
            raise Escape("escaped")

    async with TestClient(app_with((r"^/ws$", Escaping))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("x")
        for _ in range(100):
            if "a WebSocket task failed" in caplog.text:
                break
            await asyncio.sleep(0.005)
    assert "a WebSocket task failed" in caplog.text and "escaped" in caplog.text


async def test_ping_refuses_a_payload_over_125_bytes() -> None:
    class Pinger(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            try:
                self.ping(b"x" * 126)
            except ValueError as exc:
                self.write_message(str(exc))
            self.ping("y" * 125)

    async with TestClient(app_with((r"^/ws$", Pinger))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("go")
        assert await ws.receive_text() == "a ping carries at most 125 bytes, got 126"
        assert await ws.receive() == (Opcode.PING, b"y" * 125)  # the connection lives on


async def test_close_called_twice_sends_one_close_frame() -> None:
    class DoubleClose(Log):
        def on_message(self, message: str | bytes) -> None:
            self.close(4000, "first")
            self.close(4001, "second")

    async with TestClient(app_with((r"^/ws$", DoubleClose))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("x")
        assert await close_frame(ws) == (4000, b"first")
        await ws.close(4000)
        await ws.wait_closed()
        with pytest.raises(ConnectionError):
            await ws.receive()  # no second close frame
    assert [e for e in Log.events if e[0] == "close"] == [("close", 4000, "")]


async def test_join_after_the_close_is_ignored() -> None:
    """A closed handler left in a room would never be collected."""

    class Ghost(Log):
        def on_close(self, code: int, reason: str) -> None:
            self.join("ghosts")

    async with TestClient(app_with((r"^/ws$", Ghost))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.close()
        await ws.wait_closed()
        assert client.app.websockets.members("ghosts") == frozenset()


def test_broadcast_from_an_app_with_no_connection_says_so() -> None:
    app = app_with((r"^/ws$", Log))
    with pytest.raises(RuntimeError, match="no msg_conn"):
        app.websockets.broadcast("hello", to="lobby")


# Handshakes that fail late, or are answered otherwise


async def test_an_async_open_that_raises_refuses_the_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class AsyncRefusing(Log):
        async def open(self, why: str) -> None:
            await asyncio.sleep(0)
            if why == "forbidden":
                raise HTTPError(403, "not you")
            raise RuntimeError("broken async open")

    async with TestClient(app_with((r"^/ws/(\w+)$", AsyncRefusing))) as client:
        ws = await client.websocket_connect("/ws/forbidden")
        assert ws.response is not None and ws.response.status_code == 403 and ws.closed
        ws = await client.websocket_connect("/ws/broken")
        assert ws.response is not None and ws.response.status_code == 500 and ws.closed
    assert "broken async open" in caplog.text
    assert Log.events == []  # on_close only follows an open that returned


async def test_async_prepare_then_async_open() -> None:
    class BothAsync(Log):
        async def prepare(self) -> None:
            await asyncio.sleep(0)
            self.user = "ann"

        async def open(self, mode: str) -> None:
            await asyncio.sleep(0)
            if mode == "fail":
                raise HTTPError(409, "not now")
            self.write_message(f"hi {self.user}")

    async with TestClient(app_with((r"^/ws/(\w+)$", BothAsync))) as client:
        ws = await client.websocket_connect("/ws/ok")
        assert ws.accepted
        assert await ws.receive_text() == "hi ann"
        ws = await client.websocket_connect("/ws/fail")
        assert ws.response is not None and ws.response.status_code == 409 and ws.closed


async def test_a_handshake_without_the_accept_key_is_answered_400() -> None:
    """Only a broken or foreign Mongrel2 sends this; a 101 without the key is useless."""
    async with TestClient(app_with((ROUTE, Log))) as client:
        await client.send_raw(handshake(body=b""))
        reply = await client.receive(26)
        assert reply.startswith(b"HTTP/1.1 400 ") and b"accept key" in reply
        assert await client.receive(26) == b""
    assert Log.events == []


async def test_prepare_that_answers_itself_is_sent_instead_of_the_101() -> None:
    class LoginFirst(Log):
        def prepare(self) -> None:
            self.redirect("/login")

    async with TestClient(app_with((r"^/ws$", LoginFirst))) as client:
        ws = await client.websocket_connect("/ws")
        assert ws.response is not None and ws.response.status_code == 302
        assert ws.response.headers["location"] == "/login"
        assert ws.closed
    assert Log.events == []


async def test_close_in_open_then_raising_refuses_and_forgets_the_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The refusal replaces the close: no close frame, no close timeout firing later."""
    caplog.set_level(logging.INFO, logger="brubeck.websocket")

    class Confused(Log):
        close_timeout = 0.02

        def open(self) -> None:
            self.close(4000)
            raise RuntimeError("changed my mind")

    async with TestClient(app_with((r"^/ws$", Confused))) as client:
        ws = await client.websocket_connect("/ws")
        assert ws.response is not None and ws.response.status_code == 500 and ws.closed
        assert b"\x88" not in ws.response.raw
        await asyncio.sleep(0.06)
        await round_trip(client)
        assert silent(client, ws.conn_id)
    assert "no answer to the close frame" not in caplog.text
    assert Log.events == []


# Clients that vanish during an async handshake


class Gated(Log):
    """Opens when ``gate`` is set; fails then if ``fail`` is."""

    gate: ClassVar[asyncio.Event]
    fail: ClassVar[bool] = False

    async def open(self, *args: Any, **kwargs: Any) -> None:
        await Gated.gate.wait()
        self.write_message("too late")
        if Gated.fail:
            raise RuntimeError("open failed after the client left")
        Log.events.append(("open",))


async def vanish_during_open(client: TestClient) -> None:
    """Handshake on connection 26, then Mongrel2's disconnect notice before open returns."""
    await client.send_raw(handshake())
    registry = client.app.websockets
    while registry.get(26) is None:
        await asyncio.sleep(0.002)
    await client.send_raw(fixtures.with_conn_id(fixtures.DISCONNECT, 26))
    while registry.get(26) is not None:
        await asyncio.sleep(0.002)
    Gated.gate.set()
    await asyncio.sleep(0.01)
    await round_trip(client)


async def test_a_client_gone_during_async_open_gets_nothing_and_on_close_once() -> None:
    """Never write to an id known gone (Mongrel2 may give it to a new client)."""
    Gated.gate, Gated.fail = asyncio.Event(), False
    async with TestClient(app_with((ROUTE, Gated))) as client:
        await vanish_during_open(client)
        assert silent(client, 26)  # no 101, no "too late", no hang-up
        assert len(client.app.websockets) == 0
    assert Log.events == [("open",), ("close", CloseCode.ABNORMAL, "")]


async def test_an_open_failing_after_the_client_left_is_logged_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The app's bug must show even though there is nobody to answer."""
    Gated.gate, Gated.fail = asyncio.Event(), True
    async with TestClient(app_with((ROUTE, Gated))) as client:
        await vanish_during_open(client)
        assert silent(client, 26)  # no 500 to an id that is gone
    assert "open failed after the client left" in caplog.text
    assert Log.events == []  # open never returned: no on_close


async def test_a_frame_waiting_for_the_pace_is_dropped_when_the_client_vanishes() -> None:
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        handler = client.app.websockets.get(ws.conn_id)
        assert handler is not None
        assert repr(handler) == f"<Log conn=b'{ws.conn_id}'>"
        conn = client.app.msg_conn
        assert conn is not None
        sent: list[bytes] = []
        send_raw = conn.send_raw
        conn.send_raw = lambda data: (sent.append(data), send_raw(data))[1]  # type: ignore[method-assign]
        handler.write_message("not yet sent")  # leaves at the end of this turn of the loop
        client.app.websockets.connection_closed(handler.conn_id)  # ...but the client is gone
        await asyncio.sleep(0.01)
        assert sent == []
    assert Log.events[-1] == ("close", CloseCode.ABNORMAL, "")


# Misbehaving clients and Mongrel2's conditions


async def test_a_client_flooding_a_slow_handler_is_closed_with_1008() -> None:
    gate = asyncio.Event()

    class Slow(WebSocketHandler):
        max_pending_messages = 2

        async def on_message(self, message: str | bytes) -> None:
            await gate.wait()

    async with TestClient(app_with((r"^/ws$", Slow))) as client:
        ws = await client.websocket_connect("/ws")
        for n in range(4):  # one running, two held, one too many
            await ws.send(str(n))
        await round_trip(client)
        gate.set()
        assert await close_frame(ws) == (CloseCode.POLICY_VIOLATION, b"too many messages waiting")


async def test_subprotocols_offered_to_a_handler_that_picks_none() -> None:
    """RFC 6455: a server that speaks none of them accepts without naming one."""
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws", subprotocols=["chat.v1", "chat.v2"])
        assert ws.accepted and ws.response is not None
        assert "sec-websocket-protocol" not in ws.response.headers


async def test_under_download_flow_control_frames_wait_for_credits_in_order() -> None:
    """With ``download.flow_control`` each frame goes out as Mongrel2's credits allow."""

    class Three(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            for digit in "012":
                self.write_message(digit * 100)

    room = len(REPLY_101) + 102 + 50  # the 101 and one 100-byte message
    async with TestClient(app_with((ROUTE, Three))) as client:
        await client.send_raw(handshake(DOWNLOAD_CREDITS=b"%d" % room))
        assert await client.receive(26) == REPLY_101
        await client.send_raw(frame(26, b"0x81", b"go"))
        assert await client.receive(26) == encode_frame(Opcode.TEXT, b"0" * 100)
        await round_trip(client)
        assert silent(client, 26)  # the others wait for credits
        await client.send_raw(credits_notice(26, 100_000))
        assert await client.receive(26) == encode_frame(Opcode.TEXT, b"1" * 100)
        assert await client.receive(26) == encode_frame(Opcode.TEXT, b"2" * 100)


# The registry: ids Mongrel2 reuses, unknown connections, the app's stop


async def test_a_handshake_reusing_a_live_id_ends_the_old_handler_silently() -> None:
    """A restarted Mongrel2 reuses ids: the old handler closes, the new client is untouched."""

    class Member(Log):
        def open(self) -> None:
            Log.events.append(("open",))
            self.join("room")

    async with TestClient(app_with((ROUTE, Member))) as client:
        await client.send_raw(handshake())
        assert await client.receive(26) == REPLY_101
        first = client.app.websockets.get(26)
        await client.send_raw(handshake())
        assert await client.receive(26) == REPLY_101  # no close frame, no hang-up first
        second = client.app.websockets.get(26)
        assert second is not None and second is not first
        assert client.app.websockets.members("room") == {second}
        await client.send_raw(frame(26, b"0x81", b"to the new one"))
        await round_trip(client)
    assert Log.events[:3] == [("open",), ("close", CloseCode.ABNORMAL, ""), ("open",)]
    assert ("message", "to the new one") in Log.events


async def test_a_malformed_frame_for_an_unknown_connection_hangs_up_once() -> None:
    async with TestClient(app_with((ROUTE, Log))) as client:
        await client.send_raw(frame(26, b"bogus", b"x"))
        assert await client.receive(26) == b""  # no close frame for a frame we cannot read
        await client.send_raw(frame(26, b"bogus", b"x"))
        await round_trip(client)
        assert silent(client, 26)


async def test_the_memory_of_closed_ids_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the limit the oldest id is forgotten: a late frame for it is closed again."""
    monkeypatch.setattr(wsregistry, "_RECENT_LIMIT", 2)
    close_1011 = encode_frame(
        Opcode.CLOSE, encode_close(CloseCode.INTERNAL_ERROR, "connection state lost")
    )
    async with TestClient(app_with((ROUTE, Log))) as client:
        for cid in (31, 32, 33):
            await client.send_raw(frame(cid, b"0x81", b"x"))
            assert await client.receive(cid) == close_1011
            assert await client.receive(cid) == b""
        await client.send_raw(frame(31, b"0x81", b"x"))  # forgotten
        assert await client.receive(31) == close_1011
        assert await client.receive(31) == b""
        await client.send_raw(frame(33, b"0x81", b"x"))  # still remembered
        await round_trip(client)
        assert silent(client, 33)


async def test_stopping_waits_for_async_on_close_then_cancels_the_stuck_ones() -> None:
    done: list[str] = []

    class Closing(WebSocketHandler):
        async def on_close(self, code: int, reason: str) -> None:
            name = self.request.path.strip("/")
            try:
                await asyncio.sleep(0.01 if name == "quick" else 60)
                done.append(f"{name} finished")
            except asyncio.CancelledError:
                done.append(f"{name} cancelled")
                raise

    app = app_with((r"^/(quick|stuck)$", Closing), shutdown_timeout=0.1)
    async with TestClient(app) as client:
        await client.websocket_connect("/quick")
        await client.websocket_connect("/stuck")
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert sorted(done) == ["quick finished", "stuck cancelled"]
