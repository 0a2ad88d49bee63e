"""Leak hunt: what the app keeps per request or per connection must go on every path.

A handler process runs for weeks, so a dict entry, a task or a temporary file left behind on
one path (an error, a timeout, a client that vanished without a disconnect notice, a
Mongrel2 restart, a stop) is a leak that only shows after millions of requests. Each test
drives many messages through ``app.handle_message`` (or a real ``serve`` through
``TestClient``) down one family of paths, then checks that every structure is back to its
size at rest, or stays under its documented bound when the key is the client's to choose.

``Wire`` stands in for ``Mongrel2Connection`` and keeps the one property of it these paths
depend on: while the receive loop handles a message, replies are held and handed to ZeroMQ
after it (they cannot fail there); a reply made anywhere else (a timer, a task's done
callback, a request replayed from the held queue) raises ``BufferError`` once
``backlog_limit`` replies wait for a Mongrel2 that reads nothing (``full``). That is the
trigger of ``test_wire_edges``' "Was a bug" slot leak; the failing tests below are the paths
that still do not survive it.

Logging is switched off in these tests: log records keep their arguments (requests,
handlers, tracebacks) alive, and the tests count live objects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tnetstring

from brubeck import (
    Brubeck,
    HTTPError,
    Response,
    WebMessageHandler,
    WebSocketHandler,
    streamed_uploads,
    wsregistry,
)
from brubeck import response as response_module
from brubeck.handlers import MessageHandler
from brubeck.request import Request
from brubeck.routing import Router
from brubeck.services import mdp
from brubeck.services.broker import Broker
from brubeck.services.client import ServiceClient
from brubeck.services.errors import ServiceUnavailable
from brubeck.testing import TestClient
from brubeck.waiting import WaitingRoom
from brubeck.wsframes import accept_key

SENDER = b"leak-hunt"


# The fake Mongrel2 side


class Wire:
    """``app.msg_conn`` for these tests: records sends; ``full`` makes the ones made outside
    the receive loop raise ``BufferError``, as ``Mongrel2Connection.send_raw`` does."""

    sender_id = None

    def __init__(self, app: Brubeck) -> None:
        self.epoch = 0
        self.sent: list[bytes] = []
        self.controls: list[tuple[bytes, dict[str, Any]]] = []
        self.full = False
        self.receiver: Callable[[bytes], None] = app.handle_message
        self._reading = False
        app.msg_conn = self  # type: ignore[assignment]

    def _out(self) -> None:
        if self.full and not self._reading:
            raise BufferError("100000 replies are waiting for Mongrel2 to read them")

    def send_raw(self, data: bytes) -> None:
        self._out()
        self.sent.append(data)

    def close_connection(self, request: Any) -> None:
        self._out()
        self.sent.append(b"")

    def close_connections(self, sender: Any, conn_ids: Any) -> None:
        self._out()
        self.sent.append(b"")

    def deliver(self, sender: Any, conn_ids: Any, data: bytes) -> None:
        self._out()
        self.sent.append(data)

    def ctl(self, sender: Any, conn_id: bytes, **ctl: Any) -> None:
        self._out()
        self.controls.append((conn_id, ctl))

    def set_receiver(self, receiver: Callable[[bytes], None]) -> None:
        self.receiver = receiver

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def receive(self, raw: bytes) -> None:
        """One message through the receive loop (whose errors are logged, not raised)."""
        self._reading = True
        try:
            self.receiver(raw)
        except Exception:
            logging.getLogger("tests").exception("handling a message failed")
        finally:
            self._reading = False


def message(
    conn_id: int,
    path: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    m2: dict[str, bytes] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """A request as Mongrel2 sends it (tnetstring headers)."""
    fields: dict[bytes, Any] = {b"host": b"testserver"}
    for name, value in (headers or {}).items():
        fields[name.lower().encode()] = value.encode("latin-1")
    if body and b"content-length" not in fields and b"transfer-encoding" not in fields:
        fields[b"content-length"] = b"%d" % len(body)
    route_path, _, query = path.partition("?")
    fields.update(
        {
            b"PATH": route_path.encode(),
            b"METHOD": method.encode(),
            b"VERSION": version.encode(),
            b"URI": path.encode(),
            b"PATTERN": b"/",
            b"URL_SCHEME": b"http",
            b"REMOTE_ADDR": b"127.0.0.1",
        }
    )
    if query:
        fields[b"QUERY"] = query.encode()
    for name, raw in (m2 or {}).items():
        fields[name.encode()] = raw
    return b"%s %d %s %s%s" % (
        SENDER,
        conn_id,
        route_path.encode(),
        tnetstring.dumps(fields),
        tnetstring.dumps(body),
    )


def notice(conn_id: int, kind: str = "disconnect", credits: bytes = b"") -> bytes:
    headers: dict[bytes, bytes] = {b"METHOD": b"JSON"}
    if credits:
        headers[b"DOWNLOAD_CREDITS"] = credits
    body = b'{"type":"%s"}' % kind.encode()
    return b"%s %d @* %s%s" % (SENDER, conn_id, tnetstring.dumps(headers), tnetstring.dumps(body))


def handshake(conn_id: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": key,
        "sec-websocket-version": "13",
    }
    return message(conn_id, path, "WEBSOCKET_HANDSHAKE", headers=upgrade, body=accept_key(key))


def frame(conn_id: int, path: str, flags: bytes, payload: bytes = b"") -> bytes:
    return message(conn_id, path, "WEBSOCKET", m2={"FLAGS": flags}, body=payload)


CLOSE_1000 = b"\x03\xe8"


def upload_first(
    conn_id: int, path: str, body: bytes, length: int | None, offset: bytes = b"0"
) -> bytes:
    """The first message of a streamed upload (``upload.stream=1``)."""
    extra: dict[str, bytes] = {"UPLOAD_STREAM": offset}
    headers = {"content-type": "application/octet-stream"}
    if length is None:
        headers["transfer-encoding"] = "chunked"
    else:
        headers["content-length"] = str(length)
    return message(conn_id, path, "POST", headers=headers, body=body, m2=extra)


def upload_piece(conn_id: int, path: str, offset: int, body: bytes, done: bool = False) -> bytes:
    headers: dict[bytes, bytes] = {b"UPLOAD_STREAM": b"%d" % offset}
    if done:
        headers[b"UPLOAD_STREAM_DONE"] = b"1"
    return b"%s %d %s %s%s" % (
        SENDER,
        conn_id,
        path.encode(),
        tnetstring.dumps(headers),
        tnetstring.dumps(body),
    )


def spooled(conn_id: int, path: str, method: str, name: str, done: bool) -> bytes:
    """Mongrel2's own upload notices (``upload.stream=0``): start, then start and done."""
    m2 = {"x-mongrel2-upload-start": name.encode()}
    if done:
        m2["x-mongrel2-upload-done"] = name.encode()
    return message(conn_id, path, method, headers={"content-length": "30000"}, m2=m2)


