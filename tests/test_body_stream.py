"""bodystream.py and the live mode of streamed_uploads.py: ``request.body_stream``.

A handler class with ``stream_request_body = True`` behind Mongrel2's ``upload.stream=1`` runs
on the first message of a body and reads the pieces as Mongrel2 sends them. Each test plays
Mongrel2's side of the wire by hand (as tests/test_streamed_uploads.py does for the file mode)
and checks the bytes the handler read, the credits granted (the window on the first message,
then as much as the handler reads, never on a piece's arrival), the answers, the cancels that
end a body left unread, and the log lines. A ``Remote`` lets a test say when the running
handler reads, so that each grant can be tied to the read that caused it.

Also here: ``request.body_stream`` for a body that came whole (inline, or in a file), and
``BodyStream`` on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import tnetstring

from brubeck import Brubeck, HTTPError, WebMessageHandler, streamed_uploads
from brubeck.bodystream import PIECE_SIZE, BodyStream
from brubeck.request import Request
from brubeck.testing import TestClient, TestResponse
from tests import fixtures
from tests.upload_stream_support import (
    CANCEL_AFTER,
    answer,
    credits,
    ctl,
    disconnect,
    first,
    piece,
    quick_cancel,  # noqa: F401 - an autouse fixture
)

# BodyStream on its own


async def test_of_bytes_hands_out_pieces_of_at_most_piece_size() -> None:
    body = bytes(range(256)) * (PIECE_SIZE // 128) + b"tail!"  # two full pieces and 5 bytes
    stream = BodyStream.of_bytes(body)
    assert (stream.length, stream.received, stream.finished) == (len(body), 0, True)
    assert stream.buffered == len(body)
    pieces = [chunk async for chunk in stream]
    assert [len(chunk) for chunk in pieces] == [PIECE_SIZE, PIECE_SIZE, 5]
    assert b"".join(pieces) == body
    assert (stream.received, stream.buffered) == (len(body), 0)
    assert await stream.read() == b"" and await stream.read() == b""  # ended, for good
    empty = BodyStream.of_bytes(b"")
    assert empty.length == 0 and await empty.read() == b""


async def test_of_file_reads_the_file_in_pieces_and_closes_it(tmp_path: Path) -> None:
    path = tmp_path / "body"
    path.write_bytes(b"x" * PIECE_SIZE + b"yz")
    opened: list[Any] = []

    def opener() -> Any:
        opened.append(path.open("rb"))
        return opened[-1]

    stream = BodyStream.of_file(opener, PIECE_SIZE + 2)
    assert opened == []  # not before the first read
    assert (stream.length, stream.finished) == (PIECE_SIZE + 2, True)
    assert await stream.read_all(PIECE_SIZE + 2) == b"x" * PIECE_SIZE + b"yz"
    assert stream.received == PIECE_SIZE + 2
    assert len(opened) == 1 and opened[0].closed
    assert await stream.read() == b""


async def test_fed_pieces_are_read_in_order_and_each_read_is_counted() -> None:
    taken: list[int] = []
    stream = BodyStream(None, taken.append)
    assert stream.length is None and not stream.finished
    stream.feed(b"ab")
    stream.feed(b"")  # nothing: an empty piece would read as the end
    stream.feed(b"cde")
    assert (stream.buffered, taken) == (5, [])  # arriving is not taking
    assert await stream.read() == b"ab"
    assert (taken, stream.received, stream.buffered) == ([2], 2, 3)
    stream.end()
    assert stream.finished  # ended, though not all read
    assert await stream.read() == b"cde"
    assert await stream.read() == b""
    assert (taken, stream.received) == ([2, 3], 5)  # the end counts nothing


async def test_a_read_waits_for_the_next_piece_or_the_end() -> None:
    stream = BodyStream(4)
    reading = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0.01)
    assert not reading.done()
    stream.feed(b"abcd")
    assert await reading == b"abcd"
    reading = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0.01)
    assert not reading.done()
    stream.end()
    assert await reading == b""


async def test_a_failure_is_raised_by_the_waiting_read_and_every_read_after() -> None:
    stream = BodyStream(10)
    reading = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0.01)
    error = HTTPError(408, "the upload stalled")
    stream.fail(error)
    with pytest.raises(HTTPError) as raised:
        await reading
    assert raised.value is error
    with pytest.raises(HTTPError) as raised:
        await stream.read()
    assert raised.value is error
    assert not stream.finished


async def test_pieces_that_came_before_a_failure_are_still_read_first() -> None:
    stream = BodyStream(None)
    stream.feed(b"ab")
    stream.fail(HTTPError(413))
    assert await stream.read() == b"ab"
    with pytest.raises(HTTPError) as raised:
        await stream.read()
    assert raised.value.status == 413


async def test_a_failure_after_the_end_changes_nothing() -> None:
    stream = BodyStream(2)
    stream.feed(b"ab")
    stream.end()
    stream.fail(HTTPError(400, "the client went away"))  # it had sent everything
    assert [chunk async for chunk in stream] == [b"ab"]


async def test_read_all_joins_the_rest_up_to_a_limit() -> None:
    stream = BodyStream(None)
    for part in (b"abc", b"def", b"g"):
        stream.feed(part)
    stream.end()
    assert await stream.read_all(7) == b"abcdefg"
    over = BodyStream.of_bytes(b"abcdefgh")
    with pytest.raises(HTTPError) as raised:
        await over.read_all(7)
    assert raised.value.status == 413 and "7 bytes" in str(raised.value)


# The app


class Remote:
    """The handler's reads, driven by the test.

    ``ask(order)`` makes the running handler (``Driven``) run ``await order(stream)``;
    ``result()`` is what that gave (bytes, or the exception it raised, which the handler
    then raises on); ``read()`` does both for one ``stream.read()``; ``answer()`` makes the
    handler answer ``{"received": n}``.
    """

    def __init__(self) -> None:
        self.orders: asyncio.Queue[Callable[[BodyStream], Awaitable[Any]] | None] = asyncio.Queue()
        self.results: asyncio.Queue[Any] = asyncio.Queue()
        self.stream: BodyStream | None = None
        self.events: list[str] = []

    async def serve(self, handler: WebMessageHandler) -> dict[str, Any]:
        stream = self.stream = handler.request.body_stream
        self.events.append("started")
        try:
            while (order := await self.orders.get()) is not None:
                try:
                    self.results.put_nowait(await order(stream))
                except Exception as exc:
                    self.results.put_nowait(exc)
                    raise
        except asyncio.CancelledError:
            self.events.append("cancelled")
            raise
        return {"received": stream.received}

    def ask(self, order: Callable[[BodyStream], Awaitable[Any]]) -> None:
        self.orders.put_nowait(order)

    async def result(self) -> Any:
        return await asyncio.wait_for(self.results.get(), 2)

    async def read(self) -> Any:
        self.ask(BodyStream.read)
        return await self.result()

    def answer(self) -> None:
        self.orders.put_nowait(None)


class Driven(WebMessageHandler):
    """Reads as its ``Remote`` says."""

    stream_request_body = True
    remote: Remote

    async def post(self) -> dict[str, Any]:
        return await self.remote.serve(self)

    def on_connection_close(self) -> None:
        self.remote.events.append("connection closed")


class Collect(WebMessageHandler):
    """Reads the whole body with ``async for`` and answers what it saw."""

    stream_request_body = True

    async def post(self) -> dict[str, Any]:
        stream = self.request.body_stream
        assert stream is self.request.body_stream
        pieces = [chunk.decode() async for chunk in stream]
        return {
            "pieces": pieces,
            "length": stream.length,
            "received": stream.received,
            "finished": stream.finished,
        }


class Plain(Collect):
    """``Collect`` without ``stream_request_body``: Mongrel2's pieces go to a file first."""

    stream_request_body = False


