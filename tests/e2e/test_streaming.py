"""Streamed responses, Server-Sent Events and long-poll release through a real Mongrel2."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket

import httpx
import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.response import Response
from brubeck.waiting import WaitingRoom

CHUNK = 64 * 1024


def chunk(i: int) -> bytes:
    return random.Random(i).randbytes(CHUNK)


def expected_digest(count: int) -> str:
    digest = hashlib.sha256()
    for i in range(count):
        digest.update(chunk(i))
    return digest.hexdigest()


class Bulk(WebMessageHandler):
    """Streams ``n`` chunks of 64 KiB, one write and flush each; records its worst backlog."""

    worst_backlog = 0

    async def get(self, n: str) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        conn = self.application.msg_conn
        for i in range(int(n)):
            self.write(chunk(i))
            await self.flush()
            window = self.application.credit_window(self.request)
            backlog = conn.pending + (window.backlog if window else 0)
            Bulk.worst_backlog = max(Bulk.worst_backlog, backlog)


class Events(WebMessageHandler):
    async def get(self) -> None:
        await self.send_event("hello")
        await self.send_event({"n": 2}, event="update", id="2")
        await self.send_event("line one\nline two", retry=1000)


room_holder: dict[str, WaitingRoom] = {}


class Wait(WebMessageHandler):
    async def get(self) -> Response:
        return await room_holder["room"].wait(self.request, timeout=30)


class Release(WebMessageHandler):
    def post(self) -> str:
        return str(room_holder["room"].release(Response("released", content_type="text/plain")))


def make_app() -> Brubeck:
    app = Brubeck(
        handler_tuples=[
            (r"^/bulk/(?P<n>\d+)$", Bulk),
            (r"^/events$", Events),
            (r"^/wait$", Wait),
            (r"^/release$", Release),
        ]
    )
    room_holder["room"] = WaitingRoom(app)
    return app


def stream_digest(url: str) -> tuple[str, int, dict[str, str]]:
    digest, size = hashlib.sha256(), 0
    with httpx.stream("GET", url, timeout=60) as response:
        for piece in response.iter_bytes():
            digest.update(piece)
            size += len(piece)
        return digest.hexdigest(), size, dict(response.headers)


def test_a_50_mb_stream_with_flow_control_arrives_whole(serve):
    m2 = serve(make_app(), settings={"download.flow_control": 1})
    Bulk.worst_backlog = 0
    count = 50 * 1024 * 1024 // CHUNK
    digest, size, headers = stream_digest(f"{m2.url}/bulk/{count}")
    assert headers["transfer-encoding"] == "chunked"
    assert (size, digest) == (count * CHUNK, expected_digest(count))
    # The handler never holds more than a flush's worth beyond Mongrel2's 100 KiB window.
    assert Bulk.worst_backlog <= 2 * CHUNK


def test_a_stream_without_flow_control_arrives_whole(serve):
    m2 = serve(make_app())
    count = 8 * 1024 * 1024 // CHUNK
    digest, size, _ = stream_digest(f"{m2.url}/bulk/{count}")
    assert (size, digest) == (count * CHUNK, expected_digest(count))


def test_an_http_1_0_stream_ends_with_the_connection(serve):
    m2 = serve(make_app())
    port = int(m2.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /bulk/3 HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while piece := sock.recv(1 << 16):
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"Transfer-Encoding" not in head
    assert body == chunk(0) + chunk(1) + chunk(2)


def test_server_sent_events_reach_an_event_client(serve):
    m2 = serve(make_app())
    events, current = [], {}
    with httpx.stream("GET", f"{m2.url}/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = f"{current[field]}\n{value}" if field in current else value
    assert events == [
        {"data": "hello"},
        {"event": "update", "id": "2", "data": '{"n":2}'},
        {"retry": "1000", "data": "line one\nline two"},
    ]


def test_500_long_polls_released_by_one_call(serve):
    app = make_app()
    m2 = serve(app)
    port = int(m2.url.rsplit(":", 1)[1])

    async def client() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        writer.close()
        await writer.wait_closed()
        return body

    async def scenario() -> list[bytes]:
        # Raw sockets: an HTTP client library's pool, not Brubeck, is the cost at 500 sockets.
        waiters = [asyncio.create_task(client()) for _ in range(500)]
        for _ in range(300):
            if len(room_holder["room"]) == 500:
                break
            await asyncio.sleep(0.05)
        assert len(room_holder["room"]) == 500
        async with httpx.AsyncClient(timeout=30) as other:
            released = await other.post(f"{m2.url}/release")
        assert released.text == "500"
        return await asyncio.wait_for(asyncio.gather(*waiters), 10)

    assert asyncio.run(scenario()) == [b"released"] * 500


@pytest.mark.parametrize("n", [0])
def test_an_empty_stream_is_a_valid_chunked_response(serve, n):
    m2 = serve(make_app())
    response = httpx.get(f"{m2.url}/bulk/{n}")
    assert response.status_code == 200 and response.content == b""
