"""WebSocketHandler driven through the app's real receive loop, with Mongrel2's side played by
``TestClient``: the handshake, frames, close codes, limits, pings and callbacks."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
import tnetstring

from brubeck import Brubeck, HTTPError, WebSocketHandler
from brubeck.protocol import parse
from brubeck.testing import TestClient
from brubeck.wsframes import CloseCode, Opcode, encode_close
from tests import fixtures

REPLY_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: i7/c7XWCeQrSwxOumCFE1x/0KdY=\r\n\r\n"
)


class Log(WebSocketHandler):
    """Echoes; records its callbacks in ``events``."""

    events: ClassVar[list[Any]] = []

    def open(self, *args: Any, **kwargs: Any) -> None:
        Log.events.append(("open", args, kwargs))

    def on_message(self, message: str | bytes) -> None:
        Log.events.append(("message", message))
        self.write_message(message)

    def on_close(self, code: int, reason: str) -> None:
        Log.events.append(("close", code, reason))


class Prefix(WebSocketHandler):
    """The §B7 echo handler: answers ``echo:`` + the message."""

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.write_message("echo:" + message)
        else:
            self.write_message(b"echo:" + message)


def app_with(*routes: tuple[Any, ...], **settings: Any) -> Brubeck:
    return Brubeck(handler_tuples=routes, settings=settings)


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    Log.events = []


def frame_message(handshake: bytes, flags: bytes, body: bytes) -> bytes:
    """A ``METHOD: WEBSOCKET`` message as Mongrel2 sends it after a given handshake."""
    message = parse(handshake)
    headers = {**message.headers, b"METHOD": b"WEBSOCKET", b"FLAGS": flags}
    prefix = b"%s %s %s " % (message.sender, message.conn_id, message.path)
    return prefix + tnetstring.dumps(headers) + tnetstring.dumps(body)


async def test_verified_session_byte_for_byte() -> None:
    """The §B7 transcript: what Mongrel2 sent in, what the handler must send back."""
    hs = fixtures.WEBSOCKET_HANDSHAKE
    async with TestClient(app_with((r"^/ws/echo$", Prefix))) as client:
        await client.send_raw(hs)
        assert await client.receive(26) == REPLY_101
        exchanges = [
            (b"0x81", b"hello text", b"\x81\x0fecho:hello text"),
            (b"0x82", b"\x00\x01binary", b"\x82\recho:\x00\x01binary"),
            (b"0x81", b"x" * 70000, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11uecho:" + b"x" * 70000),
            (b"0x81", b"frag1-frag2-frag3", b"\x81\x16echo:frag1-frag2-frag3"),
            (b"0x89", b"pingdata", b"\x8a\x08pingdata"),
            (b"0x88", b"\x03\xe8", b"\x88\x02\x03\xe8"),
        ]
        for flags, body, expected in exchanges:
            await client.send_raw(frame_message(hs, flags, body))
            assert await client.receive(26) == expected
        assert await client.receive(26) == b""  # then the connection is closed


async def test_open_gets_url_arguments_and_its_writes_follow_the_101() -> None:
    class Welcome(Log):
        async def open(self, room: str) -> None:
            await asyncio.sleep(0)
            self.write_message(f"welcome to {room}")
            self.write_message({"n": 1})

    async with TestClient(app_with((r"^/rooms/(?P<room>\w+)$", Welcome))) as client:
        ws = await client.websocket_connect("/rooms/lobby")
        assert ws.accepted and ws.response is not None
        assert ws.response.status_code == 101
        assert await ws.receive_text() == "welcome to lobby"
        assert await ws.receive_json() == {"n": 1}


async def test_text_binary_and_callbacks_in_order() -> None:
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("hé")
        assert await ws.receive_text() == "hé"
        await ws.send(b"\x00\xff")
        assert await ws.receive_bytes() == b"\x00\xff"
        await ws.close(4000, "done")
        assert await ws.receive() == (Opcode.CLOSE, encode_close(4000))
        await ws.wait_closed()
    assert Log.events == [
        ("open", (), {}),
        ("message", "hé"),
        ("message", b"\x00\xff"),
        ("close", 4000, "done"),
    ]


async def test_async_messages_are_handled_one_at_a_time_in_order() -> None:
    class Slow(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            assert isinstance(message, str)
            await asyncio.sleep(0.02 * (3 - int(message)))
            self.write_message(message)

    async with TestClient(app_with((r"^/ws$", Slow))) as client:
        ws = await client.websocket_connect("/ws")
        for n in "012":
            await ws.send(n)
        assert [await ws.receive_text() for _ in range(3)] == ["0", "1", "2"]


async def test_messages_sent_before_the_101_wait_for_open() -> None:
    class SlowOpen(Prefix):
        async def open(self) -> None:
            await asyncio.sleep(0.05)

    hs = fixtures.WEBSOCKET_HANDSHAKE
    async with TestClient(app_with((r"^/ws/echo$", SlowOpen))) as client:
        await client.send_raw(hs)
        await client.send_raw(frame_message(hs, b"0x81", b"early"))
        assert await client.receive(26) == REPLY_101
        assert await client.receive(26) == b"\x81\x0aecho:early"


async def test_a_burst_of_writes_is_coalesced_not_dropped() -> None:
    class Burst(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            for i in range(100):
                self.write_message(str(i))

    app = app_with((r"^/ws$", Burst))
    sent: list[bytes] = []
    send_to = app.send_to
    app.send_to = lambda request, data: (sent.append(data), send_to(request, data))[1]  # type: ignore[method-assign]
    async with TestClient(app) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("go")
        assert [await ws.receive_text() for _ in range(100)] == [str(i) for i in range(100)]
    # A hundred frames in few Mongrel2 messages: it drops a connection with 16 queued.
    assert len(sent) <= 4  # the 101, the burst, and the close when the app stops


@pytest.mark.parametrize(
    ("handler_body", "status"),
    [("refuse", 403), ("async_refuse", 401), ("raise", 500)],
)
async def test_refused_handshakes_answer_http_and_close(handler_body: str, status: int) -> None:
    class Refusing(Log):
        def prepare(self) -> Any:
            if handler_body == "refuse":
                raise HTTPError(403, "not you")
            if handler_body == "async_refuse":
                return self._refuse_later()
            return None

        async def _refuse_later(self) -> None:
            raise HTTPError(401, "who are you?")

        def open(self) -> None:
            raise RuntimeError("broken open")

    async with TestClient(app_with((r"^/ws$", Refusing))) as client:
        ws = await client.websocket_connect("/ws")
        assert not ws.accepted and ws.response is not None
        assert ws.response.status_code == status
        assert ws.response.closed
    assert Log.events == []  # on_close only follows an open that returned


async def test_unknown_path_plain_get_and_old_version() -> None:
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/nope")
        assert ws.response is not None and ws.response.status_code == 404 and ws.closed
        response = await client.get("/ws")
        assert response.status_code == 426 and response.headers["upgrade"] == "websocket"
        ws = await client.websocket_connect("/ws", headers={"sec-websocket-version": "8"})
        assert ws.response is not None and ws.response.status_code == 426
        assert ws.response.headers["sec-websocket-version"] == "13"


async def test_origin_check() -> None:
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws", headers={"origin": "http://evil.example"})
        assert ws.response is not None and ws.response.status_code == 403
        ws = await client.websocket_connect("/ws", headers={"origin": "http://testserver"})
        assert ws.accepted


async def test_subprotocol_selection() -> None:
    class Picky(Log):
        def select_subprotocol(self, subprotocols: list[str]) -> str | None:
            return "v2" if "v2" in subprotocols else ("bogus" if "bad" in subprotocols else None)

    async with TestClient(app_with((r"^/ws$", Picky))) as client:
        ws = await client.websocket_connect("/ws", subprotocols=["v1", "v2"])
        assert ws.response is not None
        assert ws.response.headers["sec-websocket-protocol"] == "v2"
        ws = await client.websocket_connect("/ws", subprotocols=["v1"])
        assert ws.accepted and ws.response is not None
        assert "sec-websocket-protocol" not in ws.response.headers
        ws = await client.websocket_connect("/ws", subprotocols=["bad"])
        assert ws.response is not None and ws.response.status_code == 500


async def close_code_after(client: TestClient, path: str, *frames: tuple[int, bytes]) -> int:
    """Send frames; return the code of the close frame the app answers with."""
    ws = await client.websocket_connect(path)
    for flags, body in frames:
        await ws.send_frame(flags, body)
    while True:
        opcode, payload = await ws.receive()
        if opcode == Opcode.CLOSE:
            await ws.close(int.from_bytes(payload[:2], "big"))
            await ws.wait_closed()
            return int.from_bytes(payload[:2], "big")


async def test_close_codes_for_bad_input() -> None:
    class Small(Log):
        max_message_size = 8

    app = app_with((r"^/ws$", Log), (r"^/small$", Small), websocket_max_message_size=16)
    async with TestClient(app) as client:
        assert await close_code_after(client, "/ws", (0x81, b"\xff\xfe")) == 1007
        assert await close_code_after(client, "/ws", (0x81, b"x" * 17)) == 1009
        assert await close_code_after(client, "/small", (0x82, b"x" * 9)) == 1009
        assert await close_code_after(client, "/ws", (0x83, b"")) == 1002
        assert await close_code_after(client, "/ws", (0xC1, b"x")) == 1002
    # The connection is failed: on_close gets the code the server sent, and its reason.
    closes = [event[1:] for event in Log.events if event[0] == "close"]
    assert [code for code, _reason in closes] == [1007, 1009, 1009, 1002, 1002]
    assert closes[0][1].startswith("text message is not UTF-8")
    assert ("message", "x" * 17) not in Log.events


async def test_client_close_payloads() -> None:
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send_frame(0x88, b"")
        assert await ws.receive() == (Opcode.CLOSE, b"")  # no code, none echoed
        await ws.wait_closed()
        ws = await client.websocket_connect("/ws")
        await ws.send_frame(0x88, b"\x03")
        assert await ws.receive() == (Opcode.CLOSE, encode_close(CloseCode.PROTOCOL_ERROR))
        await ws.wait_closed()
    closes = [event for event in Log.events if event[0] == "close"]
    assert closes == [("close", 1005, ""), ("close", 1002, "a close payload of one byte")]


async def test_server_close_waits_for_the_answer_then_times_out() -> None:
    class Closer(Log):
        close_timeout = 0.05

        def on_message(self, message: str | bytes) -> None:
            self.close(4001, "go away")
            self.write_message("dropped")  # writes after close() go nowhere

    async with TestClient(app_with((r"^/ws$", Closer))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("x")
        assert await ws.receive() == (Opcode.CLOSE, encode_close(4001, "go away"))
        await ws.wait_closed()  # nobody answered: hung up after close_timeout
        with pytest.raises(ConnectionError):
            await ws.receive()
    assert Log.events[-1] == ("close", 1006, "")


async def test_an_error_in_on_message_closes_with_1011() -> None:
    class Failing(Log):
        def on_message(self, message: str | bytes) -> None:
            raise RuntimeError("bug")

    async with TestClient(app_with((r"^/ws$", Failing))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send("x")
        assert await ws.receive() == (Opcode.CLOSE, encode_close(CloseCode.INTERNAL_ERROR))


async def test_disconnect_notice_calls_on_close_once() -> None:
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        await ws.disconnect()
        await ws.disconnect()
        await client.get("/nothing")  # a round trip: the notices were handled
        assert client.app.websockets.get(ws.conn_id) is None
    assert [e for e in Log.events if e[0] == "close"] == [("close", 1006, "")]


async def test_pings_keep_alive_and_timeout() -> None:
    class Quiet(Log):
        ping_interval = 0.05
        ping_timeout = 0.1

    async with TestClient(app_with((r"^/ws$", Quiet))) as client:
        ws = await client.websocket_connect("/ws")
        assert await ws.receive() == (Opcode.PING, b"")
        await ws.send_frame(0x8A, b"")  # the pong: alive
        assert await ws.receive() == (Opcode.PING, b"")
        await ws.wait_closed()  # no pong this time: hung up
        # Each ping came with a keep-alive, so Mongrel2's reaper spares the quiet socket.
        assert len(ws.controls) >= 2
        assert all(ctl == [b"ctl", {b"keep-alive": True}] for ctl in ws.controls)
    assert Log.events[-1] == ("close", 1006, "")


async def test_a_quiet_client_that_answers_is_pinged_again_and_again() -> None:
    class Quiet(Log):
        ping_interval = 0.03
        ping_timeout = 1.0

    async with TestClient(app_with((r"^/ws$", Quiet))) as client:
        ws = await client.websocket_connect("/ws")
        for _ in range(3):
            assert await ws.receive() == (Opcode.PING, b"")
            await ws.send_frame(0x8A, b"")
        assert len(ws.controls) >= 2 and not ws.closed


async def test_frame_for_an_unknown_connection_is_closed_with_1011() -> None:
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        raw = frame_message(fixtures.WEBSOCKET_HANDSHAKE, b"0x81", b"hello")
        await client.send_raw(raw)
        close = await client.receive(26)
        assert close[:4] == b"\x88\x17\x03\xf3"  # close, 1011
        assert await client.receive(26) == b""
        await client.send_raw(raw)  # once: later frames of that id are ignored
        await client.get("/x")
        assert not client._inbox.get(b"26")


async def test_stopping_the_app_closes_sockets_with_1001() -> None:
    async with TestClient(app_with((r"^/ws$", Log))) as client:
        ws = await client.websocket_connect("/ws")
        client.app.stop()
        assert await ws.receive() == (Opcode.CLOSE, encode_close(CloseCode.GOING_AWAY))
        await ws.wait_closed()
    assert Log.events[-1] == ("close", 1001, "the server is stopping")
