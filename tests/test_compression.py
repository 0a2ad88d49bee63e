"""compression.py: gzip of complete responses (the ``compress_response`` setting).

Mongrel2 forwards a handler's bytes untouched, so what the client and every cache on the way
see is exactly what these tests read: the encoding, the ``Vary`` that keeps the two forms
apart, validators that stay honest, and bodies that inflate back to the original.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

import pytest

from brubeck import Brubeck, JSONMessageHandler, Response, WebMessageHandler
from brubeck.compression import accepts_gzip, compressor, is_compressible
from brubeck.conditional import body_etag
from brubeck.testing import TestClient, TestResponse

GZIP = {"Accept-Encoding": "gzip"}
TEXT = ("All work and no play makes Jack a dull boy.\n" * 120).encode()
PAGE = "<html><body>" + "<p>a paragraph of the page</p>" * 100 + "</body></html>"
DATA = {"items": [{"id": n, "name": f"item number {n}"} for n in range(100)]}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(4000)
SHARED = {
    "bare": Response(TEXT, headers={"ETag": '"shared"'}, content_type="text/plain"),
    # Already varies: the one case where compression starts from the handler's own list.
    "varies": Response(
        TEXT, headers={"ETag": '"shared"', "Vary": "Accept-Encoding"}, content_type="text/plain"
    ),
}


class Text(WebMessageHandler):
    def get(self) -> bytes:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        return TEXT


class Page(WebMessageHandler):
    def get(self) -> str:
        return PAGE


class Items(JSONMessageHandler):
    def get(self) -> dict[str, Any]:
        return DATA


class Sized(WebMessageHandler):
    """A text body of exactly the size in the path, for the threshold's edge."""

    def get(self, size: str) -> bytes:
        self.set_header("Content-Type", "text/plain")
        return b"a" * int(size)


class Picture(WebMessageHandler):
    def get(self) -> bytes:
        self.set_header("Content-Type", "image/png")
        return PNG


class Encoded(WebMessageHandler):
    """Bytes the handler encoded itself: a second encoding would corrupt them."""

    def get(self) -> bytes:
        self.set_header("Content-Type", "text/plain")
        self.set_header("Content-Encoding", "br")
        return TEXT


class Varies(WebMessageHandler):
    def get(self) -> bytes:
        self.set_header("Content-Type", "text/plain")
        self.set_header("Vary", self.get_argument("vary"))
        return TEXT


class TwoVaryLines(WebMessageHandler):
    def get(self) -> bytes:
        self.set_header("Content-Type", "text/plain")
        self.add_header("Vary", "Cookie")
        self.add_header("Vary", "Origin")
        return TEXT


class Tagged(WebMessageHandler):
    def get(self) -> bytes:
        self.set_header("Content-Type", "text/plain")
        self.set_header("ETag", self.get_argument("tag", '"abc"'))
        return TEXT


class NoContent(WebMessageHandler):
    def get(self) -> Response:
        return self.render(204)


class NotModified(WebMessageHandler):
    """Answers 304 itself, as a handler using ``request.is_fresh`` does."""

    def get(self) -> Response:
        self.set_header("ETag", '"abc"')
        return self.render(304)


