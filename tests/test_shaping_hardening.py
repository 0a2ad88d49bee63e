"""Response shaping under adversarial cases: gzip (complete and streamed), ETags, conditional GET.

Adversarial cases around compression.py, streaming.py (gzip of streams) and conditional.py,
and how they meet HEAD, 204/304, byte ranges, a handler's own Content-Encoding, Vary,
Accept-Encoding parsing, thresholds, types and event streams. Every gzip body is inflated
whole and compared with what the handler wrote. Those marked "Was a bug" failed before their
fix.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import zlib
from pathlib import Path
from typing import Any

import pytest
import tnetstring

from brubeck import Brubeck, JSONMessageHandler, Response, WebMessageHandler
from brubeck.conditional import body_etag, preconditions_hold
from brubeck.testing import TestClient, TestResponse

GZIP = {"Accept-Encoding": "gzip"}
TEXT = ("Shaping review text, compressible and long enough.\n" * 60).encode()
LAST_MODIFIED = "Mon, 06 May 2024 07:08:09 GMT"
EARLIER = "Sun, 05 May 2024 07:08:09 GMT"
LATER = "Tue, 07 May 2024 07:08:09 GMT"
PIECES = [b"alpha " * 120, b"beta " * 150, b"gamma\n" * 90, b"delta " * 3]


class Text(WebMessageHandler):
    """Text over the threshold, with optional validators and headers from the query."""

    def get(self) -> bytes:
        self.set_header("Content-Type", self.get_argument("type", "text/plain; charset=utf-8"))
        for name in ("ETag", "Last-Modified", "Cache-Control", "Accept-Ranges"):
            value = self.get_argument(name.lower(), None)
            if value is not None:
                self.set_header(name, value)
        return TEXT


class Bare(WebMessageHandler):
    """A 200 with no validator at all."""

    def get(self) -> bytes:
        self.set_header("Content-Type", "text/plain")
        return b"no validators here"


class Doc(JSONMessageHandler):
    """A JSON document above the gzip threshold, updated with optimistic locking."""

    version = 1

    def get(self) -> dict[str, Any]:
        self.set_header("ETag", f'"doc-v{Doc.version}"')
        return {"version": Doc.version, "text": "word " * 400}

    def put(self) -> dict[str, Any]:
        self.request.check_preconditions(f'"doc-v{Doc.version}"')
        Doc.version += 1
        return {"version": Doc.version}


class Pieces(WebMessageHandler):
    """A text stream, one flush per piece, with a strong tag and Accept-Ranges of its own."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("ETag", '"stream-1"')
        self.set_header("Accept-Ranges", "bytes")
        for piece in PIECES:
            self.write(piece)
            await self.flush()


class EventsByHeader(WebMessageHandler):
    """An event stream whose type the handler set itself, in odd case."""

    async def get(self) -> None:
        self.set_header("Content-Type", "Text/Event-Stream; charset=UTF-8")
        for piece in PIECES:
            self.write(piece)
            await self.flush()


#: Plans for the Scripted handler: ("w", bytes) writes, ("f", None) flushes, ("s", t) sleeps.
PLANS: dict[str, list[tuple[str, Any]]] = {}


class Scripted(WebMessageHandler):
    async def get(self, key: str) -> None:
        self.set_header("Content-Type", "text/csv")
        for kind, value in PLANS[key]:
            if kind == "w":
                self.write(value)
            elif kind == "f":
                await self.flush()
            else:
                await asyncio.sleep(value)


def page_function(application: Brubeck, message: Any) -> Response:
    """A function route that answers its own 304, as function routes must (no render())."""
    tag = '"fn-1"'
    if message.is_fresh(tag):
        return Response(b"", 304, {"ETag": tag})
    return Response(TEXT.decode(), headers={"ETag": tag})


