"""Rooms and broadcasts of ``app.websockets``: one frame, up to 128 connections a message."""

from __future__ import annotations

import asyncio

from brubeck import Brubeck, WebMessageHandler, WebSocketHandler
from brubeck.testing import TestClient
from brubeck.wsframes import Opcode


class Member(WebSocketHandler):
    def open(self) -> None:
        self.join("lobby")

    def on_message(self, message: str | bytes) -> None:
        if message == "leave":
            self.leave("lobby")
            self.write_message("left")
        elif message == "others":
            self.broadcast({"from": self.conn_id.decode()}, to="lobby", exclude_self=True)
        else:
            self.broadcast(message, to="lobby")


class Late(WebSocketHandler):
    """Joins during an async open: a broadcast then must wait for its 101."""

    async def open(self) -> None:
        self.join("lobby")
        await asyncio.sleep(0.05)

    def on_message(self, message: str | bytes) -> None:
        pass


class Say(WebMessageHandler):
    def post(self) -> str:
        sent = self.application.websockets.broadcast(self.request.body.decode(), to="lobby")
        return str(sent)


def make_app() -> Brubeck:
    return Brubeck(
        handler_tuples=[(r"^/ws$", Member), (r"^/late$", Late), (r"^/say$", Say)],
    )


def spy_on_sends(client: TestClient) -> list[bytes]:
    conn = client.app.msg_conn
    assert conn is not None
    sent: list[bytes] = []
    send_raw = conn.send_raw
    conn.send_raw = lambda data: (sent.append(data), send_raw(data))[1]  # type: ignore[method-assign]
    return sent


async def test_room_broadcast_to_300_in_messages_of_128() -> None:
    async with TestClient(make_app()) as client:
        sockets = [await client.websocket_connect("/ws") for _ in range(300)]
        assert len(client.app.websockets.members("lobby")) == 300
        sent = spy_on_sends(client)
        await sockets[0].send("hello all")
        for ws in sockets:
            assert await ws.receive_text() == "hello all"
        ids = [m.split(b" ", 1)[1].split(b", ", 1)[0].split(b":", 1)[1] for m in sent]
        targets = [len(i.split()) for i in ids]
        assert targets == [128, 128, 44]
        assert len({message.split(b", ", 1)[1] for message in sent}) == 1  # one frame, encoded once


async def test_exclude_self_and_leave() -> None:
    async with TestClient(make_app()) as client:
        a, b, c = [await client.websocket_connect("/ws") for _ in range(3)]
        await c.send("leave")
        assert await c.receive_text() == "left"
        await a.send("others")
        assert await b.receive_json() == {"from": str(a.conn_id)}
        await b.send("ping all")
        assert await a.receive_text() == "ping all"
        assert await b.receive_text() == "ping all"
        await c.send("ping all")  # c left: it reaches a and b, not c
        assert await a.receive_text() == "ping all"
        await a.close()
        await a.wait_closed()
        assert client.app.websockets.members("lobby") == {client.app.websockets.get(b.conn_id)}


async def test_broadcast_from_http_handler_and_to_ids() -> None:
    async with TestClient(make_app()) as client:
        a, b = [await client.websocket_connect("/ws") for _ in range(2)]
        response = await client.post("/say", data=b"news")
        assert response.text == "2"
        assert await a.receive_text() == "news"
        assert await b.receive_text() == "news"
        registry = client.app.websockets
        assert registry.broadcast(b"\x01", to=[a.conn_id, registry.get(b.conn_id)]) == 2
        assert await a.receive_bytes() == b"\x01"
        assert await b.receive_bytes() == b"\x01"


async def test_broadcast_to_a_socket_still_opening_follows_its_101() -> None:
    async with TestClient(make_app()) as client:
        opening = asyncio.ensure_future(client.websocket_connect("/late"))
        while not client.app.websockets.members("lobby"):
            await asyncio.sleep(0.005)
        client.app.websockets.broadcast("early", to="lobby")
        ws = await opening
        assert ws.accepted
        assert await ws.receive() == (Opcode.TEXT, b"early")