class Streams(WebMessageHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(TEXT)
        await self.flush()


class Pieces(WebMessageHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        for piece in PIECES:
            self.write(piece)
            await self.flush()


class PictureStream(Pieces):
    async def get(self) -> None:
        self.set_header("Content-Type", "image/png")
        for piece in PIECES:
            self.write(piece)
            await self.flush()


class EncodedStream(Pieces):
    async def get(self) -> None:
        self.set_header("Content-Encoding", "br")
        await super().get()


class Events(WebMessageHandler):
    async def get(self) -> None:
        await self.send_event("one")
        await self.flush()
        await self.send_event("two")


class Shared(WebMessageHandler):
    def get(self, kind: str) -> Response:
        return SHARED[kind]


def page_function(application: Brubeck, message: Any) -> str:
    """A function route: its str goes out as text/html, like a handler's."""
    return PAGE


def make_app(**settings: Any) -> Brubeck:
    settings.setdefault("compress_response", True)
    app = Brubeck(
        handler_tuples=[
            (r"^/text$", Text),
            (r"^/page$", Page),
            (r"^/items$", Items),
            (r"^/sized/(\d+)$", Sized),
            (r"^/picture$", Picture),
            (r"^/encoded$", Encoded),
            (r"^/varies$", Varies),
            (r"^/two-vary$", TwoVaryLines),
            (r"^/tagged$", Tagged),
            (r"^/no-content$", NoContent),
            (r"^/not-modified$", NotModified),
            (r"^/stream$", Streams),
            (r"^/pieces$", Pieces),
            (r"^/picture-stream$", PictureStream),
            (r"^/encoded-stream$", EncodedStream),
            (r"^/events$", Events),
            (r"^/shared/(\w+)$", Shared),
        ],
        **settings,
    )
    app.add_route_rule(r"^/function$", page_function, method="GET")
    return app


async def fetch(path: str, headers: dict[str, Any] | None = None, **settings: Any) -> TestResponse:
    """One GET to a fresh app."""
    async with TestClient(make_app(**settings)) as client:
        return await client.get(path, headers=headers)


def assert_gzipped(response: TestResponse, original: bytes) -> None:
    assert response.status_code == 200
    assert response.get_all("content-encoding") == ["gzip"]
    assert response.get_all("vary") == ["Accept-Encoding"]
    assert int(response.headers["content-length"]) == len(response.content)
    assert gzip.decompress(response.content) == original


def assert_identity(response: TestResponse, original: bytes) -> None:
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.content == original


# accepts_gzip: the client's Accept-Encoding, q-values honoured


def test_accepts_gzip_when_the_client_allows_it() -> None:
    allowed = ["gzip", "GZIP", "x-gzip", "deflate, gzip;q=0.5", "*", "br, *;q=0.1"]
    assert [value for value in allowed if not accepts_gzip(value)] == []


def test_accepts_gzip_honours_refusals_and_bad_q_values() -> None:
    """q=0 is a refusal; an unreadable or out-of-range q is not consent either."""
    refused = ["gzip;q=0", "gzip; q=0.0", "*;q=0", "identity", "", "gzip;q=abc", "gzip;q=2"]
    assert [value for value in refused if accepts_gzip(value)] == []


@pytest.mark.parametrize("value", ["gzip;q=0, *", "*, gzip;q=0"])
def test_an_explicit_gzip_entry_outranks_the_wildcard(value: str) -> None:
    """``*`` only speaks for codings not named (RFC 9110 §12.5.3), wherever it stands."""
    assert accepts_gzip(value) is False


# is_compressible: text-like types only


def test_text_like_types_are_compressible() -> None:
    text_like = [
        "text/html; charset=utf-8",
        "text/plain",
        "application/json",
        "application/problem+json",
        "application/atom+xml",
        "image/svg+xml",
        "application/javascript",
    ]
    assert [kind for kind in text_like if not is_compressible(kind)] == []


def test_already_compressed_types_are_not() -> None:
    """gzip would only make these bigger and cost CPU."""
    binary = ["image/png", "application/octet-stream", "application/zip", "video/mp4"]
    assert [kind for kind in binary if is_compressible(kind)] == []


def test_media_types_ignore_case() -> None:
    assert is_compressible("Text/HTML; Charset=UTF-8")
    assert is_compressible("APPLICATION/JSON")
    assert not is_compressible("IMAGE/PNG")


# compressor: the settings, checked when the app starts


def test_compression_off_costs_nothing() -> None:
    """Off means no hook at all, so requests pay nothing for the feature."""
    for settings in ({}, {"compress_response": False}, {"compress_response": 0}):
        assert compressor(settings) is None, settings


def test_the_edges_of_the_valid_settings_are_accepted() -> None:
    for extra in ({"compress_level": 1}, {"compress_level": 9}, {"compress_min_size": 0}):
        assert callable(compressor({"compress_response": True, **extra}))


@pytest.mark.parametrize(
    "bad",
    [
        {"compress_level": 0},
        {"compress_level": 10},
        {"compress_level": "6"},
        {"compress_level": 6.0},
        {"compress_level": True},
        {"compress_min_size": -1},
        {"compress_min_size": "1k"},
        {"compress_min_size": 1.5},
    ],
)
async def test_a_bad_setting_stops_the_app_at_startup(bad: dict[str, Any]) -> None:
    """A typo must fail loudly when serving starts, not silently compress wrong later."""
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        compressor({"compress_response": True, **bad})
    app = make_app(**bad)
    with pytest.raises(ValueError, match=name):
        async with TestClient(app):
            pass  # pragma: no cover - the entry raises


# Through the app


@pytest.mark.parametrize("path", ["/text", "/page", "/items"])
async def test_a_large_text_body_is_gzipped(path: str) -> None:
    async with TestClient(make_app()) as client:
        plain = await client.get(path)
        gzipped = await client.get(path, headers=GZIP)
    original = {"/text": TEXT, "/page": PAGE.encode(), "/items": plain.content}[path]
    assert_identity(plain, original)
    assert_gzipped(gzipped, original)
    assert len(gzipped.content) < len(original)
    if path == "/items":
        assert json.loads(gzip.decompress(gzipped.content)) == DATA


async def test_gzip_output_is_deterministic() -> None:
    """mtime=0: equal bodies give equal bytes, so computed ETags and caches stay stable."""
    async with TestClient(make_app()) as client:
        first = await client.get("/text", headers=GZIP)
        second = await client.get("/text", headers=GZIP)
    assert first.content == second.content
    assert first.content[4:8] == b"\0\0\0\0"  # the gzip header's MTIME field


@pytest.mark.parametrize("level", [1, 9])
async def test_the_compress_level_setting_is_used(level: int) -> None:
    response = await fetch("/text", GZIP, compress_level=level)
    assert response.content == gzip.compress(TEXT, level, mtime=0)


async def test_without_accept_encoding_the_body_is_identity_but_varies() -> None:
    """The identity form must also say Vary, or a cache would serve it to gzip clients and
    the gzip form to clients that cannot read it."""
    response = await fetch("/text")
    assert_identity(response, TEXT)
    assert response.get_all("vary") == ["Accept-Encoding"]


async def test_a_refused_gzip_gives_identity() -> None:
    response = await fetch("/text", {"Accept-Encoding": "gzip;q=0, deflate"})
    assert_identity(response, TEXT)
    assert response.get_all("vary") == ["Accept-Encoding"]


async def test_a_body_below_the_default_min_size_is_identity_but_varies() -> None:
    """Below 1024 bytes gzip's overhead outweighs the gain."""
    small = await fetch("/sized/1023", GZIP)
    assert_identity(small, b"a" * 1023)
    assert small.get_all("vary") == ["Accept-Encoding"]
    assert_gzipped(await fetch("/sized/1024", GZIP), b"a" * 1024)


async def test_compress_min_size_is_inclusive() -> None:
    async with TestClient(make_app(compress_min_size=100)) as client:
        below = await client.get("/sized/99", headers=GZIP)
        at = await client.get("/sized/100", headers=GZIP)
    assert_identity(below, b"a" * 99)
    assert_gzipped(at, b"a" * 100)


async def test_an_image_is_untouched_and_does_not_vary() -> None:
    """No gzip form of it can exist, so caches need no Vary."""
    response = await fetch("/picture", GZIP)
    assert_identity(response, PNG)
    assert response.get_all("vary") == []


async def test_a_handlers_own_content_encoding_is_left_alone() -> None:
    response = await fetch("/encoded", GZIP)
    assert response.get_all("content-encoding") == ["br"]
    assert response.content == TEXT


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ("Cookie", None),
        ("*", ["*"]),
        ("Accept-Encoding", ["Accept-Encoding"]),
        ("cookie, accept-encoding", ["cookie, accept-encoding"]),
    ],
)
async def test_a_handlers_vary_is_extended_once(vary: str, expected: list[str] | None) -> None:
    """Accept-Encoding joins what the handler varies on; ``*`` already covers it, and a
    field already there is not repeated."""
    async with TestClient(make_app()) as client:
        response = await client.get("/varies", params={"vary": vary}, headers=GZIP)
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(response.content) == TEXT
    lines = response.get_all("vary")
    if expected is None:
        assert len(lines) == 1
        fields = {field.strip().lower() for field in lines[0].split(",")}
        assert fields == {"cookie", "accept-encoding"}
    else:
        assert lines == expected


