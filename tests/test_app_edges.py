"""Error and edge branches of the request path, driven the way a client, Mongrel2 or an app can.

Each test names what it reaches; the point is the behaviour owed when it happens: an HTTP
status, a log line or a clear exception, a closed connection rather than a hung one, and no
file or memory left behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import tnetstring

from brubeck import Brubeck, HTTPError, Response, WebMessageHandler
from brubeck.connection import Mongrel2Connection
from brubeck.request import Request
from brubeck.streaming import BURST, PACE
from brubeck.testing import TestClient, TestResponse
from brubeck.waiting import WaitingRoom
from tests import fixtures


async def until(condition: Callable[[], Any], what: str, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def quiet(client: TestClient, conn_id: int, wait: float = 0.1) -> bool:
    """True when nothing more arrives for ``conn_id`` within ``wait`` seconds."""
    saved, client.timeout = client.timeout, wait
    try:
        await client.receive(conn_id)
    except TimeoutError:
        return True
    finally:
        client.timeout = saved
    return False


def dechunk(data: bytes) -> tuple[bytes, bytes, bool]:
    """Head, body and whether the last chunk came, of a chunked response read so far."""
    head, _, rest = data.partition(b"\r\n\r\n")
    body = b""
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n", f"bytes after the last chunk: {rest!r}"
            return head, body, True
        body, rest = body + rest[:size], rest[size + 2 :]
    return head, body, False


async def read_stream(client: TestClient, conn_id: int) -> tuple[bytes, bytes, bool]:
    """A streamed response up to its last chunk or its close: head, body, and whether closed."""
    data = b""
    while True:
        piece = await client.receive(conn_id)
        if piece == b"":
            head, body, _ = dechunk(data)
            return head, body, True
        data += piece
        head, body, ended = dechunk(data)
        if ended:
            return head, body, False


def with_m2_headers(raw: bytes, **extra: bytes) -> bytes:
    """The same request with more upper-case (Mongrel2's own) headers."""
    sender, conn_id, path, rest = raw.split(b" ", 3)
    headers, body = tnetstring.pop(rest)
    headers.update((key.encode(), value) for key, value in extra.items())
    return b" ".join([sender, conn_id, path, tnetstring.dumps(headers) + tnetstring.dumps(body)])


def spool(run_dir: Path, size: int = 1000) -> Path:
    """The file Mongrel2 would have streamed fixtures.UPLOAD_DONE's body into."""
    spooled = run_dir / "tmp" / "upload.C1CV4a"
    spooled.parent.mkdir(exist_ok=True)
    spooled.write_bytes(b"x" * size)
    return spooled


# Uploads: the spooled file never outlives its request


async def test_a_streamed_answer_to_an_upload_deletes_the_spooled_file(tmp_path: Path) -> None:
    """A stream answers with ALREADY_SENT: the file must still go once it ended."""
    spooled = spool(tmp_path)

    class Digest(WebMessageHandler):
        async def post(self) -> str:
            self.write(b"%d " % self.request.upload.size)
            await self.flush()
            return "done"

    app = Brubeck(handler_tuples=[(r"^/upload$", Digest)], mongrel2_run_dir=str(tmp_path))
    async with TestClient(app) as client:
        await client.send_raw(fixtures.with_conn_id(fixtures.UPLOAD_DONE, 7))
        head, body, closed = await read_stream(client, 7)
        assert head.startswith(b"HTTP/1.1 200 OK") and body == b"1000 done" and not closed
        await until(lambda: not spooled.exists(), "the spooled file's removal")


class HoldsUpload(WebMessageHandler):
    """Holds an upload request until the test lets it go."""

    started: ClassVar[asyncio.Event]

    async def post(self) -> str:
        HoldsUpload.started.set()
        await asyncio.Event().wait()
        return "never"


async def test_a_client_gone_during_an_upload_handler_leaves_no_spooled_file(
    tmp_path: Path,
) -> None:
    """Mongrel2 leaves the file to the handler: a disconnect must not strand it on disk."""
    spooled = spool(tmp_path)
    HoldsUpload.started = asyncio.Event()
    app = Brubeck(handler_tuples=[(r"^/upload$", HoldsUpload)], mongrel2_run_dir=str(tmp_path))
    async with TestClient(app) as client:
        await client.send_raw(fixtures.with_conn_id(fixtures.UPLOAD_DONE, 4))
        await asyncio.wait_for(HoldsUpload.started.wait(), 2)
        await client.send_raw(fixtures.DISCONNECT)  # connection 4's client went away
        await until(lambda: len(app._inflight) == 0, "the cancellation")
        assert await quiet(client, 4)
        await until(lambda: not spooled.exists(), "the spooled file's removal")


@pytest.mark.parametrize("gone", ["client", "mongrel2"])
async def test_an_upload_answered_behind_a_slow_request_is_deleted_when_the_client_goes(
    gone: str, tmp_path: Path
) -> None:
    """Its answer waits in the connection's queue: a disconnect, or the loss of Mongrel2 (whose
    clients all went with it), must not strand its file."""
    spooled = spool(tmp_path)
    HoldsUpload.started = asyncio.Event()

    class Quick(WebMessageHandler):
        def post(self) -> str:
            return "stored"

    app = Brubeck(
        handler_tuples=[(r"^/held$", HoldsUpload), (r"^/upload$", Quick)],
        mongrel2_run_dir=str(tmp_path),
    )
    async with TestClient(app) as client:
        await client.send_raw(client.build_message("POST", "/held", conn_id=4))
        await asyncio.wait_for(HoldsUpload.started.wait(), 2)
        await client.send_raw(fixtures.with_conn_id(fixtures.UPLOAD_DONE, 4))  # pipelined
        await round_trip_on(client, 5)
        assert spooled.exists()  # answered, but queued behind /held
        if gone == "client":
            await client.send_raw(fixtures.DISCONNECT)  # connection 4's client went away
        else:  # what the connection does when its monitors see Mongrel2 go
            conn = app.msg_conn
            assert conn is not None and conn.on_lost is not None
            conn.epoch += 1
            conn.on_lost(0, 0)
        await until(lambda: not spooled.exists(), "the spooled file's removal")
        assert await quiet(client, 4)


async def round_trip_on(client: TestClient, conn_id: int) -> None:
    """A request on another connection and its answer: what was sent before is handled."""
    await client.send_raw(client.build_message("GET", "/nowhere", conn_id=conn_id))
    await client.receive(conn_id)


# Mongrel2 and client framing that only some deployments produce


@pytest.mark.parametrize(
    ("version", "headers"), [("HTTP/1.1", {"connection": "close"}), ("HTTP/1.0", {})]
)
async def test_a_flow_controlled_connection_is_closed_after_its_answer(
    version: str, headers: dict[str, str]
) -> None:
    """With download.flow_control, the close must go through the credit window too."""
    app = Brubeck()

    @app.add_route(r"^/$")
    def index(application: Brubeck, request: Request) -> str:
        return "hello"

    async with TestClient(app) as client:
        raw = client.build_message("GET", "/", conn_id=3, headers=headers, version=version)
        await client.send_raw(with_m2_headers(raw, DOWNLOAD_CREDITS=b"102400"))
        answer = TestResponse(await client.receive(3), closed=False)
        assert answer.status_code == 200 and answer.text == "hello"
        assert answer.headers["connection"] == "close"
        assert await client.receive(3) == b""


async def test_a_release_closes_the_connections_http_says_to_close() -> None:
    """Long-poll answers to HTTP/1.0 and Connection: close clients end with a close."""
    app = Brubeck()
    room = WaitingRoom(app)

    class Wait(WebMessageHandler):
        async def get(self) -> Response:
            return await room.wait(self.request)

    app.add_route_rule(r"^/wait$", Wait)
    async with TestClient(app) as client:
        for conn_id, version, headers in (
            (1, "HTTP/1.1", {}),
            (2, "HTTP/1.0", {}),
            (3, "HTTP/1.1", {"connection": "close"}),
        ):
            raw = client.build_message(
                "GET", "/wait", conn_id=conn_id, headers=headers, version=version
            )
            await client.send_raw(raw)
        await until(lambda: len(room) == 3, "three waiters")
        assert room.release(Response("news")) == 3
        answers = {c: TestResponse(await client.receive(c), closed=False) for c in (1, 2, 3)}
        assert all(a.text == "news" for a in answers.values())
        assert answers[2].headers["connection"] == "close"
        assert answers[3].headers["connection"] == "close"
        assert await client.receive(2) == b"" and await client.receive(3) == b""
        assert await quiet(client, 1)  # HTTP/1.1 keep-alive stays open


class RecordingConnection:
    """Stands in for Mongrel2Connection where only the bytes sent matter."""

    sender_id = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sent.append(data)


def test_reply_heads_stay_bounded_as_connection_ids_grow() -> None:
    """Mongrel2 numbers connections 1, 2, 3… forever: the reply-head cache must not grow with it."""
    app = Brubeck()

    @app.add_route(r"^/hello/world$")
    def hello(application: Brubeck, request: Request) -> str:
        return "hi"

    conn = RecordingConnection()
    app.msg_conn = conn  # type: ignore[assignment]
    count = 5000
    for conn_id in range(1, count + 1):
        app.handle_message(fixtures.with_conn_id(fixtures.GET_QUERY, conn_id))
    assert len(conn.sent) == count
    for conn_id, data in zip(range(1, count + 1), conn.sent, strict=True):
        address = b"%d:%d, " % (len(b"%d" % conn_id), conn_id)
        assert data.startswith(fixtures.SENDER + b" " + address + b"HTTP/1.1 200 OK")
    assert len(app._addresses) <= 4096


def test_an_app_without_a_connection_says_so() -> None:
    """Feeding handle_message by hand needs msg_conn: a clear error, not an AttributeError."""
    app = Brubeck()

    @app.add_route(r"^/hello/world$")
    def hello(application: Brubeck, request: Request) -> str:
        return "hi"

    with pytest.raises(RuntimeError, match="no msg_conn to answer through"):
        app.handle_message(fixtures.GET_QUERY)


# Handler hooks that fail


class Closing(WebMessageHandler):
    """Holds its request; its on_connection_close behaves as ``mode`` says."""

    mode: ClassVar[str]
    events: ClassVar[list[str]]

    async def get(self) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            Closing.events.append("cancelled")
            raise
        return "never"

    def on_connection_close(self) -> Any:
        if Closing.mode == "raises":
            raise RuntimeError("close hook broke")

        async def later() -> None:
            await asyncio.sleep(0)
            if Closing.mode == "async raises":
                raise RuntimeError("async close hook broke")
            Closing.events.append("async hook ran")

        return later()


@pytest.mark.parametrize(
    ("mode", "events", "logged"),
    [
        ("raises", ["cancelled"], "Closing.on_connection_close failed"),
        ("async", ["cancelled", "async hook ran"], None),
        ("async raises", ["cancelled"], "on_connection_close failed"),
    ],
)
async def test_on_connection_close_hooks_run_and_their_failures_are_logged(
    mode: str, events: list[str], logged: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    Closing.mode, Closing.events = mode, []
    app = Brubeck(handler_tuples=[(r"^/wait$", Closing)])

    @app.add_route(r"^/after$")
    def after(application: Brubeck, request: Request) -> str:
        return "still serving"

    async with TestClient(app) as client:
        await client.send_raw(client.build_message("GET", "/wait", conn_id=4))
        await until(lambda: len(app._inflight) == 1, "the held request")
        await client.send_raw(fixtures.DISCONNECT)  # connection 4's client went away
        await until(lambda: Closing.events == events, f"events {events}")
        assert (await client.get("/after")).text == "still serving"
        assert await quiet(client, 4)
    if logged is None:
        assert "failed" not in caplog.text
    else:
        assert logged in caplog.text and "close hook broke" in caplog.text


# Handler API corners


async def test_set_cookie_turns_a_plain_value_into_text_and_refuses_unsafe_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Cookies(WebMessageHandler):
        def get(self) -> str:
            self.set_cookie("visits", 3)
            return "ok"

        def post(self) -> str:
            self.set_cookie("prefs", {"a": 1})  # not str and no secret: str() has a space
            return "never"

    async with TestClient(Brubeck(handler_tuples=[(r"^/$", Cookies)])) as client:
        response = await client.get("/")
        assert response.get_all("set-cookie")[0].startswith("visits=3;")
        assert (await client.post("/")).status_code == 500
    assert "ValueError" in caplog.text and "prefs" in caplog.text


async def test_add_header_content_type_replaces_the_default_one() -> None:
    """Two Content-Type lines would leave the client to pick one."""

    class Plain(WebMessageHandler):
        def get(self) -> str:
            self.add_header("content-type", "text/plain")
            return "plain"

    async with TestClient(Brubeck(handler_tuples=[(r"^/$", Plain)])) as client:
        response = await client.get("/")
    assert response.get_all("content-type") == ["text/plain"]


class AwaitingPrepare(WebMessageHandler):
    """A prepare that really awaits, so the rest runs in the handler's task."""

    async def prepare(self) -> None:
        await asyncio.sleep(0)
        if self.get_argument("refuse", None):
            raise HTTPError(403, "refused after a lookup")

    def get(self) -> str:
        raise ZeroDivisionError("verb broke")


async def test_errors_after_an_awaiting_prepare_become_responses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Brubeck(handler_tuples=[(r"^/$", AwaitingPrepare)])
    async with TestClient(app) as client:
        refused = await client.get("/", params={"refuse": "1"})
        broken = await client.get("/")
    assert refused.status_code == 403 and "refused after a lookup" in refused.text
    assert broken.status_code == 500
    assert "uncaught exception in AwaitingPrepare" in caplog.text
    assert "ZeroDivisionError: verb broke" in caplog.text


class BrokenErrorPages(WebMessageHandler):
    def write_error(self, status_code: int, exc_info: Any = None, message: Any = None) -> None:
        raise RuntimeError("error page broke")


async def test_a_broken_error_handler_still_answers_a_bare_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """404s and function-route errors render through error_handler; if it fails, the client
    still gets an answer instead of waiting for Mongrel2 to time out."""
    app = Brubeck(error_handler=BrokenErrorPages)
    async with TestClient(app) as client:
        response = await client.get("/nowhere")
    assert response.status_code == 500 and response.text == "500 Internal Server Error\n"
    assert "BrokenErrorPages could not render a 404" in caplog.text
    assert "error page broke" in caplog.text


# Streamed responses


def stream_app(handler: type[WebMessageHandler], **options: Any) -> Brubeck:
    return Brubeck(handler_tuples=[(r"^/s$", handler)], **options)


@pytest.mark.parametrize("ending", ["render", "text", "finish"])
async def test_the_rest_of_a_stream_follows_what_was_flushed(ending: str) -> None:
    """After a flush, ``return self.render()``, ``return "text"`` and ``await self.finish()``
    each send what is left, once, and end the body."""

    class Rest(WebMessageHandler):
        async def get(self) -> Any:
            self.write("a")
            await self.flush()
            self.write("b")
            if ending == "render":
                return self.render()
            if ending == "text":
                return "c"
            await self.finish()
            return None

    async with TestClient(stream_app(Rest)) as client:
        await client.send_raw(client.build_message("GET", "/s", conn_id=1))
        head, body, closed = await read_stream(client, 1)
        assert b"transfer-encoding: chunked" in head.lower() and not closed
        assert body == {"render": b"ab", "text": b"abc", "finish": b"ab"}[ending]
        assert await quiet(client, 1)  # no second end, no stray bytes


async def test_a_head_request_to_a_stream_gets_the_head_only() -> None:
    class Report(WebMessageHandler):
        async def get(self) -> None:
            await self.flush()  # nothing written yet: sends the head alone
            for row in ("a", "b"):
                self.write(row)
                await self.flush()

    async with TestClient(stream_app(Report)) as client:
        await client.send_raw(client.build_message("HEAD", "/s", conn_id=1))
        head = await client.receive(1)
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
        assert await quiet(client, 1)
        await client.send_raw(client.build_message("GET", "/s", conn_id=2))
        assert (await read_stream(client, 2))[1] == b"ab"  # the same handler streams a GET


async def test_a_pipelined_stream_waits_for_the_answer_before_it() -> None:
    """A stream cannot queue behind an earlier answer: it buffers and answers in order."""
    release = asyncio.Event()

    class Slow(WebMessageHandler):
        async def get(self) -> str:
            await release.wait()
            return "first"

    class Streams(WebMessageHandler):
        async def get(self) -> None:
            for part in ("se", "cond"):
                self.write(part)
                await self.flush()
            release.set()

    app = Brubeck(handler_tuples=[(r"^/slow$", Slow), (r"^/s$", Streams)])
    async with TestClient(app) as client:
        await client.send_raw(client.build_message("GET", "/slow", conn_id=1))
        await client.send_raw(client.build_message("GET", "/s", conn_id=1))
        first = TestResponse(await client.receive(1), closed=False)
        second = TestResponse(await client.receive(1), closed=False)
    assert first.text == "first"
    assert second.text == "second" and second.headers["content-length"] == "6"


async def test_a_stream_that_fails_is_cut_off_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Past the head a 500 cannot be sent: the client must see a truncated body, closed."""

    class Fails(WebMessageHandler):
        async def get(self) -> None:
            for n in range(BURST + 4):  # the last ones wait for the pace's timer
                self.write(b"%d," % n)
                await self.flush()
            raise ValueError("source broke")

    async with TestClient(stream_app(Fails)) as client:
        await client.send_raw(client.build_message("GET", "/s", conn_id=1))
        head, body, closed = await read_stream(client, 1)
        assert head.startswith(b"HTTP/1.1 200 OK") and closed
        assert body == b"".join(b"%d," % n for n in range(BURST))
        assert await quiet(client, 1, wait=PACE + 0.1)  # the pending timer sent nothing
    assert "Fails failed after its response started; closing the connection" in caplog.text
    assert "ValueError: source broke" in caplog.text


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_a_paced_finish_whose_buffer_left_meanwhile_ends_once(version: str) -> None:
    """While finish() waits for the pace, another task may send the buffer (a flush of its
    own): finish must then send the end once: no second last chunk (HTTP/1.1), no early
    close (HTTP/1.0, where an empty reply ends the body)."""
    expected = b"".join(b"%d," % n for n in range(BURST + 1))

    class Racing(WebMessageHandler):
        async def get(self) -> None:
            for n in range(BURST):
                self.write(b"%d," % n)
                await self.flush()
            self.write(b"%d," % BURST)
            stream = self._stream
            assert stream is not None
            # What the pace's timer or a concurrent flush does during finish()'s wait.
            asyncio.get_running_loop().call_soon(stream._send_buffer)
            await self.finish()

    async with TestClient(stream_app(Racing)) as client:
        await client.send_raw(client.build_message("GET", "/s", conn_id=1, version=version))
        if version == "HTTP/1.1":
            _, body, closed = await read_stream(client, 1)
            assert body == expected and not closed
        else:  # no chunks: the body is everything before the close
            data = b""
            while (piece := await client.receive(1)) != b"":
                data += piece
            assert data.partition(b"\r\n\r\n")[2] == expected
        assert await quiet(client, 1, wait=PACE + 0.1)


async def test_a_burst_of_flushes_ends_complete_and_within_mongrel2s_queue() -> None:
    """Over BURST flushes, the rest is coalesced into the end: all bytes, few messages."""

    class Burst(WebMessageHandler):
        async def get(self) -> None:
            for n in range(BURST + 4):
                self.write(b"%d," % n)
                await self.flush()

    async with TestClient(stream_app(Burst)) as client:
        await client.send_raw(client.build_message("GET", "/s", conn_id=1))
        pieces = []
        while not dechunk(b"".join(pieces))[2]:
            pieces.append(await client.receive(1))
        assert dechunk(b"".join(pieces))[1] == b"".join(b"%d," % n for n in range(BURST + 4))
        assert len(pieces) <= 16  # Mongrel2 drops a connection with more queued
        assert await quiet(client, 1, wait=PACE + 0.1)


async def test_an_event_after_the_stream_ended_is_refused_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Late(WebMessageHandler):
        async def get(self) -> None:
            await self.send_event("first")
            await self.finish()
            await self.send_event("late")

    async with TestClient(stream_app(Late)) as client:
        await client.send_raw(client.build_message("GET", "/s", conn_id=1))
        _, body, closed = await read_stream(client, 1)
        assert body == b"data: first\n\n" and not closed
        assert await quiet(client, 1)
    assert "the stream is finished: nothing more can be sent" in caplog.text


async def test_a_stream_past_its_timeout_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    """A 504 cannot follow a started stream: the connection is closed instead."""

    class Stalls(WebMessageHandler):
        timeout = 0.05

        async def get(self) -> None:
            self.write("partial")
            await self.flush()
            await asyncio.Event().wait()

    # A short keep-alive interval makes the timeout sweep tick often (and sends keep-alives).
    async with TestClient(stream_app(Stalls, keepalive_interval=0.01)) as client:
        await client.send_raw(client.build_message("GET", "/s", conn_id=1))
        pieces = [await client.receive(1)]  # the head
        while pieces[-1] != b"":
            piece = await client.receive(1)
            if b":3:ctl," not in piece[:12]:
                pieces.append(piece)
    _, body, ended = dechunk(b"".join(pieces))
    assert body == b"partial" and not ended
    assert "took longer than 0.05s: stream closed" in caplog.text


# Handlers that run as tasks


async def test_a_function_route_may_return_any_awaitable() -> None:
    """run_in_executor gives a Future, not a coroutine: a task must still await it."""
    app = Brubeck()

    @app.add_route(r"^/thread$")
    def threaded(application: Brubeck, request: Request) -> Any:
        return asyncio.get_running_loop().run_in_executor(None, lambda: "from a thread")

    async with TestClient(app) as client:
        assert (await client.get("/thread")).text == "from a thread"


async def test_an_app_task_factory_is_used_for_handler_tasks() -> None:
    made: list[str] = []
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    class Awaits(WebMessageHandler):
        async def get(self) -> str:
            await asyncio.sleep(0)
            return "awaited"

    async with TestClient(Brubeck(handler_tuples=[(r"^/$", Awaits)])) as client:
        loop.set_task_factory(factory)
        try:
            assert (await client.get("/")).text == "awaited"
        finally:
            loop.set_task_factory(None)
    assert any(name.endswith("_finish_async") for name in made)


async def test_an_awaiting_function_route_that_raises_gets_an_error_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Brubeck()

    @app.add_route(r"^/(\w+)$")
    async def fails(application: Brubeck, request: Request, how: str) -> str:
        await asyncio.sleep(0)
        if how == "http":
            raise HTTPError(409, "already there")
        raise KeyError("lost key")

    async with TestClient(app) as client:
        conflict = await client.get("/http")
        broken = await client.get("/other")
    assert conflict.status_code == 409 and "already there" in conflict.text
    assert broken.status_code == 500 and "KeyError: 'lost key'" in caplog.text


class Fatal(BaseException):
    """Not an Exception: ``except Exception`` in app code lets it through."""


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_handler_raising_a_base_exception_still_ends_its_request(
    streamed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The client gets a 500, or a closed stream, rather than silence until Mongrel2 reaps it."""

    class Dies(WebMessageHandler):
        async def get(self) -> None:
            self.write("partial")
            if streamed:
                await self.flush()
            await asyncio.sleep(0)
            raise Fatal("deep trouble")

    async with TestClient(stream_app(Dies)) as client:
        await client.send_raw(client.build_message("GET", "/s", conn_id=1))
        if streamed:
            _, body, closed = await read_stream(client, 1)
            assert body == b"partial" and closed
        else:
            assert TestResponse(await client.receive(1), closed=False).status_code == 500
        assert await quiet(client, 1)
    assert "request task failed" in caplog.text and "Fatal: deep trouble" in caplog.text


@pytest.mark.parametrize("kind", ["class", "function"])
async def test_a_sync_handler_raising_a_base_exception_gets_a_500_and_the_batch_goes_on(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``def`` handler runs inside the receive loop: what escapes it must not end the loop's
    run of messages (the others would wait for the next arrival) or leave its client waiting.
    A cancelled future's ``result()`` raises such an error (CancelledError)."""

    def cancelled_result() -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        future.result()

    class Dies(WebMessageHandler):
        def get(self) -> None:
            cancelled_result()

    app = Brubeck(handler_tuples=[(r"^/class$", Dies)])

    @app.add_route(r"^/function$")
    def dies(application: Brubeck, request: Any) -> None:
        cancelled_result()

    async with TestClient(app) as client:
        # Three messages in one run: the one that fails sits between two that do not.
        for conn_id, path in ((1, "/nowhere"), (2, f"/{kind}"), (3, "/nowhere")):
            await client.send_raw(client.build_message("GET", path, conn_id=conn_id))
        assert TestResponse(await client.receive(1), closed=False).status_code == 404
        assert TestResponse(await client.receive(2), closed=False).status_code == 500
        assert TestResponse(await client.receive(3), closed=False).status_code == 404
    assert "uncaught exception" in caplog.text and "CancelledError" in caplog.text


async def test_a_failing_async_on_finish_is_logged_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Finishes(WebMessageHandler):
        def get(self) -> str:
            return self.get_argument("how")

        async def on_finish(self) -> None:
            await asyncio.sleep(0)
            if self.get_argument("how") == "error":
                raise OSError("log disk full")
            raise Fatal("worse")

    async with TestClient(Brubeck(handler_tuples=[(r"^/$", Finishes)])) as client:
        assert (await client.get("/", params={"how": "error"})).text == "error"
        assert (await client.get("/", params={"how": "fatal"})).text == "fatal"
        await until(lambda: "a background task failed" in caplog.text, "the second log")
    assert "Finishes.on_finish failed" in caplog.text and "OSError: log disk full" in caplog.text
    assert "Fatal: worse" in caplog.text


# Running and stopping


def test_run_serves_until_sigterm_then_shuts_down(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "brubeck.app")
    conn = Mongrel2Connection("inproc://edges-run-requests", "inproc://edges-run-replies")
    app = Brubeck(msg_conn=conn, event_loop="asyncio")
    events: list[str] = []

    @app.on_startup
    def started() -> None:
        events.append("started")
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)

    @app.on_shutdown
    def stopped() -> None:
        events.append("stopped")

    app.run()
    assert events == ["started", "stopped"]
    assert (
        "Brubeck serving: pulling from inproc://edges-run-requests, "
        "publishing to inproc://edges-run-replies" in caplog.text
    )


def test_run_names_the_event_loops_it_knows() -> None:
    with pytest.raises(ValueError, match="event_loop must be one of asyncio, uvloop, auto"):
        Brubeck(event_loop="trio").run()


async def test_requests_queued_at_stop_that_cannot_be_answered_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At a stop, queued requests are handled outside the receive loop; a failure there is
    logged per request and the rest are still handled."""
    app = Brubeck(max_in_flight=1, shutdown_timeout=0.05)

    @app.add_route(r"^/hold$")
    async def hold(application: Brubeck, request: Request) -> str:
        await asyncio.Event().wait()
        return "never"

    @app.add_route(r"^/quick$")
    def quick(application: Brubeck, request: Request) -> str:
        return "quick"

    async with TestClient(app) as client:
        await client.send_raw(client.build_message("GET", "/hold", conn_id=1))
        await until(lambda: len(app._inflight) == 1, "the held request")  # reading paused
        for conn_id in (2, 3, 4):
            await client.send_raw(client.build_message("GET", "/quick", conn_id=conn_id))
        assert app.msg_conn is not None
        app.msg_conn.backlog_limit = 2  # the third reply of one turn is refused
        app.stop()
        answers = [TestResponse(await client.receive(c), closed=False) for c in (2, 3)]
        assert [a.text for a in answers] == ["quick", "quick"]
        assert await quiet(client, 4)
    dropped = [r for r in caplog.records if r.getMessage().startswith("dropped the answer to")]
    assert len(dropped) == 1 and "replies are waiting for Mongrel2" in dropped[0].getMessage()


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1.0])
def test_a_shutdown_timeout_that_would_never_end_a_stop_is_refused(timeout: float) -> None:
    with pytest.raises(ValueError, match="shutdown_timeout"):
        Brubeck(shutdown_timeout=timeout)
