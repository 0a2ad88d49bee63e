"""Two apps behind one (fake) Mongrel2 that alternates messages between them, as Mongrel2's
round robin does: each connection keeps one handler, in the process that owns it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from brubeck import Brubeck, Mongrel2Connection, WebSocketHandler
from brubeck.ownership import Ownership
from brubeck.testing import TestClient


class Counter(WebSocketHandler):
    closed_ids: ClassVar[list[bytes]] = []

    def open(self) -> None:
        self.count = 0
        self.join("room")

    def on_message(self, message: str | bytes) -> None:
        if message == "shout":
            self.broadcast("heard", to="room")
            return
        self.count += 1
        self.write_message({"count": self.count, "app": self.application.settings["name"]})

    def on_close(self, code: int, reason: str) -> None:
        Counter.closed_ids.append(self.conn_id)


def make_app(name: str, peers: list[str], index: int) -> Brubeck:
    return Brubeck(
        handler_tuples=[(r"^/count$", Counter)],
        settings={"name": name, "websocket_peers": peers, "websocket_peer_index": index},
    )


@contextlib.asynccontextmanager
async def two_processes() -> AsyncIterator[tuple[TestClient, Brubeck, Brubeck]]:
    peers = [f"inproc://ws-peer-{uuid.uuid4()}" for _ in range(2)]
    first, second = make_app("first", peers, 0), make_app("second", peers, 1)
    async with TestClient(first) as client:
        # The second app pulls from the same fake Mongrel2: messages alternate between them.
        second.msg_conn = Mongrel2Connection(
            client._pull_addr, client._pub_addr, context=client._ctx
        )
        serving = asyncio.ensure_future(second.serve())
        try:
            while not (first.websockets.ownership and second.websockets.ownership):
                await asyncio.sleep(0.005)
            yield client, first, second
        finally:
            second.stop()
            await asyncio.wait_for(serving, 5)


async def test_frames_reach_the_owner_whichever_process_gets_them() -> None:
    Counter.closed_ids = []
    async with two_processes() as (client, first, second):
        ws = await client.websocket_connect("/count")  # connection 1: owned by process 1
        replies = []
        for _ in range(10):
            await ws.send("x")
            replies.append(await ws.receive_json())
        assert replies == [{"count": n, "app": "second"} for n in range(1, 11)]
        assert first.websockets.get(ws.conn_id) is None
        assert second.websockets.get(ws.conn_id) is not None
        assert first.websockets.ownership is not None
        assert first.websockets.ownership.forwarded >= 5  # half of the messages came to it
        await ws.disconnect()  # one notice to each process: one forwarded, one direct
        await ws.disconnect()
        for _ in range(200):
            if Counter.closed_ids:
                break
            await asyncio.sleep(0.005)
        assert Counter.closed_ids == [b"%d" % ws.conn_id]


async def test_room_broadcast_reaches_members_in_every_process() -> None:
    async with two_processes() as (client, first, second):
        a = await client.websocket_connect("/count")  # connection 1, owned by the second
        b = await client.websocket_connect("/count")  # connection 2, owned by the first
        assert second.websockets.get(a.conn_id) and first.websockets.get(b.conn_id)
        await a.send("shout")
        assert await a.receive_text() == "heard"
        assert await b.receive_text() == "heard"


def test_owner_is_the_connection_id_modulo_the_peers() -> None:
    ownership = Ownership(Any, ["ipc://a", "ipc://b", "ipc://c"], 2)  # type: ignore[arg-type]
    assert [ownership.owner(b"%d" % n) for n in range(1, 7)] == [1, 2, 0, 1, 2, 0]
    assert ownership.owns(b"5") and not ownership.owns(b"6")


@pytest.mark.parametrize(
    ("peers", "index", "message"),
    [
        ("ipc://a", 0, "a list of ZeroMQ endpoints"),
        (["ipc://a", ""], 0, "a list of ZeroMQ endpoints"),
        (["ipc://a", "ipc://a"], 0, "twice"),
        (["ipc://a", "ipc://b"], 2, "0 to 1"),
        (["ipc://a", "ipc://b"], None, "websocket_peer_index"),
        (["ipc://a", "ipc://b"], True, "websocket_peer_index"),
    ],
)
def test_bad_settings_are_explained(peers: Any, index: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ownership(Any, peers, index)  # type: ignore[arg-type]


async def test_one_peer_means_no_ownership_at_all() -> None:
    app = Brubeck(websocket_peers=["ipc://only"], websocket_peer_index=0)
    async with TestClient(app):
        assert app.websockets.ownership is None