async def test_several_vary_lines_keep_every_field() -> None:
    """``add_header`` may give Vary twice; a cache must still vary on every field named,
    so merging in Accept-Encoding must not drop one of the handler's lines."""
    response = await fetch("/two-vary", GZIP)
    fields = {
        field.strip().lower() for line in response.get_all("vary") for field in line.split(",")
    }
    assert fields == {"cookie", "origin", "accept-encoding"}


async def test_a_strong_etag_becomes_weak_only_when_gzipped() -> None:
    """The gzip bytes differ from the identity ones, so a strong tag would lie about them
    (RFC 9110 §8.8.1)."""
    async with TestClient(make_app()) as client:
        gzipped = await client.get("/tagged", headers=GZIP)
        plain = await client.get("/tagged")
        weak = await client.get("/tagged", params={"tag": 'W/"abc"'}, headers=GZIP)
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.get_all("etag") == ['W/"abc"']
    assert plain.get_all("etag") == ['"abc"']
    assert weak.get_all("etag") == ['W/"abc"']  # not W/W/


async def test_a_weakened_etag_still_revalidates() -> None:
    """The client sends back the W/ tag it got; weak comparison makes that a 304."""
    async with TestClient(make_app()) as client:
        response = await client.get("/tagged", headers={**GZIP, "If-None-Match": 'W/"abc"'})
    assert response.status_code == 304 and response.content == b""


