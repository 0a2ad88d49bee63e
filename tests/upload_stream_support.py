"""Mongrel2's side of a streamed upload (``upload.stream=1``), for the tests that drive one.

The messages as a real Mongrel2 1.12 sends them (MONGREL2.md §A7): a first message with every
header and ``UPLOAD_STREAM: "0"``, then pieces whose only headers are ``UPLOAD_STREAM`` (the
offset) and, on the last, ``UPLOAD_STREAM_DONE``.
"""

from __future__ import annotations

from typing import Any

import pytest
import tnetstring

from brubeck import streamed_uploads
from brubeck.testing import TestClient, TestResponse

PATH = b"/up"
CANCEL_AFTER = streamed_uploads._CANCEL_AFTER  # the real delay, before quick_cancel


@pytest.fixture(autouse=True)
def quick_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancel that ends an upload (or a body left unread) follows its answer after
    0.02 s instead of 0.5 s. Autouse in every module that imports it."""
    monkeypatch.setattr(streamed_uploads, "_CANCEL_AFTER", 0.02)


def wire(
    client: TestClient, conn_id: int, headers: dict[bytes, Any], body: bytes, path: bytes = PATH
) -> bytes:
    return b"%s %d %s %s%s" % (
        client.sender,
        conn_id,
        path,
        tnetstring.dumps(headers),
        tnetstring.dumps(body),
    )


def first(
    client: TestClient,
    conn_id: int,
    body: bytes = b"",
    *,
    length: int | None = None,
    method: bytes = b"POST",
    path: bytes = PATH,
    extra: dict[bytes, bytes] | None = None,
) -> bytes:
    """The first message of a streamed body: ``length`` bytes, or chunked when None;
    ``extra`` headers are added last (they may replace the others)."""
    headers: dict[bytes, Any] = {
        b"host": b"testserver",
        b"content-type": b"application/octet-stream",
        b"PATH": path,
        b"METHOD": method,
        b"VERSION": b"HTTP/1.1",
        b"URI": path + b"?q=x",
        b"QUERY": b"q=x",
        b"PATTERN": b"/",
        b"UPLOAD_STREAM": b"0",
    }
    if length is None:
        headers[b"transfer-encoding"] = b"chunked"
    else:
        headers[b"content-length"] = b"%d" % length
    headers.update(extra or {})
    return wire(client, conn_id, headers, body, path)


def piece(
    client: TestClient, conn_id: int, offset: int | bytes, body: bytes, done: bool = False
) -> bytes:
    """A later piece: only ``UPLOAD_STREAM`` (and ``UPLOAD_STREAM_DONE`` on the last)."""
    headers = {b"UPLOAD_STREAM": offset if isinstance(offset, bytes) else b"%d" % offset}
    if done:
        headers[b"UPLOAD_STREAM_DONE"] = b"1"
    return wire(client, conn_id, headers, body)


def disconnect(client: TestClient, conn_id: int) -> bytes:
    headers = tnetstring.dumps({b"METHOD": b"JSON"})
    body = tnetstring.dumps(b'{"type":"disconnect"}')
    return b"%s %d @* %s%s" % (client.sender, conn_id, headers, body)


async def ctl(client: TestClient, conn_id: int) -> dict[bytes, Any]:
    """The next message to ``conn_id``, which must be a control message."""
    kind, payload = tnetstring.loads(await client.receive(conn_id))
    assert kind == b"ctl"
    return payload


async def credits(client: TestClient, conn_id: int) -> int:
    payload = await ctl(client, conn_id)
    assert list(payload) == [b"credits"]
    return payload[b"credits"]


async def answer(client: TestClient, conn_id: int) -> TestResponse:
    return TestResponse(await client.receive(conn_id), closed=False)