def build(*routes: tuple[Any, ...], **settings: Any) -> Brubeck:
    """An app with ``routes``, ``/ping``, and an 8-byte window unless ``settings`` say not."""
    settings.setdefault("upload_stream_window", 8)
    app = Brubeck(handler_tuples=routes, **settings)

    @app.add_route(r"^/ping$")
    def ping(application: Brubeck, request: Request) -> str:
        return "pong"

    return app


def make_app(remote: Remote | None = None, **settings: Any) -> Brubeck:
    """``/up``: ``Driven`` by ``remote``, else ``Collect``; ``/plain``: ``Plain``."""
    up = (r"^/up$", Driven, {"remote": remote}) if remote else (r"^/up$", Collect)
    return build(up, (r"^/plain$", Plain), **settings)


# Mongrel2's side of the wire (as in tests/test_streamed_uploads.py)


async def ended(client: TestClient, conn_id: int) -> TestResponse:
    """An answer that ends a body left unread: no close (Mongrel2 waiting for credits would
    ignore it), then a cancel."""
    response = await answer(client, conn_id)
    assert "close" not in response.headers.get("connection", "")
    assert await ctl(client, conn_id) == {b"cancel": True}
    return response


async def arrived(client: TestClient, conn_id: int, wait: float = 0.05) -> list[bytes]:
    """What else came for ``conn_id``: messages are handled in order, so what the app sent
    before it answered a later ping is here by now (and a cancel due soon after it, too)."""
    assert (await client.get("/ping")).text == "pong"
    return await fixtures.drain(client, conn_id, wait)