async def test_head_gets_the_gzipped_gets_headers() -> None:
    """A HEAD promises what the GET would send, Content-Length of the gzip body included."""
    async with TestClient(make_app()) as client:
        get = await client.get("/text", headers=GZIP)
        head = await client.head("/text", headers=GZIP)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-encoding"] == "gzip"
    assert head.get_all("vary") == ["Accept-Encoding"]
    assert head.headers["content-length"] == get.headers["content-length"]
    assert int(get.headers["content-length"]) < len(TEXT)


async def test_a_204_is_untouched() -> None:
    response = await fetch("/no-content", GZIP, compress_min_size=0)
    assert response.status_code == 204 and response.content == b""
    assert "content-encoding" not in response.headers
    assert response.get_all("vary") == []


async def test_a_handlers_304_varies_like_its_200_and_is_not_encoded() -> None:
    """RFC 9110 §15.4.5: a 304 carries the Vary its 200 would; its tag stays the handler's,
    and it has no body to encode."""
    response = await fetch("/not-modified", GZIP, compress_min_size=0)
    assert response.status_code == 304 and response.content == b""
    assert response.get_all("etag") == ['"abc"']
    assert "content-encoding" not in response.headers
    assert "content-type" not in response.headers
    assert response.get_all("vary") == ["Accept-Encoding"]


async def test_an_error_page_is_compressed_like_any_page() -> None:
    """The 404 page is HTML too: over the threshold it is gzipped and varies."""
    async with TestClient(make_app(compress_min_size=64)) as client:
        plain = await client.get("/missing")
        gzipped = await client.get("/missing", headers=GZIP)
    assert plain.status_code == gzipped.status_code == 404
    assert len(plain.content) >= 64 and "content-encoding" not in plain.headers
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.get_all("vary") == plain.get_all("vary") == ["Accept-Encoding"]
    assert gzip.decompress(gzipped.content) == plain.content


async def test_a_function_routes_html_is_compressed() -> None:
    """A function's str is served as text/html, so it is as compressible as a handler's;
    a Response without an explicit Content-Type must not escape compression and Vary."""
    response = await fetch("/function", GZIP)
    assert response.headers["content-type"].startswith("text/html")
    assert_gzipped(response, PAGE.encode())


async def test_a_repeated_accept_encoding_header_is_read_whole() -> None:
    """Mongrel2 sends a repeated header as a list; any of its lines may allow gzip."""
    async with TestClient(make_app()) as client:
        allowed = await client.get("/text", headers={"Accept-Encoding": ["identity", "gzip"]})
        refused = await client.get("/text", headers={"Accept-Encoding": ["identity", "br"]})
    assert_gzipped(allowed, TEXT)
    assert_identity(refused, TEXT)


PIECES = [b"first piece, " * 50, b"second piece, " * 50, b"third and last piece\n" * 50]


