"""streamed_uploads.py: Mongrel2's ``upload.stream=1`` bodies, driven by a fake Mongrel2.

Each test plays Mongrel2's side of the wire by hand: a first message with every header and
``UPLOAD_STREAM: "0"``, then pieces whose only headers are ``UPLOAD_STREAM`` (the offset) and,
on the last one, ``UPLOAD_STREAM_DONE``. It checks what the app sends back (credit grants,
answers, cancels), what the handler saw, the files left in ``upload_dir`` and the log lines:
the whole flow, refusals on the first message, pieces early, late or past ``max_upload_size``,
stray pieces, disconnects, stalls, a missing ``upload_dir``, a graceful stop, several processes
(a fake ``Ownership``), and plain inline bodies, which must not change.

An upload that ends early is answered without a close (Mongrel2 waiting for credits would
ignore it) and cancelled a moment later; the tests shorten that moment.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest

from brubeck import Brubeck, WebMessageHandler, streamed_uploads
from brubeck.request import Request
from brubeck.testing import TestClient
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

# The app


def upload_app(**settings: Any) -> tuple[Brubeck, list[dict[str, Any]]]:
    """An app with a POST route on ``/up`` that records what its handler saw, and ``/ping``.

    ``x-refuse`` makes ``accept_upload()`` return False; ``x-action: keep`` keeps the upload,
    any other ``x-action`` moves it there with ``save_as``.
    """
    seen: list[dict[str, Any]] = []

    class Digest(WebMessageHandler):
        def accept_upload(self) -> bool:
            return self.request.headers.get("x-refuse") is None

        def post(self) -> dict[str, Any]:
            request, upload = self.request, self.request.upload
            facts: dict[str, Any] = {
                "method": request.method,
                "path": request.path,
                "query": self.get_argument("q", ""),
                "type": request.headers.get("content-type"),
                "body": request.body,
                "upload": upload,
            }
            if upload is not None:
                facts.update(file=upload.path, size=upload.size, read=upload.read())
                action = request.headers.get("x-action")
                if action == "keep":
                    upload.keep()
                elif action:
                    facts["moved"] = upload.save_as(action)
            seen.append(facts)
            return {"sha256": hashlib.sha256(request.body).hexdigest()}

    app = Brubeck(handler_tuples=[(r"^/up$", Digest)], **settings)

    @app.add_route(r"^/ping$")
    def ping(application: Brubeck, request: Request) -> str:
        return "pong"

    return app, seen


def spooled(directory: Path) -> list[Path]:
    return sorted(directory.glob("brubeck-upload.*"))


# Mongrel2's side of the wire


async def ended(client: TestClient, conn_id: int) -> int:
    """The status of an answer that ends an upload: it asks for no close (Mongrel2 waiting for
    credits would ignore one), and a cancel follows it. Returns the status."""
    response = await answer(client, conn_id)
    assert "close" not in response.headers.get("connection", "")
    assert await ctl(client, conn_id) == {b"cancel": True}
    return response.status_code


async def nothing_more(client: TestClient, conn_id: int) -> bool:
    """True when nothing more came for ``conn_id``: replies leave in order, so one sent
    before the answer to a later ping would be here by now."""
    assert (await client.get("/ping")).text == "pong"
    saved, client.timeout = client.timeout, 0.05
    try:
        await client.receive(conn_id)
    except TimeoutError:
        return True
    finally:
        client.timeout = saved
    return False


async def stream(
    client: TestClient,
    conn_id: int,
    parts: list[bytes],
    *,
    chunked: bool = False,
    extra: dict[bytes, bytes] | None = None,
) -> list[int]:
    """Send ``parts`` as a first message and pieces, the last one done, without waiting for
    the answer; returns the credits granted after each message but the last."""
    length = None if chunked else sum(map(len, parts))
    await client.send_raw(first(client, conn_id, parts[0], length=length, extra=extra))
    granted = [await credits(client, conn_id)]
    offset = len(parts[0])
    for i, part in enumerate(parts[1:], 2):
        done = i == len(parts)
        await client.send_raw(piece(client, conn_id, offset, part, done))
        offset += len(part)
        if not done:
            granted.append(await credits(client, conn_id))
    return granted


async def started(client: TestClient, conn_id: int, body: bytes = b"abc", length: int = 10) -> int:
    """Start an upload of ``length`` bytes with ``body`` as its first bytes; returns the
    credits granted."""
    await client.send_raw(first(client, conn_id, body, length=length))
    return await credits(client, conn_id)


# A body in pieces


async def test_a_streamed_body_is_spooled_then_answered_like_any_request(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path), upload_stream_window=16)
    async with TestClient(app) as client:
        # The whole window: the first bytes, read without credit, are written already.
        assert await started(client, 31, b"abc", length=10) == 16
        [file] = spooled(tmp_path)
        await client.send_raw(piece(client, 31, 3, b"defgh"))
        assert await credits(client, 31) == 5  # as much as was just written
        await client.send_raw(piece(client, 31, 8, b"ij", done=True))
        response = await answer(client, 31)
        assert await nothing_more(client, 31)  # no more credits, no close, no cancel
    assert response.status_code == 200
    assert response.json() == {"sha256": hashlib.sha256(b"abcdefghij").hexdigest()}
    [facts] = seen
    assert facts["method"] == "POST" and facts["path"] == "/up" and facts["query"] == "x"
    assert facts["type"] == "application/octet-stream"
    assert facts["body"] == facts["read"] == b"abcdefghij" and facts["size"] == 10
    assert facts["file"] == file
    assert spooled(tmp_path) == []  # deleted after the response


async def test_the_defaults_are_the_temp_dir_and_a_256_kib_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app, seen = upload_app()
    async with TestClient(app) as client:
        assert await started(client, 31, b"", length=4) == 262144
        assert len(spooled(tmp_path)) == 1
        await client.send_raw(piece(client, 31, 0, b"data", done=True))
        assert (await answer(client, 31)).status_code == 200
    assert seen[0]["body"] == b"data" and seen[0]["file"].parent == tmp_path
    assert spooled(tmp_path) == []


async def test_a_chunked_body_with_an_empty_last_piece(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path), upload_stream_window=8)
    async with TestClient(app) as client:
        granted = await stream(client, 31, [b"", b"1234", b"5678", b""], chunked=True)
        assert (await answer(client, 31)).status_code == 200
    assert granted == [8, 4, 4]
    assert seen[0]["body"] == b"12345678" and seen[0]["size"] == 8
    assert spooled(tmp_path) == []


async def test_a_first_message_that_is_also_the_last_is_answered_at_once(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        raw = first(client, 31, b"whole", length=5, extra={b"UPLOAD_STREAM_DONE": b"1"})
        await client.send_raw(raw)
        assert (await answer(client, 31)).status_code == 200  # no credits before it
    assert seen[0]["body"] == b"whole" and seen[0]["upload"] is not None
    assert spooled(tmp_path) == []


async def test_a_handler_may_keep_or_move_the_file(tmp_path: Path) -> None:
    spool, kept = tmp_path / "spool", tmp_path / "kept.bin"
    spool.mkdir()
    app, seen = upload_app(upload_dir=str(spool))
    async with TestClient(app) as client:
        for conn_id, action in ((31, b"keep"), (32, str(kept).encode())):
            await stream(client, conn_id, [b"ab", b"cd"], extra={b"x-action": action})
            assert (await answer(client, conn_id)).status_code == 200
    assert seen[1]["moved"] == kept and kept.read_bytes() == b"abcd"
    assert spooled(spool) == [seen[0]["file"]]  # the kept one, still there
    assert seen[0]["file"].read_bytes() == b"abcd"


async def test_a_piece_that_comes_early_waits_for_the_ones_before_it(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        await started(client, 31, b"ab", length=8)
        await client.send_raw(piece(client, 31, 4, b"ef"))  # before "cd": held, no credits
        await client.send_raw(piece(client, 31, 2, b"cd"))
        assert await credits(client, 31) == 4  # both written now
        await client.send_raw(piece(client, 31, 6, b"gh", done=True))
        assert (await answer(client, 31)).status_code == 200
    assert seen[0]["body"] == b"abcdefgh"


# Refused on the first message


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ({"path": b"/nowhere"}, 404),
        ({"method": b"PUT"}, 405),
        ({"length": 101}, 413),  # over max_upload_size
        ({"extra": {b"x-refuse": b"1"}}, 413),  # accept_upload() says no
        ({"extra": {b"x-refuse": b"1", b"connection": b"close"}}, 413),  # a cancel, still
    ],
)
async def test_an_upload_refused_at_once_is_answered_then_cancelled(
    tmp_path: Path, case: dict[str, Any], status: int
) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path), max_upload_size=100)
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"abc", **{"length": 10, **case}))
        assert await ended(client, 31) == status  # and no credits before it
        assert spooled(tmp_path) == []
        assert await nothing_more(client, 31)
    assert seen == []


async def test_the_cancel_comes_half_a_second_after_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streamed_uploads, "_CANCEL_AFTER", CANCEL_AFTER)
    app, _ = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"", length=10, path=b"/nowhere"))
        assert (await answer(client, 31)).status_code == 404
        loop = asyncio.get_running_loop()
        answered = loop.time()
        assert await ctl(client, 31) == {b"cancel": True}
        assert 0.4 <= loop.time() - answered < 1.5


# Ended by a piece


@pytest.mark.parametrize(
    ("offset", "data"),
    [
        (b"0", b"abc"),  # a piece sent again
        (b"2", b"cd"),  # overlapping what was written
        (b"-3", b"x"),
        (b"3x", b"x"),
        (b"9999", b"x" * 17),  # early, and more than the window (16) would let Mongrel2 send
    ],
)
async def test_a_piece_that_does_not_fit_is_a_400_and_the_file_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, offset: bytes, data: bytes
) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path), upload_stream_window=16)
    async with TestClient(app) as client:
        await started(client, 31, b"abc", length=10)
        assert len(spooled(tmp_path)) == 1
        await client.send_raw(piece(client, 31, offset, data))
        assert await ended(client, 31) == 400
        assert spooled(tmp_path) == []
    assert seen == []
    assert f"starts at {offset!r}, expected 3" in caplog.text


async def test_an_early_piece_at_an_offset_already_held_is_a_400(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        await started(client, 31, b"abc", length=10)
        await client.send_raw(piece(client, 31, 6, b"ghi"))
        await client.send_raw(piece(client, 31, 6, b"ghi"))
        assert await ended(client, 31) == 400
        assert spooled(tmp_path) == []
    assert seen == []


async def test_a_first_message_not_at_offset_0_is_a_400(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"abc", length=10, extra={b"UPLOAD_STREAM": b"5"}))
        assert await ended(client, 31) == 400
        assert spooled(tmp_path) == []
    assert seen == []


async def test_a_chunked_body_past_max_upload_size_is_a_413_and_the_file_goes(
    tmp_path: Path,
) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path), max_upload_size=10)
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"12345"))
        await credits(client, 31)
        await client.send_raw(piece(client, 31, 5, b"67890"))  # 10: still allowed
        assert await credits(client, 31) == 5
        await client.send_raw(piece(client, 31, 10, b"X"))
        assert await ended(client, 31) == 413
        assert spooled(tmp_path) == []
    assert seen == []


# Pieces nobody expects


def stray_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "brubeck.app" and r.levelno == logging.WARNING and "websocket_peers" in r.msg
    ]


async def test_a_stray_piece_is_cancelled_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        await client.send_raw(piece(client, 31, 100, b"lost"))
        assert await ctl(client, 31) == {b"cancel": True}
        await client.send_raw(piece(client, 31, 104, b"more"))
        await client.send_raw(piece(client, 31, 108, b"", done=True))
        assert await nothing_more(client, 31)
    assert seen == [] and spooled(tmp_path) == []
    [warning] = stray_warnings(caplog)
    assert "connection 31" in warning and "did not start" in warning


async def test_a_disconnect_mid_upload_deletes_the_file_and_drops_later_pieces(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        await started(client, 31)
        await client.send_raw(disconnect(client, 31))
        await client.get("/ping")
        assert spooled(tmp_path) == []
        # A piece that was on its way: the client is gone, so no cancel and no warning.
        await client.send_raw(piece(client, 31, 3, b"defghij", done=True))
        assert await nothing_more(client, 31)
    assert seen == []
    assert stray_warnings(caplog) == []


async def test_a_piece_from_another_mongrel2_is_stray(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        await started(client, 31, b"abc", length=6)
        own = client.sender
        client.sender = b"another-mongrel2"
        await client.send_raw(piece(client, 31, 3, b"def", done=True))
        client.sender = own
        assert await ctl(client, 31) == {b"cancel": True}
        await client.send_raw(piece(client, 31, 3, b"def", done=True))
        assert (await answer(client, 31)).status_code == 200
    assert seen[0]["body"] == b"abcdef"


# Ended from this side


async def test_an_upload_that_stalls_is_a_408(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path), upload_stream_timeout=0.2)
    async with TestClient(app) as client:
        await started(client, 31)
        loop = asyncio.get_running_loop()
        since = loop.time()
        assert await ended(client, 31) == 408
        assert loop.time() - since >= 0.15
        assert spooled(tmp_path) == []
    assert seen == []
    assert "stalled at 3 bytes" in caplog.text


async def test_each_piece_gives_the_client_a_new_timeout(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path), upload_stream_timeout=0.15)
    async with TestClient(app) as client:
        await started(client, 31, b"a", length=4)
        for offset, data in enumerate(b"bc", 1):  # 0.2 s in all, 0.1 s apart
            await asyncio.sleep(0.1)
            await client.send_raw(piece(client, 31, offset, bytes([data])))
            assert await credits(client, 31) == 1
        await client.send_raw(piece(client, 31, 3, b"d", done=True))
        assert (await answer(client, 31)).status_code == 200
    assert seen[0]["body"] == b"abcd"


async def test_a_file_that_cannot_be_created_is_a_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    app, seen = upload_app(upload_dir=str(spool))
    async with TestClient(app) as client:
        spool.rmdir()  # gone after the start (an unmounted disk, say)
        await client.send_raw(first(client, 31, b"abc", length=10))
        assert await ended(client, 31) == 500
    assert seen == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "could not create a file for a streamed upload" in errors[0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"upload_dir": "/nonexistent/spool"}, "is not a writable directory"),
        ({"upload_stream_window": 0}, "must be positive"),
        ({"upload_stream_timeout": "soon"}, "is not a number"),
    ],
)
async def test_settings_every_streamed_upload_would_fail_on_stop_the_start(
    settings: dict[str, Any], message: str
) -> None:
    app, _ = upload_app(**settings)
    with pytest.raises(ValueError, match=message):
        async with TestClient(app):
            pass


async def test_stopping_answers_uploads_in_progress_with_a_503(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        for conn_id in (31, 32):
            await started(client, conn_id)
        assert len(spooled(tmp_path)) == 2
        app.stop()
        for conn_id in (31, 32):
            assert (await answer(client, conn_id)).status_code == 503
        assert spooled(tmp_path) == []
    assert seen == []


async def test_stopping_also_ends_the_connections_of_uploads_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streamed_uploads, "_CANCEL_AFTER", CANCEL_AFTER)
    app, _ = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app, timeout=1.0) as client:
        await started(client, 31)
        app.stop()
        assert await ended(client, 31) == 503


# Several processes


class FakeOwnership:
    """Stands for ``brubeck.ownership.Ownership``: owns nothing, records what it passes on."""

    def __init__(self, reachable: bool) -> None:
        self.reachable = reachable
        self.passed: list[tuple[bytes, bytes]] = []

    def owns(self, conn_id: bytes) -> bool:
        return False

    def pass_on(self, conn_id: bytes, raw: bytes) -> bool:
        self.passed.append((conn_id, raw))
        return self.reachable

    async def stop(self) -> None:
        pass


async def test_messages_of_a_connection_owned_elsewhere_are_passed_on(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        ownership = app.websockets.ownership = FakeOwnership(reachable=True)  # type: ignore[assignment]
        sent = [first(client, 31, b"abc", length=6), piece(client, 31, 3, b"def", done=True)]
        for raw in sent:
            await client.send_raw(raw)
        assert await nothing_more(client, 31)
        assert spooled(tmp_path) == []
    assert ownership.passed == [(b"31", raw) for raw in sent]
    assert seen == []


async def test_an_owner_that_does_not_answer_gets_a_503_or_a_cancel(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        ownership = app.websockets.ownership = FakeOwnership(reachable=False)  # type: ignore[assignment]
        await client.send_raw(first(client, 31, b"abc", length=6))
        assert await ended(client, 31) == 503
        await client.send_raw(piece(client, 32, 3, b"def", done=True))
        assert await ctl(client, 32) == {b"cancel": True}
        assert await nothing_more(client, 31) and await nothing_more(client, 32)
        assert spooled(tmp_path) == []
    assert [cid for cid, _ in ownership.passed] == [b"31", b"32"]
    assert seen == []


# Unchanged


async def test_a_small_inline_body_is_no_upload(tmp_path: Path) -> None:
    app, seen = upload_app(upload_dir=str(tmp_path))
    async with TestClient(app) as client:
        response = await client.post("/up?q=y", data=b"inline", headers={"content-type": "a/b"})
        assert await nothing_more(client, 1)
    assert response.json() == {"sha256": hashlib.sha256(b"inline").hexdigest()}
    [facts] = seen
    assert facts["upload"] is None and facts["body"] == b"inline" and facts["query"] == "y"
    assert spooled(tmp_path) == []


# Bugs


async def test_pieces_after_an_upload_ended_here_are_not_blamed_on_websocket_peers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = upload_app(upload_dir=str(tmp_path), max_upload_size=4)
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"abc"))
        await credits(client, 31)
        await client.send_raw(piece(client, 31, 3, b"de"))  # 5 bytes: a 413
        await client.send_raw(piece(client, 31, 5, b"fg"))  # sent before Mongrel2 saw it
        assert await ended(client, 31) == 413
        await client.get("/ping")
    assert stray_warnings(caplog) == []


class FormArguments(WebMessageHandler):
    """Reads an argument in ``accept_upload()``, as a check of a query token would."""

    def accept_upload(self) -> bool:
        return self.get_argument("q", "") == "x"

    def post(self) -> dict[str, Any]:
        return {"form": self.request.form, "b": self.get_argument("b", "")}


async def test_arguments_read_in_accept_upload_do_not_hide_the_rest_of_the_form(
    tmp_path: Path,
) -> None:
    app = Brubeck(handler_tuples=[(r"^/up$", FormArguments)], upload_dir=str(tmp_path))
    form = {b"content-type": b"application/x-www-form-urlencoded"}
    async with TestClient(app) as client:
        await client.send_raw(first(client, 31, b"a=1&b=", length=10, extra=form))
        await credits(client, 31)
        await client.send_raw(piece(client, 31, 6, b"2345", done=True))
        response = await answer(client, 31)
    assert response.json() == {"form": {"a": ["1"], "b": ["2345"]}, "b": "2345"}
