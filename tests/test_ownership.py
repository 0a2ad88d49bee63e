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


# Download flow control: every message of a connection goes to its owner.


class OwnsOdd:
    """Stands for ``Ownership``: this process owns the odd connection ids."""

    def __init__(self, reachable: bool = True) -> None:
        self.reachable = reachable
        self.passed: list[bytes] = []

    def owns(self, conn_id: bytes) -> bool:
        return int(conn_id) % 2 == 1

    def pass_on(self, conn_id: bytes, raw: bytes) -> bool:
        self.passed.append(raw)
        return self.reachable


class Sent:
    sender_id = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sent.append(data)


def flow_controlled_app(owner: OwnsOdd) -> tuple[Brubeck, Sent]:
    app = Brubeck()

    @app.add_route(r"^/x$", method="GET")
    def page(application: Brubeck, request: Any) -> str:
        return "here"

    conn = Sent()
    app.msg_conn = conn  # type: ignore[assignment]
    app._to_owner = owner
    return app, conn


GET = b"S %d /x 48:6:METHOD,3:GET,7:VERSION,8:HTTP/1.1,4:PATH,2:/x,}0:,"
CREDITS = b'S %d @* 41:16:DOWNLOAD_CREDITS,2:50,6:METHOD,4:JSON,}18:{"type":"credits"},'


def test_with_flow_control_messages_of_other_connections_go_to_their_owner() -> None:
    owner = OwnsOdd()
    app, conn = flow_controlled_app(owner)
    for raw in (GET % 2, CREDITS % 4):
        app._handle_owned(raw)
    assert owner.passed == [GET % 2, CREDITS % 4] and conn.sent == []
    app._handle_owned(GET % 3)  # its own: answered here
    app._handle_owned(b"S x /x 0:}0:,")  # malformed: refused (logged) here, not passed on
    assert owner.passed == [GET % 2, CREDITS % 4]
    assert conn.sent[0].startswith(b"S 1:3, HTTP/1.1 200 OK\r\n")


def test_a_request_whose_owner_is_down_gets_a_503_and_a_close() -> None:
    app, conn = flow_controlled_app(OwnsOdd(reachable=False))
    app._handle_owned(GET % 2)
    assert conn.sent[0].startswith(b"S 1:2, HTTP/1.1 503 Service Unavailable\r\n")
    assert conn.sent[1] == b"S 1:2, "
    app._handle_owned(CREDITS % 4)  # a notice: nobody to answer
    assert len(conn.sent) == 2


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, False),
        ({"mongrel2_settings": {"download.flow_control": 1}}, True),
        ({"mongrel2_settings": {"download.flow_control": "1"}}, True),
        ({"mongrel2_settings": {"download.flow_control": 0}}, False),
        (
            {"mongrel2_settings": {"download.flow_control": 1}, "download_flow_control": False},
            False,
        ),
        ({"download_flow_control": True}, True),
    ],
)
async def test_flow_control_is_read_from_the_settings(
    settings: dict[str, Any], expected: bool
) -> None:
    peers = [f"inproc://fc-{uuid.uuid4().hex}-{i}" for i in range(2)]
    app = Brubeck(
        msg_conn=Mongrel2Connection("inproc://fc-pull", "inproc://fc-pub"),
        websocket_peers=peers,
        websocket_peer_index=0,
        **settings,
    )
    async with TestClient(app):
        assert (app._to_owner is not None) is expected