async def nothing_more(client: TestClient, conn_id: int) -> bool:
    return await arrived(client, conn_id) == []


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# Live: the flow


async def test_the_handler_runs_on_the_first_message_and_each_read_grants_its_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5  # the window, less what came without credit
        assert await remote.read() == b"abc"  # running already: no piece was sent yet
        assert await credits(client, 31) == 3  # read: as much may come again
        stream = remote.stream
        assert stream is not None
        assert (stream.length, stream.received, stream.finished) == (10, 3, False)

        await client.send_raw(piece(client, 31, 3, b"defgh"))
        assert await nothing_more(client, 31)  # arrived, not read: no credits
        assert stream.buffered == 5
        assert await remote.read() == b"defgh"
        assert await credits(client, 31) == 5

        await client.send_raw(piece(client, 31, 8, b"ij", done=True))
        await client.get("/ping")
        assert stream.finished and stream.received == 8  # arrived, not read yet
        assert await remote.read() == b"ij"
        assert await remote.read() == b""
        assert await remote.read() == b""
        assert await nothing_more(client, 31)  # none for the last piece: it is all here
        remote.answer()
        response = await answer(client, 31)
        assert await nothing_more(client, 31)  # no cancel: the body was read to its end
    assert response.status_code == 200 and response.json() == {"received": 10}
    assert remote.events == ["started"]
    assert warnings_of(caplog) == []


async def test_a_handler_that_stops_reading_stops_the_client() -> None:
    remote = Remote()
    async with TestClient(make_app(remote, upload_stream_window=4)) as client:
        await client.send_raw(first(client, 31, b"", length=12))
        assert await credits(client, 31) == 4
        await client.send_raw(piece(client, 31, 0, b"ab"))
        await client.send_raw(piece(client, 31, 2, b"cd"))
        assert await nothing_more(client, 31)  # the window is used up, and nothing is read
        assert remote.stream is not None and remote.stream.buffered == 4
        assert await remote.read() == b"ab"
        assert await credits(client, 31) == 2
        assert await remote.read() == b"cd"
        assert await credits(client, 31) == 2
        await client.send_raw(piece(client, 31, 4, b"efgh"))
        assert await remote.read() == b"efgh"
        assert await credits(client, 31) == 4
        await client.send_raw(piece(client, 31, 8, b"ijkl", done=True))
        assert await remote.read() == b"ijkl"
        assert await remote.read() == b""
        remote.answer()
        assert (await answer(client, 31)).json() == {"received": 12}
        assert await nothing_more(client, 31)


async def test_async_for_reads_every_piece_as_it_comes() -> None:
    async with TestClient(make_app()) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        assert await credits(client, 31) == 3  # Collect read "abc" at once
        await client.send_raw(piece(client, 31, 3, b"defgh"))
        assert await credits(client, 31) == 5
        await client.send_raw(piece(client, 31, 8, b"ij", done=True))
        response = await answer(client, 31)
        assert await nothing_more(client, 31)
    assert response.status_code == 200
    assert response.json() == {
        "pieces": ["abc", "defgh", "ij"],
        "length": 10,
        "received": 10,
        "finished": True,
    }


async def test_a_chunked_body_has_no_length() -> None:
    async with TestClient(make_app()) as client:
        await client.send_raw(first(client, 31, b""))  # nothing came with the headers
        assert await credits(client, 31) == 8
        await client.send_raw(piece(client, 31, 0, b"1234"))
        assert await credits(client, 31) == 4
        await client.send_raw(piece(client, 31, 4, b"", done=True))
        response = await answer(client, 31)
        assert await nothing_more(client, 31)
    assert response.json() == {"pieces": ["1234"], "length": None, "received": 4, "finished": True}


