"""Adversarial hunt over response shaping: framing headers a handler sets, bodyless statuses,
streams that start with such a status, gzip and ``no-transform``, header names, routes to a
class without verbs, and what a handler that runs without a task leaves behind.

Every response is read back with h11 (a strict HTTP/1.1 client parser) from the exact bytes
the app sent to the connection, and anything left after the end of the response is an error:
on a keep-alive connection it would be read as the start of the next response. Tests marked
"Was a bug" failed before their fix.
"""

from __future__ import annotations

import asyncio
import contextvars
import gzip
from typing import Any

import h11
import pytest

from brubeck import Brubeck, HTTPError, Response, WebMessageHandler
from brubeck.response import check_header
from brubeck.testing import TestClient
from tests.fixtures import drain

GZIP = {"Accept-Encoding": "gzip"}
TEXT = "Hunting for shaping bugs, compressible text.\n" * 60


def parse_wire(data: bytes, method: str = "GET") -> tuple[h11.Response, bytes, bytes]:
    """The final response in ``data`` as a strict client reads it, its body, and the bytes
    left over after its end (which a keep-alive client takes for the next response)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "testserver")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    head: h11.Response | None = None
    body = b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise AssertionError(f"not a valid HTTP/1.1 response ({exc}): {data!r}") from None
        if event is h11.NEED_DATA:
            raise AssertionError(f"the response never ends, the client would wait: {data!r}")
        if isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
    assert head is not None
    return head, body, conn.trailing_data[0]


def header_names(head: h11.Response) -> list[bytes]:
    return [name for name, _ in head.headers]


async def wire(client: TestClient, path: str, conn_id: int, **kw: Any) -> bytes:
    """Every byte the app sent to the connection for one request (the close left out)."""
    await client.send_raw(client.build_message("GET", path, conn_id=conn_id, **kw))
    return b"".join(await drain(client, conn_id))


# A handler's own Transfer-Encoding on a complete response


class OwnTransferEncoding(WebMessageHandler):
    def get(self) -> str:
        self.set_header("Transfer-Encoding", "chunked")
        return "hello"


def own_transfer_encoding_function(application: Brubeck, message: Any) -> Response:
    return Response("hello", headers={"Transfer-Encoding": "chunked"})


@pytest.mark.parametrize("path", ["/class", "/function"])
async def test_a_handlers_transfer_encoding_does_not_frame_a_complete_response(path: str) -> None:
    """Was a bug. A Transfer-Encoding a handler sets on a complete response must be ignored
    like its Content-Length (RFC 9112 §6.1: never both); it was sent next to Content-Length
    over an unchunked body, and the client waited for chunks."""
    app = Brubeck(handler_tuples=[(r"^/class$", OwnTransferEncoding)])
    app.add_route_rule(r"^/function$", own_transfer_encoding_function, method="GET")
    async with TestClient(app) as client:
        data = await wire(client, path, 11)
    head, body, leftover = parse_wire(data)
    assert b"transfer-encoding" not in header_names(head)
    assert body == b"hello" and leftover == b""


# Streams that start with a status that has no body


class StreamedBodyless(WebMessageHandler):
    async def get(self, status: str) -> None:
        self.set_status(int(status))
        self.set_header("Content-Type", "text/plain")
        self.write("ignored")
        await self.flush()
        self.write(" and this")


@pytest.mark.parametrize("status", [204, 304])
async def test_a_stream_with_a_bodyless_status_sends_only_its_head(status: int) -> None:
    """Was a bug. A 204 or 304 whose handler flushes has no body on the wire: it went out with
    Transfer-Encoding: chunked and chunks that the client, which reads no body after a 204/304,
    took for the start of the next response on the connection."""
    app = Brubeck(handler_tuples=[(r"^/bodyless/(\d+)$", StreamedBodyless)])
    async with TestClient(app) as client:
        data = await wire(client, f"/bodyless/{status}", 12)
    head, body, leftover = parse_wire(data)
    assert head.status_code == status
    assert b"transfer-encoding" not in header_names(head)
    assert body == b"" and leftover == b""


# A stream finished in prepare()


class StreamedInPrepare(WebMessageHandler):
    async def prepare(self) -> None:
        self.write("all of it, from prepare")
        await self.flush()
        await self.finish()

    def get(self) -> str:
        return "the verb must not run"


async def test_a_stream_finished_in_prepare_is_the_only_response() -> None:
    """Was a bug. A response streamed and finished in an async prepare() is the whole answer:
    the app sent a second, empty 200 after it, which a keep-alive client took for the answer
    to its next request."""
    app = Brubeck(handler_tuples=[(r"^/prepared$", StreamedInPrepare)])
    async with TestClient(app) as client:
        data = await wire(client, "/prepared", 13)
    head, body, leftover = parse_wire(data)
    assert head.status_code == 200
    assert body == b"all of it, from prepare"
    assert leftover == b""


# 1xx and 205: statuses whose final response carries nothing


class Informational(WebMessageHandler):
    def get(self, how: str) -> str:
        if how == "raise":
            raise HTTPError(101)
        self.set_status(100)
        return "x"


def informational_function(application: Brubeck, message: Any) -> Response:
    return Response(b"", 103)


@pytest.mark.parametrize("path", ["/info/set", "/info/raise", "/info-function"])
async def test_a_1xx_is_never_the_final_response(path: str) -> None:
    """Was a bug. A 1xx is an interim response (RFC 9110 §15.2): sent as the only answer, the
    client waited forever for the final one. It must be refused (a 500 and a log line)."""
    app = Brubeck(handler_tuples=[(r"^/info/(\w+)$", Informational)])
    app.add_route_rule(r"^/info-function$", informational_function, method="GET")
    async with TestClient(app) as client:
        data = await wire(client, path, 14)
    head, _, leftover = parse_wire(data)  # raises if only an interim response came
    assert head.status_code >= 200 and leftover == b""


class ResetContent(WebMessageHandler):
    def get(self) -> str:
        self.set_status(205)
        return "content a 205 may not have"


async def test_a_205_carries_no_content() -> None:
    """Was a bug. RFC 9110 §15.3.6: a server MUST NOT generate content in a 205; the
    handler's body went out. It is dropped, with Content-Length: 0 to end the response."""
    app = Brubeck(handler_tuples=[(r"^/reset$", ResetContent)])
    async with TestClient(app) as client:
        response = await client.get("/reset")
    assert response.status_code == 205
    assert response.headers.get("content-length") == "0"
    assert response.content == b""