async def stream_reply(
    path: str, headers: dict[str, Any] | None = None, method: str = "GET", **settings: Any
) -> tuple[bytes, list[bytes], bool]:
    """The head, the chunks (each as sent) and whether the reply ended with its 0 chunk."""
    async with TestClient(make_app(**settings)) as client:
        raw = client.build_message(method, path, conn_id=1, headers=headers)
        await client.send_raw(raw)
        data = b""
        while b"\r\n\r\n" not in data or (method != "HEAD" and not data.endswith(b"\r\n0\r\n\r\n")):
            data += await client.receive(1)
    head, _, chunked = data.partition(b"\r\n\r\n")
    chunks = []
    while chunked:
        size_line, _, chunked = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head.lower(), chunks, True
        chunks.append(chunked[:size])
        assert chunked[size : size + 2] == b"\r\n"
        chunked = chunked[size + 2 :]
    return head.lower(), chunks, False


async def test_a_streamed_text_response_is_gzipped_piece_by_piece() -> None:
    """Each flush is a gzip sync point: the client can decode every piece as it arrives."""
    head, chunks, ended = await stream_reply("/pieces", GZIP)
    assert ended
    assert b"transfer-encoding: chunked" in head
    assert b"content-encoding: gzip" in head and b"vary: accept-encoding" in head
    assert b"content-length" not in head
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert len(chunks) == len(PIECES) + 1  # the pieces, then gzip's end
    for chunk, piece in zip(chunks, PIECES, strict=False):
        assert decoder.decompress(chunk) == piece  # nothing held back for later
    assert decoder.decompress(chunks[-1]) == b"" and decoder.eof
    assert gzip.decompress(b"".join(chunks)) == b"".join(PIECES)
    assert len(b"".join(chunks)) < len(b"".join(PIECES)) / 4


async def test_a_stream_with_one_piece_and_its_end_is_one_gzip_member() -> None:
    head, chunks, ended = await stream_reply("/stream", GZIP, compress_min_size=0)
    assert ended and b"content-encoding: gzip" in head
    assert gzip.decompress(b"".join(chunks)) == TEXT


async def test_a_stream_to_a_client_without_gzip_is_plain_and_says_vary() -> None:
    head, chunks, ended = await stream_reply("/pieces", {"Accept-Encoding": "gzip;q=0"})
    assert ended and b"content-encoding" not in head and b"vary: accept-encoding" in head
    assert chunks == PIECES


async def test_a_stream_without_compress_response_is_plain_and_has_no_vary() -> None:
    head, chunks, _ = await stream_reply("/pieces", GZIP, compress_response=False)
    assert b"content-encoding" not in head and b"vary" not in head
    assert chunks == PIECES


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/events", "an event stream stays plain"),
        ("/picture-stream", "an image is not text"),
        ("/encoded-stream", "the handler encoded it itself"),
    ],
)
async def test_streams_that_stay_as_written(path: str, reason: str) -> None:
    head, chunks, ended = await stream_reply(path, GZIP)
    assert ended, reason
    assert head.count(b"content-encoding") == (1 if "encoded" in path else 0), reason
    assert b"content-encoding: gzip" not in head or "encoded" in path, reason
    if path == "/events":
        assert b"vary" not in head
        assert b"".join(chunks) == b"data: one\n\ndata: two\n\n"
    else:
        assert b"".join(chunks) == b"".join(PIECES), reason


async def test_head_of_a_gzipped_stream_has_the_headers_of_its_get() -> None:
    head, chunks, _ = await stream_reply("/pieces", GZIP, method="HEAD")
    assert b"content-encoding: gzip" in head and b"vary: accept-encoding" in head
    assert chunks == []


async def test_a_gzipped_stream_to_http_1_0_ends_with_the_connection() -> None:
    async with TestClient(make_app()) as client:
        raw = client.build_message("GET", "/pieces", conn_id=1, headers=GZIP, version="HTTP/1.0")
        await client.send_raw(raw)
        data = b""
        while True:
            part = await client.receive(1)
            if part == b"":  # the close
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert gzip.decompress(body) == b"".join(PIECES)