async def test_a_first_message_that_is_also_the_last_needs_no_credits() -> None:
    async with TestClient(make_app()) as client:
        done = {b"UPLOAD_STREAM_DONE": b"1"}
        await client.send_raw(first(client, 31, b"whole", length=5, extra=done))
        response = await answer(client, 31)  # no credits before it
        assert await nothing_more(client, 31)  # nor a cancel after it
    assert response.json() == {"pieces": ["whole"], "length": 5, "received": 5, "finished": True}


async def test_a_piece_that_comes_early_waits_for_the_ones_before_it() -> None:
    async with TestClient(make_app()) as client:
        await client.send_raw(first(client, 31, b"ab", length=8))
        assert await credits(client, 31) == 6
        assert await credits(client, 31) == 2  # "ab" read
        await client.send_raw(piece(client, 31, 4, b"ef"))  # before "cd": held
        assert await nothing_more(client, 31)
        await client.send_raw(piece(client, 31, 2, b"cd"))
        assert await credits(client, 31) == 2  # "cd" read
        assert await credits(client, 31) == 2  # then "ef"
        await client.send_raw(piece(client, 31, 6, b"gh", done=True))
        response = await answer(client, 31)
    assert response.json()["pieces"] == ["ab", "cd", "ef", "gh"]


@pytest.mark.parametrize(("limit", "status"), [(10, 200), (9, 413)])
async def test_read_all_takes_the_whole_body_up_to_a_limit(limit: int, status: int) -> None:
    remote = Remote()
    async with TestClient(make_app(remote, upload_stream_window=16)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 13
        remote.ask(lambda stream: stream.read_all(limit))
        assert await credits(client, 31) == 3  # "abc" read
        await client.send_raw(piece(client, 31, 3, b"defgh"))
        assert await credits(client, 31) == 5
        await client.send_raw(piece(client, 31, 8, b"ij", done=True))
        result = await remote.result()
        if status == 200:
            assert result == b"abcdefghij"
            remote.answer()
        else:
            assert isinstance(result, HTTPError) and result.status == 413
        response = await answer(client, 31)
        assert await nothing_more(client, 31)  # no cancel: the body came to its end
    assert response.status_code == status


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ({"path": b"/nowhere"}, 404),
        ({"method": b"PUT"}, 405),
        ({"length": 101}, 413),  # over max_upload_size
        ({"extra": {b"x-refuse": b"1"}}, 413),  # accept_upload() says no
    ],
)
async def test_a_live_upload_refused_on_its_first_message_never_runs_the_handler(
    case: dict[str, Any], status: int
) -> None:
    ran: list[str] = []

    class Guarded(WebMessageHandler):
        stream_request_body = True

        def accept_upload(self) -> bool:
            return self.request.headers.get("x-refuse") is None

        async def post(self) -> str:
            ran.append("post")
            return "ran"

    async with TestClient(build((r"^/up$", Guarded), max_upload_size=100)) as client:
        await client.send_raw(first(client, 31, b"abc", **{"length": 10, **case}))
        assert (await ended(client, 31)).status_code == status  # and no credits before it
        assert await nothing_more(client, 31)
    assert ran == []


async def test_a_body_stream_peeked_at_in_accept_upload_is_not_the_handler_s(
    tmp_path: Path,
) -> None:
    class Peek(Plain):
        def accept_upload(self) -> bool:
            return self.request.body_stream is not None

    async with TestClient(build((r"^/up$", Peek), upload_dir=str(tmp_path))) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 8
        await client.send_raw(piece(client, 31, 3, b"defgh"))
        assert await credits(client, 31) == 5
        await client.send_raw(piece(client, 31, 8, b"ij", done=True))
        response = await answer(client, 31)
    assert response.json()["pieces"] == ["abcdefghij"]


# Live: ended early by the client's side