class ErrorWithoutBody(WebMessageHandler):
    def get(self, status: str) -> None:
        raise HTTPError(int(status), "an error page that must not be sent")


@pytest.mark.parametrize("status", [204, 304])
async def test_an_httperror_without_body_status_sends_no_page_even_with_gzip(status: int) -> None:
    """HTTPError(204) and HTTPError(304) write an error page that never reaches the wire, not
    even gzipped when every size is compressed: no body, no Content-Length, no encoding."""
    app = Brubeck(
        handler_tuples=[(r"^/error/(\d+)$", ErrorWithoutBody)],
        compress_response=True,
        compress_min_size=0,
    )
    async with TestClient(app) as client:
        data = await wire(client, f"/error/{status}", 15, headers=GZIP)
    head, body, leftover = parse_wire(data)
    assert head.status_code == status
    names = header_names(head)
    assert b"content-length" not in names and b"content-encoding" not in names
    assert body == b"" and leftover == b""


# gzip and Cache-Control: no-transform


class NoTransform(WebMessageHandler):
    def get(self) -> str:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", self.get_argument("cc"))
        return TEXT


@pytest.mark.parametrize("cache_control", ["no-transform", "public, max-age=60, No-Transform"])
async def test_no_transform_is_sent_as_written(cache_control: str) -> None:
    """Was a bug. A response whose Cache-Control says no-transform (RFC 9111 §5.2.2.6) is
    sent as the handler wrote it; compress_response gzipped it like any other."""
    app = Brubeck(handler_tuples=[(r"^/nt$", NoTransform)], compress_response=True)
    async with TestClient(app) as client:
        response = await client.get("/nt", params={"cc": cache_control}, headers=GZIP)
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.content == TEXT.encode()


async def test_no_transform_elsewhere_in_the_response_does_not_stop_gzip() -> None:
    """Only the Cache-Control directive counts: the words in another header do not."""
    app = Brubeck(handler_tuples=[(r"^/nt$", NoTransform)], compress_response=True)
    async with TestClient(app) as client:
        response = await client.get("/nt", params={"cc": "private"}, headers=GZIP)
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(response.content) == TEXT.encode()


# Header names that are not HTTP tokens


@pytest.mark.parametrize(
    "name", ["Content-Length\t", "X\tDebug", "X(Debug)", "X/Debug", "N\u00e4me", "X-\x7fA"]
)
def test_a_header_name_must_be_a_token(name: str) -> None:
    """Was a bug. A field name is a token (RFC 9110 §5.1); check_header let a tab, a
    separator or a non-ASCII letter through, and strict clients refuse the whole response
    (``Content-Length<TAB>`` is a second length to a lenient one)."""
    with pytest.raises(ValueError, match="invalid HTTP header name"):
        check_header(name, "1")


# A route to a class that answers no method


class NoVerbs(WebMessageHandler):
    """A class whose verb methods were misspelt."""

    def Get(self) -> str:  # the misspelling is the point
        return "never"


async def test_a_class_without_verbs_is_refused_or_answers_405() -> None:
    """Was a bug. docs/routing.md: a pattern that matches the path with no route for the
    method is a 405, and a route that can never match is a ValueError; a class with no verb
    methods was registered silently and its path answered 404."""
    try:
        app = Brubeck(handler_tuples=[(r"^/empty$", NoVerbs)])
    except ValueError:
        return
    async with TestClient(app) as client:
        response = await client.get("/empty")
    assert response.status_code == 405


# A handler run without a task must not leak its context into the next request

CURRENT_USER: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anonymous")


class Login(WebMessageHandler):
    async def get(self) -> str:  # awaits nothing: run inline, without a task
        CURRENT_USER.set("alice")
        return "welcome"


class WhoAmI(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(0)
        return CURRENT_USER.get()


async def test_a_context_variable_set_by_an_inline_handler_stays_in_its_request() -> None:
    """Was a bug. eager.py says running an async handler without a task differs only by
    current_task(); but a ContextVar it set stayed set in the receive loop's context, and
    every later request (its task copies that context) saw the other user's value."""
    app = Brubeck(handler_tuples=[(r"^/login$", Login), (r"^/whoami$", WhoAmI)])
    async with TestClient(app) as client:
        assert (await client.get("/login")).text == "welcome"
        response = await client.get("/whoami")
    assert response.text == "anonymous"