# What is in use


def in_use(app: Brubeck) -> dict[str, int]:
    """Per-request and per-connection state: all of it is 0 when nothing is in progress."""
    return {
        "tasks": len(app._tasks),
        "timed_out": len(app._timed_out),
        "inflight": len(app._inflight),
        "answer queues": len(app._order.queues),
        "held": len(app._held or ()),
        "streamed uploads": len(app._streams),
        "websockets": len(app.websockets),
        "rooms": len(app.websockets._rooms),
        "websocket tasks": len(app.websockets._tasks),
    }


def at_rest(app: Brubeck) -> bool:
    return not any(in_use(app).values())


def statuses(wire: Wire) -> set[int]:
    """The status codes of the answers sent."""
    found = set()
    for data in wire.sent:
        _, sep, rest = data.partition(b", HTTP/1.1 ")
        if sep:
            found.add(int(rest[:3]))
    return found


def live(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


async def until(condition: Callable[[], Any], timeout: float = 3.0) -> None:
    """Wait for ``condition``; the assertion after the wait says what was wrong."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def housekeeping(app: Brubeck, interval: float = 0.05) -> AsyncIterator[None]:
    """The sweep ``serve`` runs: timeouts (each ``interval`` here, not each second)."""
    task = asyncio.get_running_loop().create_task(app._housekeeping(interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(autouse=True)
def no_logs() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@pytest.fixture(autouse=True)
def quick_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ended upload's cancel follows its answer after 0.01 s, not 0.5 s."""
    monkeypatch.setattr(streamed_uploads, "_CANCEL_AFTER", 0.01)


# Handlers


class Sync(WebMessageHandler):
    def get(self) -> str:
        return "sync"

    def post(self) -> str:
        return "posted"


class Awaits(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(0)
        return "awaited"


class Fails(WebMessageHandler):
    def get(self) -> str:
        raise ValueError("a handler bug")


class FailsLater(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(0)
        raise ValueError("a handler bug, after an await")


class Refuses(WebMessageHandler):
    def get(self) -> str:
        raise HTTPError(403, "no")


class Item(WebMessageHandler):
    def get(self, number: str) -> str:
        return number


class Slow(WebMessageHandler):
    timeout = 0.05

    async def get(self) -> str:
        await asyncio.sleep(30)
        return "never"


class Hangs(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(30)
        return "never"

    async def on_connection_close(self) -> None:
        await asyncio.sleep(0)


class Parks(WebMessageHandler):
    async def get(self) -> Response:
        room: WaitingRoom = self.application.state.room
        return await room.wait(self.request, timeout=float(self.get_argument("t", "30")))


class Streams(WebMessageHandler):
    async def get(self) -> None:
        for _ in range(int(self.get_argument("n", "3"))):
            self.write("tick\n")
            await self.flush()
            await asyncio.sleep(0.01)


def function_route(application: Brubeck, request: Request) -> str:
    return "function"


async def async_function_route(application: Brubeck, request: Request) -> str:
    await asyncio.sleep(0)
    return "async function"


# Plain HTTP: every way a request ends


async def test_every_way_a_plain_request_ends_leaves_nothing_behind() -> None:
    """Answered now or by a task, failing, refused before a handler runs (400, 403, 404, 405,
    413), HEAD, HTTP/1.0, ``Connection: close``, pipelined behind an awaiting request: 3,600
    requests, then nothing in use, no request or handler object alive, and the reply-head
    and route caches under their bounds."""
    app = Brubeck(
        None,
        [
            (r"^/sync$", Sync),
            (r"^/awaits$", Awaits),
            (r"^/fails$", Fails),
            (r"^/fails-later$", FailsLater),
            (r"^/refuses$", Refuses),
            (r"^/item/(\d+)$", Item),
        ],
        max_body_size=64,
    )
    app.add_route(r"^/function$")(function_route)
    app.add_route(r"^/async-function$")(async_function_route)
    wire = Wire(app)
    requests_before, handlers_before = live(Request), live(MessageHandler)
    kinds: list[tuple[str, str, dict[str, str], bytes]] = [
        ("GET", "/sync", {}, b""),
        ("GET", "/awaits", {}, b""),
        ("GET", "/fails", {}, b""),
        ("GET", "/fails-later", {}, b""),
        ("GET", "/refuses", {}, b""),
        ("GET", "/function", {}, b""),
        ("GET", "/async-function", {}, b""),
        ("HEAD", "/sync", {}, b""),
        ("GET", "/nowhere", {}, b""),  # 404
        ("DELETE", "/sync", {}, b""),  # 405
        ("POST", "/sync", {}, b"x" * 65),  # 413
        ("GET", "/%ff", {}, b""),  # 400: not UTF-8
    ]
    conn_id = 0
    sent = 0
    for round_ in range(150):
        for method, path, headers, body in kinds:
            conn_id += 1
            close = {"connection": "close"} if round_ % 3 == 1 else {}
            version = "HTTP/1.0" if round_ % 3 == 2 else "HTTP/1.1"
            wire.receive(
                message(
                    conn_id, path, method, headers={**headers, **close}, body=body, version=version
                )
            )
            sent += 1
        # Two pipelined requests: the second's answer waits behind the first's.
        conn_id += 1
        wire.receive(message(conn_id, "/awaits"))
        wire.receive(message(conn_id, f"/item/{round_}"))
        sent += 2
        await asyncio.sleep(0)
    await until(lambda: at_rest(app))
    assert in_use(app) == dict.fromkeys(in_use(app), 0)
    answers = sum(1 for data in wire.sent if b", HTTP/1.1 " in data)
    assert answers == sent
    assert statuses(wire) == {200, 400, 403, 404, 405, 413, 500}
    assert len(app._addresses) <= 4096
    assert len(app.router.cache) <= Router.CACHE_SIZE
    assert (live(Request), live(MessageHandler)) == (requests_before, handlers_before)


async def test_awaiting_requests_leave_nothing_behind_on_every_end() -> None:
    """Timed out (504), client gone mid-request (with an async ``on_connection_close``),
    gone with an answer queued behind a pipelined one, parked and released, parked and timed
    out, streamed to the end, stream cut by the client: tasks, timeouts, in-flight entries,
    answer queues and the waiting room all empty again."""
    app = Brubeck(
        None,
        [
            (r"^/slow$", Slow),
            (r"^/hangs$", Hangs),
            (r"^/parks$", Parks),
            (r"^/streams$", Streams),
            (r"^/sync$", Sync),
        ],
    )
    app.state.room = room = WaitingRoom(app)
    wire = Wire(app)
    async with housekeeping(app):
        ids = range(1, 201)
        for n in ids:
            wire.receive(message(n, "/slow"))  # 504
            wire.receive(message(1000 + n, "/hangs"))  # the client leaves
            wire.receive(message(2000 + n, "/hangs"))  # leaves with an answer queued
            wire.receive(message(2000 + n, "/sync"))
            wire.receive(message(3000 + n, "/parks"))  # released
            wire.receive(message(4000 + n, "/parks?t=0.05"))  # timed out: 204
            wire.receive(message(5000 + n, "/streams"))  # to the end
            wire.receive(message(6000 + n, "/streams?n=1000"))  # cut by the client
        await asyncio.sleep(0.02)
        assert len(app._order.queues) >= 200  # the pipelined answers do wait
        await asyncio.sleep(0.1)  # the short long polls time out
        for n in ids:
            for base in (1000, 2000, 6000):
                wire.receive(notice(base + n))
        room.release(Response(b"released"))
        await until(lambda: at_rest(app) and not len(room))
    assert in_use(app) == dict.fromkeys(in_use(app), 0)
    assert len(room) == 0
    assert sum(1 for data in wire.sent if b" 504 Gateway Timeout" in data) == 200
    assert statuses(wire) == {200, 204, 504}


async def test_a_mongrel2_restart_ends_everything_of_its_epoch(tmp_path: Path) -> None:
    """Mongrel2 goes away with requests running, parked, streaming, waiting for a slot,
    pipelined, WebSockets open in rooms, streamed uploads half received and credit windows:
    everything of the old epoch is dropped, three times over."""
    app = Brubeck(
        None,
        [
            (r"^/hangs$", Hangs),
            (r"^/parks$", Parks),
            (r"^/streams$", Streams),
            (r"^/sync$", Sync),
            (r"^/ws$", Member),
            (r"^/upload$", Sync),
        ],
        max_in_flight=400,
        upload_dir=str(tmp_path),
    )
    app.state.room = WaitingRoom(app)
    app.state.closed = []
    wire = Wire(app)
    conn_id = 0
    for _ in range(3):
        for _ in range(100):
            for path in ("/hangs", "/parks", "/streams?n=1000"):
                conn_id += 1
                wire.receive(message(conn_id, path, m2={"DOWNLOAD_CREDITS": b"100000"}))
                wire.receive(message(conn_id, "/sync"))  # pipelined behind it
            conn_id += 1
            wire.receive(handshake(conn_id, "/ws"))
            conn_id += 1
            wire.receive(upload_first(conn_id, "/upload", b"ab", 10))
        for _ in range(150):  # over max_in_flight: held
            conn_id += 1
            wire.receive(message(conn_id, "/hangs"))
        await asyncio.sleep(0.02)
        assert app._held and len(app.websockets) == 100 and len(app._streams) == 100
        wire.epoch += 1
        app._mongrel2_lost(0, 0)
        await until(lambda: at_rest(app) and not app._windows)
        assert in_use(app) == dict.fromkeys(in_use(app), 0)
        assert (len(app._windows), app._held, len(app.state.room)) == (0, None, 0)
        assert list(tmp_path.iterdir()) == []


async def test_requests_held_over_max_in_flight_go_with_their_clients() -> None:
    """Past ``max_in_flight`` requests wait in the process; a client that leaves takes its
    waiting requests with it, and the queue is dropped once slots are free."""
    app = Brubeck(None, [(r"^/hangs$", Hangs), (r"^/sync$", Sync)], max_in_flight=10)
    wire = Wire(app)
    for n in range(1, 1001):
        wire.receive(message(n, "/hangs" if n % 2 else "/sync"))
    assert app._held is not None and len(app._held) > 900
    await asyncio.sleep(0.01)  # the running ones start
    for n in range(1, 1001):
        wire.receive(notice(n))
    await until(lambda: at_rest(app) and app._held is None)
    assert in_use(app) == dict.fromkeys(in_use(app), 0)
    assert app._held is None


# Keys the client chooses


class Echo(WebMessageHandler):
    """Lets the client choose the Content-Type and the body length: the response caches."""

    def get(self) -> Response:
        size = int(self.get_argument("size", "0"))
        return Response(b"x" * size, content_type=self.get_argument("type", "text/plain"))


async def test_structures_keyed_by_what_the_client_sends_stay_bounded(tmp_path: Path) -> None:
    """Paths, connection ids, Content-Types and sizes echoed back, disconnect and credits
    notices for connections never seen, WebSocket frames and upload pieces for connections
    this process does not know: each table keyed by them stays under its documented bound,
    and a notice for an unknown connection creates nothing at all."""
    app = Brubeck(None, [(r"^/item/(\d+)$", Item), (r"^/echo$", Echo)], upload_dir=str(tmp_path))
    wire = Wire(app)
    for n in range(1, 6001):
        wire.receive(message(n, f"/item/{n}"))
        wire.receive(message(n, f"/missing/{n}"))  # 404s are never remembered
    assert len(app.router.cache) <= Router.CACHE_SIZE
    assert len(app._addresses) <= 4096
    for n in range(1, 3001):
        wire.receive(message(n, f"/echo?type=text/x-{n}&size={n * 7}"))
    assert all(len(by_type) <= 64 for by_type in response_module._PREFIXES.values())
    assert len(response_module._PREFIXES) <= len(response_module._STATUS_LINES)
    assert len(response_module._LENGTH_LINES) <= 4096
    for n in range(100_000, 106_000):
        wire.receive(notice(n))
        wire.receive(notice(n, "credits", b"1000"))
    assert at_rest(app) and not app._windows and not app._streams._ended
    for n in range(200_000, 206_000):
        wire.receive(frame(n, "/ws", b"0x81", b"hello"))
        wire.receive(upload_piece(n, "/upload", 10, b"abc"))
    assert len(app.websockets._recent) <= wsregistry._RECENT_LIMIT
    assert len(app._streams._ended) <= streamed_uploads._RECENT_LIMIT
    assert at_rest(app)


async def test_credit_windows_of_connections_the_app_closed_go_with_the_close() -> None:
    """Was a bug. Under download flow control each connection has a credit window. Mongrel2
    sends no disconnect notice for a connection the handler closed (HTTP/1.0, ``Connection:
    close``), so those windows stayed until ``CreditWindows.limit`` (100,000, about 900 bytes
    each) pushed the oldest out, and the next client given that id inherited the old window.
    The close takes its window with it; the windows of clients that left go with their
    notice."""
    app = Brubeck(None, [(r"^/sync$", Sync)])
    wire = Wire(app)
    credits = {"DOWNLOAD_CREDITS": b"102400"}
    for n in range(1, 3001):
        wire.receive(message(n, "/sync", headers={"connection": "close"}, m2=credits))
    assert len(app._windows) == 0
    for n in range(1, 3001):
        wire.receive(message(n, "/sync", m2=credits))
        wire.receive(notice(n))
    assert len(app._windows) == 0


# WebSockets


class Member(WebSocketHandler):
    ping_interval = 0.05
    ping_timeout = 0.1
    close_timeout = 0.05

    def open(self) -> None:
        self.join("lobby")
        self.join(f"own-{self.conn_id.decode()}")

    def on_message(self, message: str | bytes) -> None:
        if message == "bye":
            self.close()
        elif message == "boom":
            raise ValueError("on_message failed")
        else:
            self.write_message(message)

    def on_close(self, code: int, reason: str) -> None:
        self.application.state.closed.append(self.conn_id)


class AsyncMember(Member):
    async def open(self) -> None:  # type: ignore[override]
        self.join("lobby")
        await asyncio.sleep(0)
        self.join(f"own-{self.conn_id.decode()}")

    async def on_message(self, message: str | bytes) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        Member.on_message(self, message)

    async def on_close(self, code: int, reason: str) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        Member.on_close(self, code, reason)


class Refused(Member):
    def open(self) -> None:
        self.join("lobby")
        raise HTTPError(403, "not you")


async def test_every_way_a_websocket_ends_leaves_the_registry_and_rooms_empty() -> None:
    """Closed by the client, by the server (answered, or not within ``close_timeout``), by a
    ping timeout, a disconnect notice, a failing ``on_message``; refused handshakes (a 403 in
    ``open`` after joining a room, no endpoint): ``def`` and ``async def`` callbacks alike.
    The registry, the rooms and the callback tasks are empty again, ``on_close`` ran for every
    opened connection, and the ids remembered for late frames stay under their bound."""
    app = Brubeck(
        None, [(r"^/ws$", Member), (r"^/async-ws$", AsyncMember), (r"^/refused$", Refused)]
    )
    app.state.closed = []
    wire = Wire(app)
    opened = []
    conn_id = 0
    for path in ("/ws", "/async-ws"):
        for n in range(70):
            conn_id += 1
            wire.receive(handshake(conn_id, path))
            opened.append((conn_id, path, n % 7))
    for _ in range(50):
        conn_id += 1
        wire.receive(handshake(conn_id, "/refused"))
        conn_id += 1
        wire.receive(handshake(conn_id, "/nowhere"))
    await asyncio.sleep(0.01)
    assert len(app.websockets) == 140 and app.websockets.members("lobby")
    for cid, path, how in opened:
        wire.receive(frame(cid, path, b"0x81", b"hello"))
        if how == 0:  # the client closes
            wire.receive(frame(cid, path, b"0x88", CLOSE_1000))
        elif how in (1, 2):  # the server closes; 1 answers it, 2 lets close_timeout run out
            wire.receive(frame(cid, path, b"0x81", b"bye"))
        elif how == 3:  # the client goes silent: ping timeout
            pass
        elif how == 4:  # Mongrel2's disconnect notice
            wire.receive(notice(cid))
        elif how == 5:  # on_message fails: 1011, then no answer
            wire.receive(frame(cid, path, b"0x81", b"boom"))
        else:  # a ping, then the client closes
            wire.receive(frame(cid, path, b"0x89", b"ping"))
            wire.receive(frame(cid, path, b"0x88", CLOSE_1000))
    await asyncio.sleep(0.02)
    for cid, path, how in opened:
        if how == 1:
            wire.receive(frame(cid, path, b"0x88", CLOSE_1000))
    await until(lambda: at_rest(app))
    assert in_use(app) == dict.fromkeys(in_use(app), 0)
    assert sorted(app.state.closed) == sorted(b"%d" % cid for cid, _, _ in opened)
    assert len(app.websockets._recent) <= wsregistry._RECENT_LIMIT


class Quiet(WebSocketHandler):
    """Long pings (0.1 s), so that a test can fill the backlog between a ping and its timeout."""

    ping_interval = 0.1
    ping_timeout = 0.1
    close_timeout = 0.05

    def open(self) -> None:
        self.join("lobby")

    def on_message(self, message: str | bytes) -> None:
        self.close()

    def on_close(self, code: int, reason: str) -> None:
        self.application.state.closed.append(self.conn_id)


@pytest.mark.parametrize("ending", ["close timeout", "ping timeout"])
async def test_a_websocket_ended_by_its_timer_while_mongrel2_reads_nothing_is_forgotten(
    ending: str,
) -> None:
    """Was a bug. A WebSocket that ends by one of its own timers (the client did not answer
    the close within ``close_timeout``, or a ping within ``ping_timeout``) hangs up from the
    timer, outside the receive loop. When Mongrel2 has stopped reading (the same stall that
    keeps pongs and close frames from arriving), that hang-up raises ``BufferError`` in
    ``_finish`` after the handler is marked closed but before ``websockets.discard``: the
    handler stays in ``app.websockets`` and in its rooms for good (a later disconnect notice
    finds it already closed and does nothing, and so does a Mongrel2 restart), and
    ``on_close`` never runs. 100 connections ended that way leave 100 handlers. The registry and the
    rooms must forget a connection however its last send fares, and ``on_close`` must run."""
    app = Brubeck(None, [(r"^/quiet$", Quiet)])
    app.state.closed = []
    wire = Wire(app)
    ids = range(1, 101)
    for n in ids:
        wire.receive(handshake(n, "/quiet"))
    if ending == "close timeout":
        for n in ids:
            wire.receive(frame(n, "/quiet", b"0x81", b"please close"))
        await asyncio.sleep(0.02)  # the close frames went out
        wire.full = True
        await asyncio.sleep(0.1)  # close_timeout (0.05) ran out: hang up
    else:
        await asyncio.sleep(0.15)  # a ping (and a keep-alive) went out at 0.1
        wire.full = True
        await asyncio.sleep(0.1)  # ping_timeout ran out at 0.2: hang up
    wire.full = False
    for n in ids:
        wire.receive(notice(n))  # Mongrel2 reads again and reports the clients gone
    await until(lambda: at_rest(app), timeout=0.5)
    assert (len(app.websockets), len(app.websockets.members("lobby"))) == (0, 0)
    assert len(app.state.closed) == 100


async def test_a_failed_keep_alive_does_not_stop_a_websockets_liveness_checks() -> None:
    """Was a bug. After ``ping_interval`` of silence ``_check_idle`` sends a ping and a
    Mongrel2 keep-alive, then schedules its next check. If the keep-alive raises (Mongrel2
    not reading: ``BufferError``), the next check is never scheduled: that connection is
    never pinged again and never times out. A client that then vanishes without a disconnect
    notice (Mongrel2's idle reaper sends none) keeps its handler, rooms and buffers for the
    life of the process: here 50 silent clients are still registered long after
    ``ping_interval + ping_timeout``. A failed keep-alive must not end the checks."""
    app = Brubeck(None, [(r"^/quiet$", Member)])  # pings every 0.05 s, timeout 0.1 s
    app.state.closed = []
    wire = Wire(app)
    for n in range(1, 51):
        wire.receive(handshake(n, "/quiet"))
    wire.full = True
    await asyncio.sleep(0.08)  # the first check's keep-alive fails
    wire.full = False
    await until(lambda: at_rest(app), timeout=0.6)  # the clients never answer
    assert len(app.websockets) == 0
    assert len(app.state.closed) == 50


# Streams and timeouts while Mongrel2 reads nothing


class Ticker(WebMessageHandler):
    timeout = 0.05

    async def get(self) -> None:
        self.write("tick\n")
        await self.flush()
        await asyncio.sleep(30)


async def test_a_stream_timed_out_while_mongrel2_reads_nothing_frees_its_slot() -> None:
    """Was a bug. A streaming handler past its timeout is cancelled by the sweep, and its
    done callback (``_task_answered``) closes the stream through ``_timed_out_response`` ->
    ``abort_stream`` -> ``send_to``. That call is outside the ``try/finally`` that frees the
    slot: when the send raises ``BufferError`` (Mongrel2 not reading), the task stays in
    ``app._tasks`` forever (one ``max_in_flight`` slot lost per stream; neither a disconnect
    notice nor a Mongrel2 restart frees it), and until a disconnect notice its connection's
    answer queue keeps a slot that is never filled. With ``max_in_flight=50``, 50 such
    streams leave the app holding every later request unanswered, even once Mongrel2 reads
    again. The slot and the queue must be freed whatever the close does."""
    app = Brubeck(None, [(r"^/ticker$", Ticker), (r"^/sync$", Sync)], max_in_flight=50)
    wire = Wire(app)
    async with housekeeping(app):
        for n in range(1, 51):
            wire.receive(message(n, "/ticker"))
        await asyncio.sleep(0.02)  # every stream sent its head
        wire.full = True
        await asyncio.sleep(0.15)  # past the timeout: the sweep cancels them
        wire.full = False
        for n in range(1, 51):
            wire.receive(notice(n))
        await until(lambda: at_rest(app), timeout=0.3)
        wire.receive(message(99, "/sync"))
        answered = any(data.startswith(SENDER + b" 2:99, HTTP/1.1 200") for data in wire.sent)
    assert (len(app._tasks), len(app._order.queues), answered) == (0, 0, True)


# Uploads


class Upload(WebMessageHandler):
    def post(self) -> str:
        return "stored"


class UploadFails(WebMessageHandler):
    async def post(self) -> str:
        await asyncio.sleep(0)
        raise ValueError("a handler bug")


class UploadSlow(WebMessageHandler):
    timeout = 0.05

    async def post(self) -> str:
        await asyncio.sleep(30)
        return "never"


class LiveReader(WebMessageHandler):
    stream_request_body = True

    async def post(self) -> str:
        size = 0
        async for piece in self.request.body_stream:
            size += len(piece)
        return str(size)


class LiveEarly(WebMessageHandler):
    stream_request_body = True

    async def post(self) -> str:
        await asyncio.sleep(0)
        return "answered before the body"


async def test_every_way_a_streamed_upload_ends_removes_it_and_its_file(tmp_path: Path) -> None:
    """``upload.stream=1``: finished, refused at its first piece (404, 413), stalled (408),
    client gone, pieces out of order, too large for ``max_upload_size``, shorter than its
    Content-Length; read live by the handler to the end, answered before it was read, or
    left by a client mid-way: no upload left in progress, no file left in ``upload_dir``, and
    the ended ids remembered for stray pieces under their bound."""
    app = Brubeck(
        None,
        [
            (r"^/upload$", Upload),
            (r"^/fails$", UploadFails),
            (r"^/live$", LiveReader),
            (r"^/early$", LiveEarly),
        ],
        upload_dir=str(tmp_path),
        upload_stream_timeout=0.05,
        max_upload_size=100,
    )
    wire = Wire(app)
    conn_id = 0
    for path in ("/upload", "/fails", "/live", "/early", "/nowhere"):
        for n in range(60):
            conn_id += 1
            how = n % 6
            wire.receive(upload_first(conn_id, path, b"ab", None if how == 4 else 6))
            if how == 0:  # complete
                wire.receive(upload_piece(conn_id, path, 2, b"cd"))
                wire.receive(upload_piece(conn_id, path, 4, b"ef", done=True))
            elif how == 1:  # stalls: 408 after upload_stream_timeout
                pass
            elif how == 2:  # the client leaves
                wire.receive(upload_piece(conn_id, path, 2, b"cd"))
                await asyncio.sleep(0)  # a live handler starts reading
                wire.receive(notice(conn_id))
            elif how == 3:  # a piece from the wrong offset
                wire.receive(upload_piece(conn_id, path, 4, b"ef", done=True))
                wire.receive(upload_piece(conn_id, path, 9, b"gh"))
            elif how == 4:  # chunked, past max_upload_size
                wire.receive(upload_piece(conn_id, path, 2, b"x" * 200))
            else:  # ends short of its Content-Length
                wire.receive(upload_piece(conn_id, path, 2, b"c", done=True))
            await asyncio.sleep(0)
        conn_id += 1
        wire.receive(upload_first(conn_id, path, b"ab", 10_000))  # 413 at once
    await until(lambda: at_rest(app) and not list(tmp_path.iterdir()))
    assert statuses(wire) == {200, 400, 404, 408, 413, 500}  # every ending was reached
    assert in_use(app) == dict.fromkeys(in_use(app), 0)
    assert list(tmp_path.iterdir()) == []
    assert len(app._streams._ended) <= streamed_uploads._RECENT_LIMIT


async def test_every_way_a_mongrel2_spooled_upload_ends_deletes_its_file(
    tmp_path: Path,
) -> None:
    """``upload.stream=0``: refused at its start notice (404, 405: Mongrel2 deletes the
    file), answered at its done notice, by a failing handler, by a 504, for a client that
    left mid-handler: no file Mongrel2 wrote is left in its run directory."""
    app = Brubeck(
        None,
        [
            (r"^/upload$", Upload),
            (r"^/fails$", UploadFails),
            (r"^/slow$", UploadSlow),
            (r"^/hangs$", Hangs),
        ],
        mongrel2_run_dir=str(tmp_path),
        max_upload_size=1 << 20,
    )
    wire = Wire(app)
    conn_id = 0
    async with housekeeping(app):
        for path, method, refused in (
            ("/upload", "POST", False),
            ("/fails", "POST", False),
            ("/slow", "POST", False),  # 504
            ("/upload", "DELETE", True),  # 405 at the start
            ("/nowhere", "POST", True),  # 404 at the start
        ):
            for _ in range(40):
                conn_id += 1
                name = f"/upload.{conn_id}"
                (tmp_path / name[1:]).write_bytes(b"x" * 100)
                wire.receive(spooled(conn_id, path, method, name, done=False))
                if refused:  # answered and closed: Mongrel2 deletes its file itself
                    assert b" 40" in wire.sent[-2]
                    (tmp_path / name[1:]).unlink()
                else:
                    wire.receive(spooled(conn_id, path, method, name, done=True))
        for _ in range(40):  # the handler still runs when the client leaves
            conn_id += 1
            name = f"/upload.{conn_id}"
            (tmp_path / name[1:]).write_bytes(b"x" * 100)
            wire.receive(spooled(conn_id, "/slow", "POST", name, done=True))
            await asyncio.sleep(0)  # the handler starts
            wire.receive(notice(conn_id))
        await until(lambda: at_rest(app) and not list(tmp_path.iterdir()))
    assert statuses(wire) == {200, 404, 405, 500, 504}
    assert in_use(app) == dict.fromkeys(in_use(app), 0)
    assert list(tmp_path.iterdir()) == []


class SlowFirst(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(0.05)
        return "done"


async def test_a_streamed_upload_started_while_mongrel2_reads_nothing_still_ends(
    tmp_path: Path,
) -> None:
    """Was a bug. A streamed upload's first message that waited for a slot (past
    ``max_in_flight``) is handled from a task's done callback, outside the receive loop.
    ``_start`` registers the upload and opens its file, then ``_grant`` sends the credits
    before it arms the stall timer: when that ctl raises ``BufferError`` (Mongrel2 not
    reading), no timer is ever armed. Mongrel2 never got the credits, so the client sends
    nothing more, and Mongrel2's idle reaper ends the connection without a disconnect
    notice: each such upload stays in ``app._streams`` with its file in ``upload_dir`` for
    good (here 20 uploads, 20 files). Past ``upload_stream_timeout`` with nothing from the
    client the upload must end (408) and its file go."""
    app = Brubeck(
        None,
        [(r"^/slow$", SlowFirst), (r"^/upload$", Upload)],
        max_in_flight=1,
        upload_dir=str(tmp_path),
        upload_stream_timeout=0.05,
    )
    wire = Wire(app)
    wire.receive(message(1, "/slow"))  # takes the only slot
    for n in range(2, 22):
        wire.receive(upload_first(n, "/upload", b"ab", 6))  # held for a slot
    assert app._held is not None and len(app._held) == 20
    wire.full = True
    await asyncio.sleep(0.1)  # the slot frees up: the held uploads start
    wire.full = False
    await until(lambda: at_rest(app) and not list(tmp_path.iterdir()), timeout=0.5)
    try:
        assert (len(app._streams), len(list(tmp_path.iterdir()))) == (0, 0)
    finally:  # what was left open would warn in a later test
        app._streams.close_all()


# Stopping


class Lasting(Member):
    ping_interval = 30.0


class Park(WebMessageHandler):
    async def get(self) -> Response:
        return await self.application.state.room.wait(self.request)


async def test_a_stop_ends_every_connection_it_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graceful stop through ``serve``: open WebSockets in rooms, parked long polls, streams
    and streamed uploads half received all end, their files deleted."""
    app = Brubeck(
        None,
        [
            (r"^/ws$", Lasting),
            (r"^/park$", Park),
            (r"^/streams$", Streams),
            (r"^/upload$", Upload),
        ],
        upload_dir=str(tmp_path),
        shutdown_timeout=0.2,
    )
    app.state.room = WaitingRoom(app)
    app.state.closed = []
    async with TestClient(app) as client:
        sockets = [await client.websocket_connect("/ws") for _ in range(20)]
        assert all(socket.accepted for socket in sockets)
        for n in range(1000, 1030):
            await client.send_raw(client.build_message("GET", "/park", conn_id=n))
            await client.send_raw(client.build_message("GET", "/streams?n=100", conn_id=n + 100))
            raw = upload_first(n + 200, "/upload", b"ab", 100).replace(SENDER, client.sender, 1)
            await client.send_raw(raw)
        await until(lambda: len(app._streams) == 30 and len(app.state.room) == 30)
        assert len(app._streams) == 30 and len(app.state.room) == 30
    await until(lambda: at_rest(app), timeout=1.0)
    assert in_use(app) == dict.fromkeys(in_use(app), 0)
    assert len(app.state.room) == 0 and len(app.state.closed) == 20
    assert list(tmp_path.iterdir()) == []


# Services


async def test_a_service_clients_pending_requests_go_when_they_time_out() -> None:
    """Requests to a broker that never answers time out; none stays in ``_pending``."""
    client = ServiceClient(f"inproc://leak-hunt-nobody-{os.getpid()}", timeout=0.05, retries=2)
    try:
        results = await asyncio.gather(
            *(client.request("echo", n) for n in range(200)), return_exceptions=True
        )
        assert all(isinstance(result, ServiceUnavailable) for result in results)
        assert client._pending == {}
    finally:
        await client.close()


class _BrokerWire:
    """A broker's socket: every send is taken."""

    backlog = False

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> bool:
        self.sent.append(frames)
        return True


def test_a_brokers_tables_empty_once_requests_are_answered_or_expired() -> None:
    """Requests to 3,000 services nobody serves (names are the clients' to choose) wait, then
    expire with their services; requests answered by workers leave no pending entry; dead
    workers take their service with them."""
    broker = Broker(queue_timeout=1.0, heartbeat=1.0)
    wire = broker._wire = _BrokerWire()  # type: ignore[assignment]
    now = 100.0
    for n in range(3000):
        frames = [b"client-%d" % n, b"%08d" % n, b"", mdp.CLIENT, b"nobody-%d" % n, b"hi"]
        broker._handle(frames, now)
    assert len(broker._services) == 3000
    broker._tick(now + 2.0)
    assert (broker._services, broker._pending) == ({}, {})
    for w in range(5):
        broker._handle([b"worker-%d" % w, b"", mdp.WORKER, mdp.READY, b"echo"], now)
    for n in range(1000):
        broker._handle([b"client", b"%08d" % n, b"", mdp.CLIENT, b"echo", b"hi"], now)
    answered = 0
    while given := [frames for frames in wire.sent if frames[3:4] == [mdp.REQUEST]]:
        wire.sent.clear()
        for frames in given:  # each worker answers the request it holds
            identity, token = frames[0], frames[4]
            broker._handle([identity, b"", mdp.WORKER, mdp.REPLY, token, b"", b"ok"], now)
            answered += 1
    assert answered == 1000 and broker._pending == {}
    broker._tick(now + 10.0)  # the workers went silent
    assert (broker._services, broker._workers, broker._pending) == ({}, {}, {})