async def test_a_chunked_body_past_max_upload_size_fails_the_next_read_with_a_413() -> None:
    remote = Remote()
    async with TestClient(make_app(remote, max_upload_size=10)) as client:
        await client.send_raw(first(client, 31, b"12345"))
        assert await credits(client, 31) == 3
        assert await remote.read() == b"12345"
        assert await credits(client, 31) == 5
        await client.send_raw(piece(client, 31, 5, b"67890"))  # 10: still allowed
        assert await remote.read() == b"67890"
        assert await credits(client, 31) == 5
        remote.ask(BodyStream.read)
        await client.send_raw(piece(client, 31, 10, b"X"))
        error = await remote.result()
        assert isinstance(error, HTTPError) and error.status == 413
        assert (await ended(client, 31)).status_code == 413
        await client.send_raw(piece(client, 31, 11, b"YZ", done=True))  # on its way: dropped
        assert await nothing_more(client, 31)
    assert remote.stream is not None and remote.stream.received == 10


@pytest.mark.parametrize(
    ("offset", "data"),
    [
        (b"0", b"abc"),  # a piece sent again
        (b"2", b"cd"),  # overlapping what came
        (b"-3", b"x"),
        (b"3x", b"x"),
        (b"9999", b"x" * 9),  # early, and more than the window (8) lets Mongrel2 send
    ],
)
async def test_a_piece_that_does_not_fit_fails_the_next_read_with_a_400(
    caplog: pytest.LogCaptureFixture, offset: bytes, data: bytes
) -> None:
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        assert await remote.read() == b"abc"
        assert await credits(client, 31) == 3
        remote.ask(BodyStream.read)
        await client.send_raw(piece(client, 31, offset, data))
        error = await remote.result()
        assert isinstance(error, HTTPError) and error.status == 400
        assert (await ended(client, 31)).status_code == 400
        assert await nothing_more(client, 31)
    assert f"starts at {offset!r}, expected 3" in caplog.text


async def test_a_first_message_not_at_offset_0_fails_the_first_read_with_a_400() -> None:
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10, extra={b"UPLOAD_STREAM": b"5"}))
        error = await remote.read()
        assert isinstance(error, HTTPError) and error.status == 400
        assert (await ended(client, 31)).status_code == 400  # and no credits before it
    assert remote.stream is not None and remote.stream.received == 0


async def test_a_client_that_sends_nothing_while_it_has_credits_is_a_408(
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = Remote()
    async with TestClient(make_app(remote, upload_stream_timeout=0.2)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        assert await remote.read() == b"abc"
        assert await credits(client, 31) == 3
        loop = asyncio.get_running_loop()
        since = loop.time()
        remote.ask(BodyStream.read)
        error = await remote.result()
        assert loop.time() - since >= 0.15
        assert isinstance(error, HTTPError) and error.status == 408
        assert (await ended(client, 31)).status_code == 408
    assert any("stalled at 3 bytes" in line for line in warnings_of(caplog))


async def test_a_handler_slow_to_read_is_not_timed_out(caplog: pytest.LogCaptureFixture) -> None:
    class Sleepy(WebMessageHandler):
        """Sleeps longer than the timeout before it reads: the client waits for it meanwhile."""

        stream_request_body = True

        async def post(self) -> str:
            await asyncio.sleep(0.5)
            return (await self.request.body_stream.read_all(100)).decode()

    app = build((r"^/up$", Sleepy), upload_stream_window=4, upload_stream_timeout=0.15)
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"ab", length=8))
        assert await credits(client, 31) == 2
        await client.send_raw(piece(client, 31, 2, b"cd"))  # the window is used up
        loop = asyncio.get_running_loop()
        since = loop.time()
        assert [await credits(client, 31) for _ in range(2)] == [2, 2]  # "ab", "cd" read
        assert loop.time() - since >= 0.3
        await client.send_raw(piece(client, 31, 4, b"ef"))
        assert await credits(client, 31) == 2
        await client.send_raw(piece(client, 31, 6, b"gh", done=True))
        response = await answer(client, 31)
    assert (response.status_code, response.text) == (200, "abcdefgh")
    assert warnings_of(caplog) == []


async def the_client_leaves(client: TestClient, remote: Remote) -> None:
    """Start an upload on connection 31, read its first piece, then disconnect while the
    handler waits for the next one."""
    await client.send_raw(first(client, 31, b"abc", length=10))
    assert await credits(client, 31) == 5
    assert await remote.read() == b"abc"
    assert await credits(client, 31) == 3
    remote.ask(BodyStream.read)
    await client.send_raw(disconnect(client, 31))
    await client.get("/ping")