@pytest.mark.parametrize("kind", ["bare", "varies"])
async def test_the_shared_response_object_is_not_mutated(kind: str) -> None:
    """A handler may return one Response to every request: gzipping one answer must not
    change what the next client (or one without gzip) gets."""
    shared = SHARED[kind]
    headers, body = list(shared.headers), shared.body
    async with TestClient(make_app(etag=True)) as client:
        first = await client.get(f"/shared/{kind}", headers=GZIP)
        plain = await client.get(f"/shared/{kind}")
        second = await client.get(f"/shared/{kind}", headers=GZIP)
    assert shared.headers == headers and shared.body == body
    assert_gzipped(first, TEXT)
    assert_identity(plain, TEXT)
    assert plain.get_all("etag") == ['"shared"']
    assert plain.get_all("vary") == ["Accept-Encoding"]
    assert second.content == first.content and second.get_all("etag") == ['W/"shared"']


# With computed ETags (etag=True): compression runs first, so each form has its own tag


async def test_computed_etags_differ_between_the_two_forms() -> None:
    async with TestClient(make_app(etag=True)) as client:
        gzipped = await client.get("/page", headers=GZIP)
        plain = await client.get("/page")
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.headers["etag"] == body_etag(gzipped.content)
    assert plain.headers["etag"] == body_etag(PAGE.encode())
    assert gzipped.headers["etag"] != plain.headers["etag"]


async def test_the_gzip_etag_revalidates_only_the_gzip_form() -> None:
    """A client holding the gzip form gets a 304 only while it still asks for gzip; one that
    stopped accepting gzip needs the identity body, not a 304 for bytes it cannot use."""
    async with TestClient(make_app(etag=True)) as client:
        tag = (await client.get("/page", headers=GZIP)).headers["etag"]
        fresh = await client.get("/page", headers={**GZIP, "If-None-Match": tag})
        other = await client.get("/page", headers={"If-None-Match": tag})
    assert fresh.status_code == 304 and fresh.content == b""
    assert fresh.headers["etag"] == tag
    assert other.status_code == 200
    assert_identity(other, PAGE.encode())
    assert other.headers["etag"] == body_etag(PAGE.encode())


async def test_one_answer_to_many_clients_is_gzipped_once_for_those_that_take_it() -> None:
    """``app.deliver`` (a WaitingRoom release): gzip for clients that accept it, the answer as
    it is for the others, and every one of them told that it varies."""
    from brubeck.waiting import WaitingRoom

    app = Brubeck(compress_response=True)
    room = WaitingRoom(app)

    class Wait(WebMessageHandler):
        async def get(self) -> Response:
            return await room.wait(self.request, timeout=5)

    app.add_route_rule(r"^/wait$", Wait)
    takes_gzip = {1: True, 2: False, 3: True, 4: False}
    async with TestClient(app) as client:
        for conn_id, gz in takes_gzip.items():
            headers = {"Accept-Encoding": "gzip"} if gz else {}
            await client.send_raw(
                client.build_message("GET", "/wait", conn_id=conn_id, headers=headers)
            )
        while len(room) < len(takes_gzip):
            await asyncio.sleep(0.01)
        assert room.release(Response(DATA)) == len(takes_gzip)
        answers = {c: TestResponse(await client.receive(c), closed=False) for c in takes_gzip}
    for conn_id, gz in takes_gzip.items():
        answer = answers[conn_id]
        assert answer.get_all("vary") == ["Accept-Encoding"]
        body = gzip.decompress(answer.content) if gz else answer.content
        assert json.loads(body) == DATA
        assert ("content-encoding" in answer.headers) is gz
    assert answers[1].content == answers[3].content  # one encoding for the group


async def test_deliver_without_compression_is_unchanged() -> None:
    from brubeck.waiting import WaitingRoom

    app = Brubeck()
    room = WaitingRoom(app)

    class Wait(WebMessageHandler):
        async def get(self) -> Response:
            return await room.wait(self.request, timeout=5)

    app.add_route_rule(r"^/wait$", Wait)
    async with TestClient(app) as client:
        message = client.build_message(
            "GET", "/wait", conn_id=1, headers={"Accept-Encoding": "gzip"}
        )
        await client.send_raw(message)
        while len(room) < 1:
            await asyncio.sleep(0.01)
        room.release(Response(DATA))
        answer = TestResponse(await client.receive(1), closed=False)
    assert "content-encoding" not in answer.headers and "vary" not in answer.headers
    assert json.loads(answer.content) == DATA
