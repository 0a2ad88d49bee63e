"""Peer input that was mishandled, minimised, one test each: WebSocket frame messages and
handshakes (found by coverage-guided fuzzing), a multipart message at the services broker
(fuzzing), and a JSON payload echoed by a worker (found reading the codec's fuzz results)."""

from __future__ import annotations

from typing import Any

import pytest
import tnetstring

from brubeck import Brubeck, WebSocketHandler
from brubeck.services import mdp
from brubeck.services.broker import Broker
from brubeck.services.worker import ServiceWorker
from brubeck.testing import TestClient
from brubeck.wsframes import CloseCode, FrameError, Opcode, encode_close, parse_flags


class Echo(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


def echo_app() -> Brubeck:
    return Brubeck(handler_tuples=[(r"^/ws$", Echo)])


@pytest.mark.parametrize("value", [129, [129], {b"0x81": b""}, True, 1.5])
def test_a_flags_header_that_is_not_a_string_is_a_protocol_error(value: Any) -> None:
    """A tnetstring number (or dict) as FLAGS raised TypeError instead of FrameError 1002."""
    with pytest.raises(FrameError) as caught:
        parse_flags(value)
    assert caught.value.code == CloseCode.PROTOCOL_ERROR


async def test_a_numeric_flags_header_closes_the_socket_with_1002() -> None:
    """``5:FLAGS,3:129#`` raised TypeError out of handle_message; the socket was never closed."""
    async with TestClient(echo_app(), timeout=2.0) as client:
        ws = await client.websocket_connect("/ws")
        headers = {**ws._headers, b"FLAGS": 129}
        await client.send_raw(ws._prefix + tnetstring.dumps(headers) + tnetstring.dumps(b"hi"))
        reason = "bad FLAGS header 129"
        assert await ws.receive() == (Opcode.CLOSE, encode_close(CloseCode.PROTOCOL_ERROR, reason))


async def test_a_ping_over_125_bytes_is_refused_not_echoed_as_a_bad_pong() -> None:
    """A 126-byte ping was answered with a 126-byte pong, a control frame RFC 6455 forbids."""
    async with TestClient(echo_app(), timeout=2.0) as client:
        ws = await client.websocket_connect("/ws")
        await ws.send_frame(0x89, b"\x89" * 126)
        assert await ws.receive() == (
            Opcode.CLOSE,
            encode_close(CloseCode.PROTOCOL_ERROR, "a ping of 126 bytes"),
        )


class _Wire:
    """The broker's socket, without ZeroMQ: records what the broker sends."""

    backlog = 0

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> bool:
        self.sent.append(list(frames))
        return True


def socketless_broker(**options: Any) -> tuple[Broker, _Wire]:
    broker = Broker(**options)
    wire = broker._wire = _Wire()  # type: ignore[assignment]
    return broker, wire


def test_a_worker_ready_for_a_service_name_that_is_not_utf8_is_refused_not_raised() -> None:
    """READY for service b"\\xff" raised UnicodeDecodeError out of the broker's receive path.
    No client can name such a service, so the worker is now told to disconnect."""
    broker, wire = socketless_broker()
    broker._handle([b"w1", b"", mdp.WORKER, mdp.READY, b"\xff"], 0.0)
    assert len(broker._workers) == 0
    assert wire.sent == [[b"w1", b"", mdp.WORKER, mdp.DISCONNECT]]


def test_a_queued_request_for_a_service_name_that_is_not_utf8_expires_quietly() -> None:
    """Expiring a request for service b"\\xff" raised in _tick, which ends the broker's loop."""
    broker, _wire = socketless_broker(queue_timeout=1.0, max_queue=1)
    broker._handle([b"c1", b"", mdp.CLIENT, b"\xff", b"job"], 0.0)
    broker._handle([b"c2", b"", mdp.CLIENT, b"\xff", b"job"], 0.0)  # over max_queue
    broker._tick(5.0)
    assert broker.dropped == 2


async def test_a_subprotocol_with_crlf_is_refused_not_written_into_the_101() -> None:
    """An offered ``chat\\r\\nSet-Cookie: s=x`` went verbatim into the 101's header block."""

    class Picky(Echo):
        def select_subprotocol(self, subprotocols: list[str]) -> str | None:
            return subprotocols[0]

    app = Brubeck(handler_tuples=[(r"^/ws$", Picky)])
    async with TestClient(app, timeout=2.0) as client:
        offer = {"sec-websocket-protocol": "chat\r\nSet-Cookie: s=x"}
        ws = await client.websocket_connect("/ws", headers=offer)
        assert not ws.accepted
        assert ws.response is not None and ws.response.status_code == 400
        assert b"Set-Cookie" not in ws.response.raw.partition(b"\r\n\r\n")[0]


async def test_an_echoed_json_lone_surrogate_gets_an_error_reply() -> None:
    """An echoed JSON ``"\\ud800"`` raised UnicodeEncodeError: no reply, the worker wedged."""
    worker = ServiceWorker("tcp://127.0.0.1:1", "echo", lambda payload: payload)
    reply = await worker._answer((b"json", b'"\\ud800"'))
    assert reply[0] == b"error"
    assert reply[1].startswith(b"UnicodeEncodeError: ")