def make_app(**settings: Any) -> Brubeck:
    settings.setdefault("compress_response", True)
    app = Brubeck(
        handler_tuples=[
            (r"^/text$", Text),
            (r"^/bare$", Bare),
            (r"^/doc$", Doc),
            (r"^/pieces$", Pieces),
            (r"^/events-by-header$", EventsByHeader),
            (r"^/scripted/(\w+)$", Scripted),
        ],
        **settings,
    )
    app.add_route_rule(r"^/function$", page_function, method="GET")
    return app


def inflate_whole(data: bytes) -> bytes:
    """One complete gzip member, nothing after it: a truncated or padded body fails."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = decoder.decompress(data)
    assert decoder.eof, "the gzip stream has no end"
    assert decoder.unused_data == b"", "bytes after the gzip end"
    return out


def with_credits(raw: bytes, credits: int) -> bytes:
    """The same request as Mongrel2 sends it under download flow control."""
    sender, conn_id, path, rest = raw.split(b" ", 3)
    headers, body = tnetstring.pop(rest)
    headers[b"DOWNLOAD_CREDITS"] = str(credits).encode()
    return b" ".join([sender, conn_id, path, tnetstring.dumps(headers) + body])


def split_chunks(body: bytes) -> list[bytes]:
    """The chunks of a chunked body, which must end with its 0 chunk and nothing else."""
    chunks = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", "bytes after the end chunk"
            return chunks
        chunks.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


async def stream_get(
    client: TestClient,
    path: str,
    conn_id: int,
    headers: dict[str, Any] | None = None,
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    credits: int | None = None,
) -> tuple[dict[str, str], list[bytes], bytes]:
    """Head fields (lower-case names), each message after the head as sent, and the body."""
    raw = client.build_message(method, path, conn_id=conn_id, headers=headers, version=version)
    if credits is not None:
        raw = with_credits(raw, credits)
    await client.send_raw(raw)
    data = b""
    messages: list[bytes] = []
    while True:
        part = await client.receive(conn_id)
        if part == b"":  # the close
            break
        messages.append(part)
        data += part
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep or version == "HTTP/1.0":
            continue
        if method == "HEAD" or body.endswith(b"\r\n0\r\n\r\n"):
            break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    fields[":status"] = lines[0].split(" ")[1]
    return fields, messages[1:], body


async def fetch(path: str, headers: dict[str, Any] | None = None, **settings: Any) -> TestResponse:
    async with TestClient(make_app(**settings)) as client:
        return await client.get(path, headers=headers)


# Accept-Encoding through the app: what the client said decides the encoding


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),
        ("  GZip  ", True),
        ("x-gzip", True),
        ("deflate,gzip", True),
        ("br;q=1.0, gzip;q=0.001", True),
        ("*", True),
        ("*;q=0, gzip", True),
        ("identity;q=0.5, *;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip ; Q = 0", False),
        ("gzip;q=0.000", False),
        ("gzip;level=9;q=0", False),
        ("gzip;q=0, *", False),
        ("*;q=0.5, gzip;q=0", False),
        ("*;q=0", False),
        ("identity", False),
        ("identity, br", False),
        ("", False),
        ("gzip;q=", False),
    ],
)
async def test_accept_encoding_decides_the_encoding(accept: str, gzipped: bool) -> None:
    """q-values, case, spaces, ``*`` and ``identity`` as RFC 9110 §12.5.3 reads them; the
    body inflates back to what the handler wrote, and both forms say Vary."""
    response = await fetch("/text", {"Accept-Encoding": accept})
    assert response.status_code == 200
    assert response.get_all("vary") == ["Accept-Encoding"]
    assert int(response.headers["content-length"]) == len(response.content)
    if gzipped:
        assert response.get_all("content-encoding") == ["gzip"]
        assert inflate_whole(response.content) == TEXT
    else:
        assert "content-encoding" not in response.headers
        assert response.content == TEXT


async def test_text_types_in_odd_case_and_a_zip_suffix() -> None:
    """A text type given in odd case with parameters is still text; a binary type given
    with a ``+zip`` suffix is not mistaken for text."""
    async with TestClient(make_app()) as client:
        odd = await client.get("/text", params={"type": "TEXT/Plain ; Charset=UTF-8"}, headers=GZIP)
        zipped = await client.get("/text", params={"type": "application/epub+zip"}, headers=GZIP)
    assert odd.headers["content-encoding"] == "gzip" and inflate_whole(odd.content) == TEXT
    assert "content-encoding" not in zipped.headers and zipped.content == TEXT
    assert zipped.get_all("vary") == []


# Conditional GET meeting gzip


async def test_head_and_get_share_gzip_headers_and_computed_tag() -> None:
    """With ``etag`` on, HEAD gets the tag and the length of the gzip GET, and that tag
    revalidates either method to a bodyless 304 that keeps Vary."""
    async with TestClient(make_app(etag=True)) as client:
        get = await client.get("/text", headers=GZIP)
        head = await client.head("/text", headers=GZIP)
        tag = get.headers["etag"]
        again = await client.head("/text", headers={**GZIP, "If-None-Match": f'"x", {tag}'})
    assert inflate_whole(get.content) == TEXT
    assert tag == body_etag(get.content)
    assert head.headers["etag"] == tag and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert again.status_code == 304 and again.content == b""
    assert again.get_all("vary") == ["Accept-Encoding"]
    assert "content-length" not in again.headers and "content-encoding" not in again.headers


async def test_a_304_for_the_gzip_form_carries_the_weak_tag_and_no_encoding() -> None:
    """The client's strong tag (from an identity copy) matches the weakened one weakly; the
    304 has the tag of the form this client would get, and no representation headers."""
    async with TestClient(make_app()) as client:
        response = await client.get(
            "/text",
            params={"etag": '"t1"', "cache-control": "max-age=60"},
            headers={**GZIP, "If-None-Match": '"t1"'},
        )
    assert response.status_code == 304 and response.content == b""
    assert response.get_all("etag") == ['W/"t1"']
    assert response.get_all("cache-control") == ["max-age=60"]
    assert response.get_all("vary") == ["Accept-Encoding"]
    for name in ("content-type", "content-encoding", "content-length"):
        assert name not in response.headers


async def test_if_modified_since_alone_revalidates_the_gzip_form() -> None:
    async with TestClient(make_app()) as client:
        fresh = await client.get(
            "/text",
            params={"last-modified": LAST_MODIFIED},
            headers={**GZIP, "If-Modified-Since": LATER},
        )
        stale = await client.get(
            "/text",
            params={"last-modified": LAST_MODIFIED},
            headers={**GZIP, "If-Modified-Since": EARLIER},
        )
    assert fresh.status_code == 304 and fresh.content == b""
    assert stale.status_code == 200 and inflate_whole(stale.content) == TEXT


async def test_if_modified_since_with_two_dates_is_ignored() -> None:
    """Was a bug. RFC 9110 §13.1.3: If-Modified-Since whose value has more than one member
    (a repeated header, joined by a comma) MUST be ignored, so the full answer goes out."""
    async with TestClient(make_app()) as client:
        response = await client.get(
            "/text",
            params={"last-modified": LAST_MODIFIED},
            headers={**GZIP, "If-Modified-Since": [LAST_MODIFIED, EARLIER]},
        )
    assert response.status_code == 200
    assert inflate_whole(response.content) == TEXT


def test_if_unmodified_since_with_two_dates_is_ignored() -> None:
    """Was a bug. RFC 9110 §13.1.4: an If-Unmodified-Since that is a list of dates is not a valid
    HTTP-date and MUST be ignored: the update goes ahead instead of a 412."""
    headers = {b"if-unmodified-since": [EARLIER.encode(), LATER.encode()]}
    assert preconditions_hold(headers, None, LAST_MODIFIED) is True


async def test_if_none_match_star_needs_a_validator() -> None:
    """Was a bug. docs/http.md: a 200 becomes a 304 only when it carries a validator, and
    ``If-None-Match: *`` matches any *such* answer; this one has no ETag nor Last-Modified
    (and the ``etag`` setting is off), so it is sent whole."""
    async with TestClient(make_app(compress_response=False)) as client:
        response = await client.get("/bare", headers={"If-None-Match": "*"})
    assert response.status_code == 200
    assert response.content == b"no validators here"


async def test_a_function_routes_own_304_varies_like_its_200() -> None:
    """Was a bug. RFC 9110 §15.4.5: a 304 MUST carry the Vary its 200 would. The function
    route's 200 (text/html) says ``Vary: Accept-Encoding``; the 304 it returns for the same
    URL must too, or a cache keyed on the 304 mixes the gzip and identity forms."""
    async with TestClient(make_app()) as client:
        full = await client.get("/function", headers=GZIP)
        not_modified = await client.get(
            "/function", headers={**GZIP, "If-None-Match": full.headers["etag"]}
        )
    assert full.status_code == 200 and inflate_whole(full.content) == TEXT
    assert full.get_all("vary") == ["Accept-Encoding"]
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.get_all("vary") == ["Accept-Encoding"]


async def test_if_match_needs_the_identity_tag_not_the_weak_gzip_one() -> None:
    """If-Match compares strongly (RFC 9110 §13.1.1): the ``W/"doc-v1"`` a gzip GET returned
    is refused (412, as docs/http.md says), and the tag read with ``Accept-Encoding:
    identity`` lets the update through."""
    Doc.version = 1
    async with TestClient(make_app()) as client:
        read = await client.get("/doc", headers=GZIP)
        assert read.headers["content-encoding"] == "gzip"
        assert read.headers["etag"] == 'W/"doc-v1"'
        weak = await client.put("/doc", headers={**GZIP, "If-Match": read.headers["etag"]})
        plain = await client.get("/doc", headers={"Accept-Encoding": "identity"})
        assert plain.headers["etag"] == '"doc-v1"'
        update = await client.put("/doc", headers={**GZIP, "If-Match": plain.headers["etag"]})
    assert weak.status_code == 412
    assert update.status_code == 200


# Files: small text files are gzipped, ranges are not


async def test_a_small_text_file_range_conditions_and_gzip(tmp_path: Path) -> None:
    """A 206 is the plain bytes with the strong tag; If-Range with the weak gzip tag is not a
    strong match, so the whole (gzipped) file comes; the file's 304 carries the weak tag."""
    (tmp_path / "notes.txt").write_bytes(TEXT)

    class File(WebMessageHandler):
        async def get(self, name: str) -> Response:
            return await self.send_file(name, root=tmp_path)

    app = Brubeck(handler_tuples=[(r"^/f/(.+)$", File)], compress_response=True)
    async with TestClient(app) as client:
        whole = await client.get("/f/notes.txt", headers=GZIP)
        weak = whole.headers["etag"]
        part = await client.get("/f/notes.txt", headers={**GZIP, "Range": "bytes=5-14"})
        not_ranged = await client.get(
            "/f/notes.txt", headers={**GZIP, "Range": "bytes=5-14", "If-Range": weak}
        )
        fresh = await client.get("/f/notes.txt", headers={**GZIP, "If-None-Match": weak})
    assert weak.startswith("W/") and "accept-ranges" not in whole.headers
    assert inflate_whole(whole.content) == TEXT
    assert part.status_code == 206 and part.content == TEXT[5:15]
    assert "content-encoding" not in part.headers
    assert part.headers["etag"] == weak[2:]
    assert not_ranged.status_code == 200 and inflate_whole(not_ranged.content) == TEXT
    assert fresh.status_code == 304 and fresh.content == b""
    assert fresh.headers["etag"] == weak and fresh.get_all("vary") == ["Accept-Encoding"]


