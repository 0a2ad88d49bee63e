"""Edges of ``request.body_stream`` behind ``upload.stream=1`` (a second adversarial pass):
two reads at once, a first message larger than the credit window, and a read after the
response. Mongrel2's side of the wire is played by hand, as in tests/test_body_stream.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from brubeck import HTTPError, WebMessageHandler
from brubeck.bodystream import BodyStream
from brubeck.testing import TestClient
from tests.test_body_stream import Remote, answer, build, make_app, nothing_more
from tests.test_streamed_uploads import ended, spooled, started, upload_app
from tests.upload_stream_support import (
    credits,
    ctl,
    first,
    piece,
    quick_cancel,  # noqa: F401 - an autouse fixture
)


async def test_a_second_read_while_one_waits_is_an_error_not_a_hang() -> None:
    """Was a bug.

    A second ``read()`` while one waited took the only waiter slot: the piece woke the
    second, and the first waited for good, even after the body ended. The second read must
    fail at once, and the first get the piece.
    """
    stream = BodyStream(6)
    waiting = asyncio.create_task(stream.read())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await asyncio.wait_for(stream.read(), 1)
    stream.feed(b"abc")
    assert await asyncio.wait_for(waiting, 1) == b"abc"
    stream.end()
    assert await asyncio.wait_for(stream.read(), 1) == b""


async def test_two_async_for_loops_over_one_stream_do_not_hang() -> None:
    """Was a bug. Two tasks reading one stream with ``async for``: the one that comes second
    fails at once with a RuntimeError, the other reads the whole body; neither hangs."""
    stream = BodyStream(None)

    async def drain() -> list[bytes]:
        return [chunk async for chunk in stream]

    tasks = [asyncio.create_task(drain()) for _ in range(2)]
    await asyncio.sleep(0)
    stream.feed(b"ab")
    stream.end()
    one, two = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
    assert one == [b"ab"]
    assert isinstance(two, RuntimeError)


async def test_a_first_message_larger_than_the_window_is_not_granted_again() -> None:
    """Was a bug.

    Mongrel2's first message carries what it read with the headers, which may be more than
    ``upload_stream_window``. Reading it granted all of it again, so more than the window
    could then be granted and unread. Granted-and-unread must stay within the window.
    """
    remote = Remote()
    async with TestClient(make_app(remote, upload_stream_window=8)) as client:
        await client.send_raw(first(client, 31, b"abcdefghijkl", length=30))
        assert await nothing_more(client, 31)  # 12 bytes here already: no credits yet
        assert await remote.read() == b"abcdefghijkl"
        assert await credits(client, 31) == 8  # the window, not the 12 bytes read
        await client.send_raw(piece(client, 31, 12, b"mnopqrst"))
        assert await remote.read() == b"mnopqrst"
        assert await credits(client, 31) == 8
        await client.send_raw(piece(client, 31, 20, b"uvwxyz0123", done=True))
        assert remote.stream is not None
        assert await remote.read() == b"uvwxyz0123"
        assert await remote.read() == b""
        remote.answer()
        assert (await answer(client, 31)).json() == {"received": 30}
        assert await nothing_more(client, 31)


async def test_a_read_after_an_early_answer_fails_at_once() -> None:
    """A handler that answered before the body ended and reads on (from a task it left
    running) gets a clear error, not a wait for pieces that will never come."""
    kept: list[BodyStream] = []

    class Early(WebMessageHandler):
        stream_request_body = True

        async def post(self) -> str:
            kept.append(self.request.body_stream)
            return "early"

    async with TestClient(build((r"^/up$", Early))) as client:
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await credits(client, 31) == 5
        assert (await answer(client, 31)).text == "early"
        assert await ctl(client, 31) == {b"cancel": True}
        assert await kept[0].read() == b"abc"  # it had come
        with pytest.raises(HTTPError) as raised:
            await asyncio.wait_for(kept[0].read(), 1)
        assert raised.value.status == 500


async def test_early_pieces_that_overlap_are_a_400_not_a_stall(tmp_path: Path) -> None:
    """Was a bug.

    Two early pieces that overlap (at 3 and 5, the first 5 bytes long) were both kept; once
    the one at 3 was written, the one at 5 (the last) lay before the next offset and was never
    taken, so the upload waited for a piece that would not come, then timed out (a 408).
    The overlap must end the upload at once with a 400, its file deleted.
    """
    app, seen = upload_app(upload_dir=str(tmp_path), upload_stream_timeout=30)
    async with TestClient(app) as client:
        await started(client, 31, b"", length=10)
        await client.send_raw(piece(client, 31, 5, b"fghij", done=True))
        await client.send_raw(piece(client, 31, 3, b"dexxx"))
        await client.send_raw(piece(client, 31, 0, b"abc"))
        assert await ended(client, 31) == 400
        assert spooled(tmp_path) == []
    assert seen == []