async def test_the_client_leaving_cancels_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "brubeck.app")
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await the_client_leaves(client, remote)
        await asyncio.sleep(0.01)
        assert remote.events == ["started", "connection closed", "cancelled"]
        assert remote.results.empty()  # cancelled in its read, which raised nothing
        assert remote.stream is not None
        with pytest.raises(HTTPError) as raised:  # the stream failed too: no read waits
            await asyncio.wait_for(remote.stream.read(), 1)
        assert raised.value.status == 400
        # A piece that was on its way: the client is gone, so it is dropped without a word.
        await client.send_raw(piece(client, 31, 3, b"defghij", done=True))
        later = [tnetstring.loads(raw) for raw in await arrived(client, 31)]
        # No answer, no credits; the cancel is test_nothing_is_sent_to_a_client_that_left's.
        assert later in ([], [[b"ctl", {b"cancel": True}]])
    assert "connection 31 ended: the client left" in caplog.text
    assert warnings_of(caplog) == []


async def test_nothing_is_sent_to_a_client_that_left() -> None:
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await the_client_leaves(client, remote)
        assert await nothing_more(client, 31)  # as in the file mode


# Live: the handler answers first


async def test_an_answer_before_the_end_of_the_body_is_followed_by_a_cancel(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streamed_uploads, "_CANCEL_AFTER", CANCEL_AFTER)
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        assert await remote.read() == b"abc"
        assert await credits(client, 31) == 3
        await client.send_raw(piece(client, 31, 3, b"defgh"))  # never read
        await client.get("/ping")
        remote.answer()
        response = await answer(client, 31)
        loop = asyncio.get_running_loop()
        answered = loop.time()
        assert await ctl(client, 31) == {b"cancel": True}
        assert 0.4 <= loop.time() - answered < 1.5
        # Pieces on their way are dropped without a word.
        await client.send_raw(piece(client, 31, 8, b"ij", done=True))
        assert await nothing_more(client, 31)
    assert response.status_code == 200 and response.json() == {"received": 3}
    assert "close" not in response.headers.get("connection", "")
    assert warnings_of(caplog) == []


async def test_a_handler_may_refuse_on_the_first_bytes() -> None:
    class Picky(WebMessageHandler):
        stream_request_body = True

        async def post(self) -> str:
            async for data in self.request.body_stream:
                if data.startswith(b"BAD"):
                    raise HTTPError(415, "not this kind of file")
            return "fine"

    app = build((r"^/up$", Picky))
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"BADfile", length=100))
        assert await credits(client, 31) == 1
        assert await credits(client, 31) == 7  # granted as "BADfile" was read
        assert (await ended(client, 31)).status_code == 415
        await client.send_raw(piece(client, 31, 7, b"x"))
        assert await nothing_more(client, 31)


async def test_an_answer_without_any_read_ends_the_connection_too() -> None:
    class Deaf(WebMessageHandler):
        stream_request_body = True

        async def post(self) -> str:
            return "not listening"

    app = build((r"^/up$", Deaf))
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        response = await ended(client, 31)
        assert await nothing_more(client, 31)
    assert (response.status_code, response.text) == (200, "not listening")


async def test_an_early_answer_to_a_connection_close_request_sends_no_close() -> None:
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10, extra={b"connection": b"close"}))
        assert await credits(client, 31) == 5
        remote.answer()
        assert (await answer(client, 31)).status_code == 200
        following = await client.receive(31)
        assert following != b"", "a close came before the cancel"
        assert tnetstring.loads(following) == [b"ctl", {b"cancel": True}]


async def test_a_graceful_stop_fails_the_pending_read_with_a_503() -> None:
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        assert await remote.read() == b"abc"
        assert await credits(client, 31) == 3
        remote.ask(BodyStream.read)
        await asyncio.sleep(0.01)
    error = await remote.result()
    assert isinstance(error, HTTPError) and error.status == 503
    assert "the server is restarting" in str(error)


async def test_a_graceful_stop_cancels_a_live_upload_once() -> None:
    remote = Remote()
    async with TestClient(make_app(remote)) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        remote.ask(BodyStream.read)
        assert await remote.result() == b"abc"
        assert await credits(client, 31) == 3
        remote.ask(BodyStream.read)
        await asyncio.sleep(0.01)
        client.app.stop()
        assert (await answer(client, 31)).status_code == 503
        assert await ctl(client, 31) == {b"cancel": True}
        client.timeout = 0.2
        with pytest.raises(TimeoutError):
            await client.receive(31)