# Streams


async def test_a_gzip_stream_decodes_piece_by_piece_and_weakens_its_tag() -> None:
    """Each flush is a sync point (every chunk inflates at once to its piece); the handler's
    strong tag turns weak and Accept-Ranges goes, as for a complete gzip answer."""
    async with TestClient(make_app()) as client:
        head, _, body = await stream_get(client, "/pieces", 1, GZIP)
    assert head["content-encoding"] == "gzip" and head["vary"] == "Accept-Encoding"
    assert head["etag"] == 'W/"stream-1"' and "accept-ranges" not in head
    chunks = split_chunks(body)
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for chunk, piece in zip(chunks, PIECES, strict=False):
        assert decoder.decompress(chunk) == piece
    assert b"".join(decoder.decompress(c) for c in chunks[len(PIECES) :]) == b""
    assert decoder.eof and decoder.unused_data == b""


async def test_an_identity_stream_keeps_its_strong_tag_and_ranges() -> None:
    async with TestClient(make_app()) as client:
        head, _, body = await stream_get(client, "/pieces", 1, {"Accept-Encoding": "identity"})
    assert "content-encoding" not in head and head["vary"] == "Accept-Encoding"
    assert head["etag"] == '"stream-1"' and head["accept-ranges"] == "bytes"
    assert split_chunks(body) == PIECES


