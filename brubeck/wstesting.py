"""Mongrel2's side of a WebSocket session, for testing apps without a Mongrel2.

``await client.websocket_connect(path)`` (``brubeck.testing.TestClient``) sends the handshake
the way Mongrel2 passes it on (``METHOD: WEBSOCKET_HANDSHAKE``, the accept key as the body),
then each ``send`` is one whole message with a ``FLAGS`` header, as Mongrel2 delivers them after
unmasking and reassembling. What the app answers is read back as frames.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any

import tnetstring
import ujson

from .protocol import parse
from .wsframes import Opcode, accept_key, decode_frame, encode_close

if TYPE_CHECKING:
    from .testing import TestClient, TestResponse


class TestWebSocket:
    """One WebSocket connection to the app under test.

    ``response`` is the app's answer to the handshake and ``accepted`` whether it was a 101;
    ``closed`` turns True once the app hung up (an empty message, as Mongrel2 would see it);
    ``controls`` collects the ctl messages (keep-alive) the app sent for the connection.
    """

    __test__ = False

    def __init__(self, client: TestClient, conn_id: int, handshake: bytes) -> None:
        self.client = client
        self.conn_id = conn_id
        message = parse(handshake)
        self._sender = message.sender
        self._prefix = b"%s %d %s " % (message.sender, conn_id, message.path)
        self._headers = {**message.headers, b"METHOD": b"WEBSOCKET"}
        self._buffer = b""
        self.response: TestResponse | None = None
        self.accepted = False
        self.closed = False

    @classmethod
    async def connect(
        cls,
        client: TestClient,
        path: str,
        subprotocols: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestWebSocket:
        from .testing import TestResponse

        key = base64.b64encode(os.urandom(16)).decode()
        upgrade: dict[str, str | list[str]] = {
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-key": key,
            "sec-websocket-version": "13",
        }
        if subprotocols:
            upgrade["sec-websocket-protocol"] = ", ".join(subprotocols)
        upgrade.update(headers or {})
        path, _, query = path.partition("?")
        conn_id = next(client._conn_ids)
        built = parse(
            client.build_message(
                "WEBSOCKET_HANDSHAKE", path, conn_id=conn_id, query=query, headers=upgrade
            )
        )
        raw = b"%s %d %s %s%s" % (
            built.sender,
            conn_id,
            built.path,
            tnetstring.dumps(built.headers),
            tnetstring.dumps(accept_key(key)),
        )
        socket = cls(client, conn_id, raw)
        await client.send_raw(raw)
        reply = await client.receive(conn_id)
        head, _, rest = reply.partition(b"\r\n\r\n")
        socket.accepted = head.startswith(b"HTTP/1.1 101 ")
        if socket.accepted:
            socket.response = TestResponse(head + b"\r\n\r\n", False)
            socket._buffer = rest
        else:
            socket.response = TestResponse(reply, False)
            await socket.wait_closed()
            socket.response.closed = True
        return socket

    # Client to app

    async def send(self, message: str | bytes | dict | list) -> None:
        """A whole message: text for str (dict/list as JSON), binary for bytes."""
        if isinstance(message, (dict, list)):
            message = ujson.dumps(message)
        if isinstance(message, str):
            await self.send_frame(0x81, message.encode("utf-8"))
        else:
            await self.send_frame(0x82, bytes(message))

    async def send_frame(self, flags: int, payload: bytes = b"") -> None:
        """Any message, with the ``FLAGS`` byte Mongrel2 would report (0x81 text, 0x89 ping…)."""
        headers = {**self._headers, b"FLAGS": b"0x%X" % flags}
        await self.client.send_raw(
            self._prefix + tnetstring.dumps(headers) + tnetstring.dumps(payload)
        )

    async def ping(self, data: bytes = b"") -> None:
        await self.send_frame(0x80 | Opcode.PING, data)

    async def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Send a close frame; the app answers with its own, then hangs up."""
        await self.send_frame(0x80 | Opcode.CLOSE, encode_close(code, reason))

    async def disconnect(self) -> None:
        """Mongrel2's notice that the client went away without a close frame."""
        headers = tnetstring.dumps({b"METHOD": b"JSON"})
        body = tnetstring.dumps(b'{"type":"disconnect"}')
        await self.client.send_raw(b"%s %d @* %s%s" % (self._sender, self.conn_id, headers, body))

    # App to client

    async def receive(self) -> tuple[int, bytes]:
        """The next frame the app sent: ``(opcode, payload)``.

        Raises:
            ConnectionError: the app hung up and no frame is left.
            TimeoutError: nothing came within the client's timeout.
        """
        while True:
            frame = decode_frame(self._buffer)
            if frame is not None:
                _fin, opcode, payload, end = frame
                self._buffer = self._buffer[end:]
                return opcode, payload
            if self.closed:
                raise ConnectionError("the app closed the WebSocket")
            self._take(await self.client.receive_reply(self.conn_id))

    @property
    def controls(self) -> list[Any]:
        """Mongrel2 control messages the app sent for this connection (``[b"ctl", {...}]``)."""
        return self.client.controls.get(b"%d" % self.conn_id, [])

    def _take(self, data: bytes) -> None:
        if not data:
            self.closed = True
        else:
            self._buffer += data

    async def receive_text(self) -> str:
        opcode, payload = await self.receive()
        if opcode != Opcode.TEXT:
            raise AssertionError(f"expected a text message, got opcode {opcode:#x}: {payload!r}")
        return payload.decode("utf-8")

    async def receive_bytes(self) -> bytes:
        opcode, payload = await self.receive()
        if opcode != Opcode.BINARY:
            raise AssertionError(f"expected a binary message, got opcode {opcode:#x}: {payload!r}")
        return payload

    async def receive_json(self) -> Any:
        return ujson.loads(await self.receive_text())

    async def wait_closed(self) -> None:
        """Wait until the app hangs up; frames not yet read are kept for ``receive``."""
        while not self.closed:
            self._take(await self.client.receive_reply(self.conn_id))
