"""Response delivery under adversarial cases: long polls, streams, pipelining, credits.

Each test drives the app the way Mongrel2 would (``TestClient``, or a fake Mongrel2 over TCP
when it must go away) and checks what reaches each connection: the right bytes, in order,
once, framed as HTTP says, never beyond a credit window, and nothing after the client left.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
import tnetstring

from brubeck import Brubeck, Response, WebMessageHandler
from brubeck.streaming import BURST, format_event
from brubeck.testing import TestClient, TestResponse
from brubeck.waiting import WaitingRoom
from tests import fixtures
from tests.test_app_edges import dechunk, quiet, read_stream, until, with_m2_headers

# Helpers


def notice(client: TestClient, conn_id: int, kind: str, **headers: bytes) -> bytes:
    """A Mongrel2 notice (disconnect or credits) for ``conn_id``, tnetstring protocol."""
    head = {b"METHOD": b"JSON", **{k.encode(): v for k, v in headers.items()}}
    payload = json.dumps({"type": kind}).encode()
    return b"%s %d @* %s%s" % (
        client.sender,
        conn_id,
        tnetstring.dumps(head),
        tnetstring.dumps(payload),
    )


everything = fixtures.drain  # every message to a connection until none comes for ``wait``


def sse_parse(stream: bytes) -> list[dict[str, str]]:
    """Events as a browser's EventSource reads them (WHATWG HTML, "event stream interpretation")."""
    text = stream.decode("utf-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    events: list[dict[str, str]] = []
    data: list[str] = []
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if data or fields:
                if data:
                    fields["data"] = "\n".join(data)
                events.append(fields)
            data, fields = [], {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("event", "id", "retry"):
            fields[name] = value
    return events


class Gate:
    """Handlers that wait for the test: ``/slow`` awaits ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.closed: list[str] = []
        self.cancelled: list[str] = []


def delivery_app(**settings: Any) -> tuple[Brubeck, WaitingRoom, Gate]:
    app = Brubeck(**settings)
    room = WaitingRoom(app)
    gate = Gate()

    class Wait(WebMessageHandler):
        async def get(self) -> Response:
            return await room.wait(self.request, timeout=float(self.get_argument("t", "3")))

    class Slow(WebMessageHandler):
        async def get(self) -> str:
            await gate.release.wait()
            return "slow answer"

    class Stream(WebMessageHandler):
        """Writes ``n`` pieces of ``size`` bytes, then holds the connection if ``hold``."""

        async def get(self) -> None:
            n, size = int(self.get_argument("n", "1")), int(self.get_argument("size", "10"))
            try:
                for i in range(n):
                    self.write(bytes([97 + i % 26]) * size)
                    await self.flush()
                if self.get_argument("hold", ""):
                    await asyncio.Event().wait()
            except asyncio.CancelledError:
                gate.cancelled.append(self.request.path)
                raise

        def on_connection_close(self) -> None:
            gate.closed.append(self.request.path)

    app.add_route_rule(r"^/wait$", Wait)
    app.add_route_rule(r"^/slow$", Slow)
    app.add_route_rule(r"^/stream$", Stream)
    return app, room, gate


def get(client: TestClient, path: str, conn_id: int, **kw: Any) -> bytes:
    path, _, query = path.partition("?")
    return client.build_message("GET", path, conn_id=conn_id, query=query, **kw)


# WaitingRoom and app.deliver


async def test_two_pipelined_waiters_on_one_connection_are_both_released() -> None:
    """Was a bug. Two pipelined long polls on one connection: the room keys waiters by
    connection id, so the second replaces the first, which is never released (it sits until its
    timeout, and its 204 then follows the release's answer of the second)."""
    app, room, _ = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/wait?t=1", 1))
        await client.send_raw(get(client, "/wait?t=1", 1))
        await until(lambda: len(app._inflight) == 2, "two parked requests")
        await asyncio.sleep(0.02)
        assert len(room) == 2, "a pipelined waiter was forgotten by the room"
        assert room.release(Response("news")) == 2
        answers = await everything(client, 1, wait=0.5)
        assert [TestResponse(a, closed=False).text for a in answers] == ["news", "news"]


async def test_a_release_waits_for_the_answer_to_an_earlier_pipelined_request() -> None:
    """Was a bug. ``/slow`` then ``/wait`` pipelined on one connection: a release answers the
    long poll at once, through ``deliver``, past the ordering queue, so the client reads the
    second answer as the first request's."""
    app, room, gate = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/slow", 1))
        await client.send_raw(get(client, "/wait", 1))
        await until(lambda: len(room) == 1, "the parked request")
        room.release(Response("news"))
        await asyncio.sleep(0.05)
        gate.release.set()
        answers = await everything(client, 1, wait=0.3)
        texts = [TestResponse(a, closed=False).text for a in answers]
        assert texts == ["slow answer", "news"]


async def test_a_release_counts_against_the_connections_credit_window() -> None:
    """Was a bug. Under download flow control every reply must count against the window
    (docs/streaming.md), but ``deliver`` publishes past it: after a long poll's 800-byte answer,
    a 700-byte stream on the same keep-alive connection goes out whole, well past the 1000
    bytes Mongrel2 allowed before any credit came back."""
    app, room, _ = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(with_m2_headers(get(client, "/wait", 1), DOWNLOAD_CREDITS=b"1000"))
        await until(lambda: len(room) == 1, "the parked request")
        room.release(Response(b"x" * 800))
        first = await everything(client, 1)
        await client.send_raw(get(client, "/stream?n=1&size=700", 1))
        second = await everything(client, 1, wait=0.3)
        sent = sum(map(len, first + second))
        assert sent <= 1000, f"{sent} bytes sent with 1000 credits and none returned"


async def test_one_release_to_many_connections_frames_each_as_http_says() -> None:
    """300 waiters (more than 128 per message) of mixed framing: HTTP/1.0, HTTP/1.1 keep-alive,
    Connection: close and HEAD; each gets exactly one answer, the right one, and only those
    that must be closed are."""
    app, room, _ = delivery_app()
    kinds = {
        0: ("GET", "HTTP/1.1", {}),
        1: ("GET", "HTTP/1.0", {}),
        2: ("GET", "HTTP/1.1", {"connection": "close"}),
        3: ("HEAD", "HTTP/1.1", {}),
        4: ("HEAD", "HTTP/1.0", {"connection": "keep-alive"}),
    }
    ids = range(1, 301)
    async with TestClient(app) as client:
        for cid in ids:
            method, version, headers = kinds[cid % 5]
            raw = client.build_message(
                method, "/wait", conn_id=cid, headers=headers, version=version
            )
            await client.send_raw(raw)
        await until(lambda: len(room) == 300, "300 waiters")
        assert room.release(Response("news for all")) == 300
        for cid in ids:
            method, version, headers = kinds[cid % 5]
            answer = TestResponse(await client.receive(cid), closed=False)
            assert answer.status_code == 200
            assert answer.headers["content-length"] == "12"
            assert answer.text == ("" if method == "HEAD" else "news for all")
            must_close = cid % 5 in (1, 2)
            assert answer.headers.get("connection") == (
                "close" if must_close else "keep-alive" if cid % 5 == 4 else None
            )
        client._drain_ready()
        for cid in ids:
            rest = client._inbox.get(b"%d" % cid, [])
            assert rest == ([b""] if cid % 5 in (1, 2) else []), (cid, rest)
        assert len(room) == 0 and room.release(Response("again")) == 0


async def test_a_waiter_that_leaves_is_forgotten_and_not_answered() -> None:
    """A client that disconnects while parked: its task is cancelled, the room forgets it, and
    a later release neither counts it nor sends to it."""
    app, room, _ = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/wait", 1))
        await client.send_raw(get(client, "/wait", 2))
        await until(lambda: len(room) == 2, "two waiters")
        await client.send_raw(notice(client, 1, "disconnect"))
        await until(lambda: len(room) == 1, "the leaver forgotten")
        assert room.release(Response("news")) == 1
        assert TestResponse(await client.receive(2), closed=False).text == "news"
        assert await quiet(client, 1, 0.2)


async def test_a_waiter_released_as_it_times_out_gets_one_answer() -> None:
    """Release and timeout race: whichever wins, the client gets exactly one answer, and a
    second release finds nobody."""
    app, room, _ = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/wait?t=0.05", 1))
        await until(lambda: len(room) == 1, "the waiter")
        await asyncio.sleep(0.05)
        room.release(Response("news"))
        room.release(Response("again"))
        answers = await everything(client, 1, wait=0.3)
        assert len(answers) == 1
        assert TestResponse(answers[0], closed=False).status_code in (200, 204)
        assert len(room) == 0


async def test_a_refused_upload_waits_for_the_answer_to_an_earlier_pipelined_request() -> None:
    """Was a bug. ``/slow`` then a POST whose upload Mongrel2 announces (``-upload-start``) on
    the same connection, to a path with no route: the refusal (404, then a close) is sent at
    once, before the first request's answer, which then goes to a closed connection and is
    lost."""
    app, _, gate = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/slow", 1))
        upload = client.build_message(
            "POST",
            "/nowhere",
            conn_id=1,
            headers={"content-length": "50000", "x-mongrel2-upload-start": "/tmp/upload.1"},
        )
        await client.send_raw(upload)
        await asyncio.sleep(0.05)
        gate.release.set()
        answers = await everything(client, 1, wait=0.3)
        assert answers, "nothing was answered"
        assert TestResponse(answers[0], closed=False).text == "slow answer", answers[0][:40]
        assert answers[-1] == b""


# Streams: framing, finish, errors


async def test_a_http10_stream_is_close_delimited_and_unchunked() -> None:
    """HTTP/1.0 has no chunks: the body goes raw, the head says Connection: close, and the
    connection is closed to end it."""
    app, _, _ = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/stream?n=3&size=4", 1, version="HTTP/1.0"))
        got = await everything(client, 1)
        assert got[-1] == b"" and b"" not in got[:-1]
        data = b"".join(got)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert b"connection: close" in head.lower()
        assert rest == b"aaaabbbbcccc"


async def test_a_head_stream_sends_no_body_and_no_chunks() -> None:
    """HEAD of a streamed GET: the head only, no chunk, no end-of-body marker."""
    app, _, _ = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(client.build_message("HEAD", "/stream", conn_id=1, query="n=3"))
        got = await everything(client, 1)
        data = b"".join(got)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n")
        assert data.count(b"\r\n\r\n") == 1 and b"" not in got


async def test_a_stream_that_raises_midway_is_cut_off_not_ended() -> None:
    """An exception after the head: the client must see a truncated body (a close, with no
    last chunk), never a clean end nor a 500 pasted into the body."""
    app = Brubeck()

    class Broken(WebMessageHandler):
        async def get(self) -> None:
            self.write("part one")
            await self.flush()
            raise ValueError("boom")

    app.add_route_rule(r"^/$", Broken)
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/", 1))
        head, streamed, closed = await read_stream(client, 1)
        assert head.startswith(b"HTTP/1.1 200") and streamed == b"part one" and closed
        assert await quiet(client, 1, 0.1)


async def test_writing_after_finish_is_an_error_not_a_silent_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``await self.finish()`` then ``self.write("tail")``: the tail can never be sent, so it
    must be an error that is logged, never bytes dropped without a word."""
    app = Brubeck()

    class Late(WebMessageHandler):
        async def get(self) -> None:
            self.write("body")
            await self.flush()
            await self.finish()
            self.write("tail")

    app.add_route_rule(r"^/$", Late)
    caplog.set_level(logging.ERROR)
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/", 1))
        _, streamed, _ = await read_stream(client, 1)
        assert streamed == b"body"
        await asyncio.sleep(0.05)
    assert any(r.levelno >= logging.ERROR for r in caplog.records), "b'tail' vanished silently"


async def test_a_stream_behind_a_slower_pipelined_request_leaves_after_it() -> None:
    """``/slow`` then an event stream pipelined on one connection: the events wait, and leave
    complete and in order once the first answer is out."""
    app, _, gate = delivery_app()

    class Events(WebMessageHandler):
        async def get(self) -> None:
            for n in range(3):
                await self.send_event(f"e{n}", id=str(n))

    app.add_route_rule(r"^/events$", Events)
    async with TestClient(app) as client:
        await client.send_raw(get(client, "/slow", 1))
        await client.send_raw(get(client, "/events", 1))
        await asyncio.sleep(0.05)
        assert await quiet(client, 1, 0.05)
        gate.release.set()
        first = TestResponse(await client.receive(1), closed=False)
        assert first.text == "slow answer"
        data = b"".join(await everything(client, 1))
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"text/event-stream" in head
        if b"chunked" in head.lower():  # it began streaming once the first answer was out
            _, rest, ended = dechunk(data)
            assert ended
        else:  # or, never flushed in time, it went whole
            assert int(TestResponse(data, closed=False).headers["content-length"]) == len(rest)
        assert [e["data"] for e in sse_parse(rest)] == ["e0", "e1", "e2"]


# Client disconnects mid-stream


async def test_a_disconnect_mid_stream_tells_the_handler_and_sends_nothing_more() -> None:
    """Was a bug. Without flow control, a stream over its pace holds the newest piece for a
    timer. The client leaves: the handler hears of it and is cancelled (as documented), but the
    timer still fires and sends the held piece to the connection that is gone ("Nothing is sent
    for it", docs/streaming.md)."""
    app, _, gate = delivery_app()
    async with TestClient(app) as client:
        n = BURST + 2
        await client.send_raw(get(client, f"/stream?n={n}&size=5&hold=1", 1))
        await until(lambda: len(app._inflight) == 1, "the stream")
        before = await everything(client, 1, wait=0.05)
        assert before and before[0].startswith(b"HTTP/1.1 200")
        await client.send_raw(notice(client, 1, "disconnect"))
        await until(lambda: gate.cancelled == ["/stream"], "the cancelled handler")
        assert gate.closed == ["/stream"]
        after = await everything(client, 1, wait=0.5)
        assert after == [], f"sent after the client left: {after!r}"


async def test_a_disconnect_mid_stream_drops_what_the_credit_window_still_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was a bug. Under flow control a stream's bytes beyond the window wait in its
    ``CreditWindow``. The client leaves: the handler is cancelled and the window forgotten,
    but the window's drainer task lives on and, after ``CREDIT_STALL``, sends the rest to the
    connection that is gone."""
    monkeypatch.setattr("brubeck.streaming.CREDIT_STALL", 0.1)
    app, _, gate = delivery_app()
    async with TestClient(app) as client:
        raw = get(client, "/stream?n=1&size=5000&hold=1", 1)
        await client.send_raw(with_m2_headers(raw, DOWNLOAD_CREDITS=b"1000"))
        await until(lambda: len(app._inflight) == 1, "the stream")
        before = await everything(client, 1, wait=0.03)
        assert sum(map(len, before)) <= 1000
        await client.send_raw(notice(client, 1, "disconnect"))
        await until(lambda: gate.cancelled == ["/stream"], "the cancelled handler")
        after = await everything(client, 1, wait=0.5)
        leaked = sum(map(len, after))
        assert leaked == 0, f"{leaked} bytes sent after the client left"


# Credit windows


async def test_a_stream_larger_than_the_window_waits_for_credits_then_completes() -> None:
    """A 5000-byte stream through a 1000-byte window: nothing past the window until credits
    come, then all of it, in order, framed, exactly once."""
    app, _, _ = delivery_app()
    async with TestClient(app) as client:
        raw = get(client, "/stream?n=5&size=1000", 1)
        await client.send_raw(with_m2_headers(raw, DOWNLOAD_CREDITS=b"1000"))
        got = await everything(client, 1, wait=0.1)
        assert 0 < sum(map(len, got)) <= 1000
        sent, credited, written = sum(map(len, got)), 0, got
        for _ in range(20):  # Mongrel2 wrote the last batch: it credits that many bytes
            amount = sum(map(len, written))
            credited += amount
            await client.send_raw(
                notice(client, 1, "credits", DOWNLOAD_CREDITS=str(amount).encode())
            )
            written = await everything(client, 1, wait=0.1)
            sent += sum(map(len, written))
            assert sent - credited <= 1000, "more in flight than the window"
            got += written
            if not written:
                break
        head, streamed, ended = dechunk(b"".join(got))
        assert head.startswith(b"HTTP/1.1 200") and ended
        assert streamed == b"".join(bytes([97 + i]) * 1000 for i in range(5))


async def test_credits_for_an_unknown_connection_change_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A credits notice for a connection without a window (or a junk amount) is ignored, and
    the connections that have one keep their accounts."""
    monkeypatch.setattr("brubeck.streaming.CREDIT_STALL", 0.3)  # the stream ends by itself
    app, _, _ = delivery_app()
    async with TestClient(app) as client:
        await client.send_raw(notice(client, 77, "credits", DOWNLOAD_CREDITS=b"5000"))
        await client.send_raw(notice(client, 78, "credits", DOWNLOAD_CREDITS=b"-1"))
        await client.send_raw(notice(client, 79, "credits"))
        raw = get(client, "/stream?n=2&size=800", 1)
        await client.send_raw(with_m2_headers(raw, DOWNLOAD_CREDITS=b"1000"))
        got = await everything(client, 1, wait=0.1)
        assert 0 < sum(map(len, got)) <= 1000
        assert set(app._windows) == {b"1"}
        for cid in (77, 78, 79):
            assert await quiet(client, cid, 0.02)


# Mongrel2 going away with bytes still in a window


async def test_window_bytes_of_a_lost_mongrel2_never_reach_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was a bug. A stream's bytes wait in its credit window when Mongrel2 goes away (the
    connection's monitor ends the epoch; here the app is told directly, as it would be). The
    next Mongrel2 numbers connections from 1 again, but the window's drainer task sends its
    bytes, addressed by the old id, without checking the epoch: after ``CREDIT_STALL`` they
    reach whichever new client now has that id (``send_to``'s lambda, app.py)."""
    monkeypatch.setattr("brubeck.streaming.CREDIT_STALL", 0.2)
    app, _, gate = delivery_app()
    async with TestClient(app) as client:
        raw = get(client, "/stream?n=1&size=5000&hold=1", 1)
        await client.send_raw(with_m2_headers(raw, DOWNLOAD_CREDITS=b"1000"))
        await until(lambda: len(app._inflight) == 1, "the stream")
        before = await everything(client, 1, wait=0.03)
        assert before and sum(map(len, before)) <= 1000
        assert app.msg_conn is not None
        app.msg_conn.epoch += 1  # what the socket monitor does when Mongrel2 goes away
        app._mongrel2_lost(0, 0)
        assert app._windows == {}
        await until(lambda: gate.cancelled == ["/stream"], "the cancelled handler")
        after = await everything(client, 1, wait=0.6)
        leaked = sum(map(len, after))
        assert leaked == 0, f"{leaked} bytes of the old stream went to the new Mongrel2's id 1"


# Server-Sent Events format


@pytest.mark.parametrize(
    "data",
    [
        "plain",
        "",
        "two\nlines",
        "crlf\r\nline",
        "lone\rcr",
        "\r\r",
        "ends with newline\n",
        "\n",
        " leading space",
        ": looks like a comment",
        "data: nested",
        "tab\there \u2028 and a line separator",
    ],
)
def test_an_event_reads_back_as_the_same_data(data: str) -> None:
    """Whatever the data (line breaks of every kind, leading spaces, colons), a browser reads
    back exactly one event with that data (CR and CRLF read as LF, as SSE defines them)."""
    raw = format_event(data, event="update", id="42", retry=1500)
    (event,) = sse_parse(raw)
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert event == {"event": "update", "id": "42", "retry": "1500", "data": expected}


@pytest.mark.parametrize(
    ("field", "value"),
    [("event", "a\rb"), ("event", "a\r\nb"), ("id", "a\rb"), ("id", "a\0b")],
)
def test_an_event_refuses_fields_that_would_break_the_stream(field: str, value: str) -> None:
    """A CR in an event name or id would start a new field; a NUL makes browsers drop the id."""
    with pytest.raises(ValueError):
        format_event("x", **{field: value})


def test_events_back_to_back_stay_separate() -> None:
    """Several events written into one chunk are still several events."""
    raw = b"".join(format_event(f"n{i}\n", id=str(i)) for i in range(3))
    assert [(e["id"], e["data"]) for e in sse_parse(raw)] == [
        ("0", "n0\n"),
        ("1", "n1\n"),
        ("2", "n2\n"),
    ]