async def test_a_gzip_stream_under_flow_control_decodes_whole() -> None:
    """With a credit window the pieces skip the pacing buffer: the gzip stream must still
    be one valid member that ends exactly once."""
    async with TestClient(make_app()) as client:
        head, _, body = await stream_get(client, "/pieces", 1, GZIP, credits=1 << 24)
    assert head["content-encoding"] == "gzip"
    assert inflate_whole(b"".join(split_chunks(body))) == b"".join(PIECES)


async def test_head_of_a_gzip_stream_sends_only_the_head() -> None:
    """No chunk, no gzip header bytes and no end chunk after a HEAD's head."""
    async with TestClient(make_app()) as client:
        head, rest, body = await stream_get(client, "/pieces", 1, GZIP, method="HEAD")
        await asyncio.sleep(0.05)
        client._drain_ready()
        late = client._inbox.get(b"1", [])
    assert head[":status"] == "200" and head["content-encoding"] == "gzip"
    assert body == b"" and rest == [] and late == []


async def test_an_event_stream_typed_by_the_handler_stays_plain() -> None:
    """The event-stream check ignores case and parameters: no gzip, no Vary."""
    async with TestClient(make_app()) as client:
        head, _, body = await stream_get(client, "/events-by-header", 1, GZIP)
    assert "content-encoding" not in head and "vary" not in head
    assert split_chunks(body) == PIECES