# Live: no stored body


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda request: request.body, id="body"),
        pytest.param(lambda request: request.upload.size, id="upload.size"),
        pytest.param(lambda request: request.upload.open(), id="upload.open"),
        pytest.param(lambda request: request.upload.read(), id="upload.read"),
        pytest.param(lambda request: request.upload.keep(), id="upload.keep"),
        pytest.param(
            lambda request: request.upload.save_as("/tmp/brubeck-test-never-written"),
            id="upload.save_as",
        ),
    ],
)
async def test_the_body_is_not_stored_in_live_mode(
    caplog: pytest.LogCaptureFixture, use: Callable[[Request], Any]
) -> None:
    errors: list[BaseException] = []

    class Stored(WebMessageHandler):
        stream_request_body = True

        async def post(self) -> str:
            await asyncio.sleep(0)
            try:
                use(self.request)
            except Exception as exc:
                errors.append(exc)
                raise
            return "read it"

    app = build((r"^/up$", Stored))
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        assert (await ended(client, 31)).status_code == 500
    [error] = errors
    assert type(error) is RuntimeError and "body_stream" in str(error)
    assert "uncaught exception" in caplog.text


async def test_a_live_form_is_not_parsed_and_arguments_come_from_the_query() -> None:
    class Form(WebMessageHandler):
        stream_request_body = True

        async def post(self) -> dict[str, Any]:
            seen = {"form": self.request.form, "q": self.get_argument("q"), "a": ""}
            seen["a"] = self.get_argument("a", "")
            seen["body"] = (await self.request.body_stream.read_all(100)).decode()
            return seen

    form = {b"content-type": b"application/x-www-form-urlencoded", b"QUERY": b"q=x"}
    async with TestClient(build((r"^/up$", Form))) as client:
        await client.send_raw(first(client, 31, b"a=1&b=", length=8, extra=form))
        assert await credits(client, 31) == 2
        assert await credits(client, 31) == 6  # "a=1&b=" read
        await client.send_raw(piece(client, 31, 6, b"22", done=True))
        response = await answer(client, 31)
    assert response.json() == {"form": {}, "q": "x", "a": "", "body": "a=1&b=22"}


# A body that came whole reads the same way


@pytest.mark.parametrize("path", ["/up", "/plain"])
async def test_an_inline_body_reads_in_pieces_of_piece_size(path: str) -> None:
    body = b"x" * PIECE_SIZE + b"tail"
    async with TestClient(make_app()) as client:
        response = await client.post(path, data=body)
        empty = await client.post(path)
    assert response.json() == {
        "pieces": ["x" * PIECE_SIZE, "tail"],
        "length": len(body),
        "received": len(body),
        "finished": True,
    }
    assert empty.json() == {"pieces": [], "length": 0, "received": 0, "finished": True}


async def test_the_file_mode_and_the_live_mode_give_the_same_bytes(tmp_path: Path) -> None:
    async with TestClient(make_app(upload_dir=str(tmp_path))) as client:
        # The file mode grants what it wrote, the live mode what the handler read.
        for conn_id, path, granted in ((31, b"/plain", [8, 5]), (32, b"/up", [5, 3, 5])):
            await client.send_raw(first(client, conn_id, b"abc", length=10, path=path))
            assert await credits(client, conn_id) == granted[0]
            if len(granted) == 3:
                assert await credits(client, conn_id) == granted[1]  # "abc" read
            await client.send_raw(piece(client, conn_id, 3, b"defgh"))
            assert await credits(client, conn_id) == granted[-1]
            await client.send_raw(piece(client, conn_id, 8, b"ij", done=True))
        spooled, live = await answer(client, 31), await answer(client, 32)
        assert await nothing_more(client, 31) and await nothing_more(client, 32)
    assert spooled.json()["pieces"] == ["abcdefghij"]  # read from the file
    assert live.json()["pieces"] == ["abc", "defgh", "ij"]
    for response in (spooled, live):
        assert response.json() | {"pieces": None} == {
            "pieces": None,
            "length": 10,
            "received": 10,
            "finished": True,
        }
    assert list(tmp_path.iterdir()) == []  # the file mode's file is gone; the live one had none