@pytest.mark.parametrize("seed", range(12))
async def test_random_write_and_flush_patterns_keep_gzip_streams_whole(seed: int) -> None:
    """Bursts past the pace (coalesced pieces), empty writes, sleeps, HTTP/1.0 and flow
    control in a seeded mix: the body always inflates to exactly what was written, with no
    empty chunk (that would end the body early)."""
    rnd = random.Random(seed)
    plan: list[tuple[str, Any]] = []
    expected = b""
    for _ in range(rnd.randint(1, 30)):
        kind = rnd.choice("wwwffs")
        if kind == "w":
            data = bytes(rnd.choice(b"ab,\n") for _ in range(rnd.choice([0, 1, 40, 3000])))
            plan.append(("w", data))
            expected += data
        elif kind == "f":
            plan.append(("f", None))
        else:
            plan.append(("s", rnd.choice([0, 0.002])))
    plan.insert(0, ("f", None))  # a stream, whatever follows
    key = f"s{seed}"
    PLANS[key] = plan
    version = rnd.choice(["HTTP/1.1", "HTTP/1.0"])
    credits = rnd.choice([None, 1 << 24])
    async with TestClient(make_app()) as client:
        head, _, body = await stream_get(
            client, f"/scripted/{key}", 1, GZIP, version=version, credits=credits
        )
    assert head["content-encoding"] == "gzip"
    if version == "HTTP/1.1":
        chunks = split_chunks(body)
        assert all(chunks)
        body = b"".join(chunks)
    assert gzip.decompress(body) == expected
    assert inflate_whole(body) == expected
