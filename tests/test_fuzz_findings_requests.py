"""Inputs a coverage-guided fuzzer found to make the request path misbehave, minimised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tnetstring

from brubeck.app import Brubeck
from brubeck.handlers import WebMessageHandler
from brubeck.protocol import Message, ProtocolError, parse_fields
from brubeck.request import Request
from tests import fixtures


@pytest.mark.parametrize(
    "raw",
    [
        b"S 1 / 1:\xbb#0:,",  # the headers
        b"S 1 / 8:1:k,1:\xbb#}0:,",  # a header value
        b"S 1 / 0:}1:\xbb#",  # the body
    ],
)
def test_non_ascii_byte_in_a_tnetstring_integer_is_a_protocol_error(raw: bytes) -> None:
    """tnetstring.pop raised OverflowError for it, which escaped parse_fields and handle_message."""
    with pytest.raises(ProtocolError, match="bad tnetstring"):
        parse_fields(raw)


def _upload_app(run_dir: Path) -> tuple[Brubeck, fixtures.RecordingConnection]:
    app = Brubeck(mongrel2_run_dir=str(run_dir))

    @app.add_route(r"^/upload$", method="POST")
    def upload(application: Brubeck, request: Request) -> str:
        return f"{len(request.body)} bytes"

    conn = fixtures.RecordingConnection()
    app.msg_conn = conn  # type: ignore[assignment]
    return app, conn


def _upload_notice(headers: dict[bytes, bytes]) -> bytes:
    m2 = {b"METHOD": b"POST", b"VERSION": b"HTTP/1.1", b"PATH": b"/upload", b"URI": b"/upload"}
    return b"S 7 /upload " + tnetstring.dumps({**m2, **headers}) + b"0:,"


HUGE_LENGTH = b"1" * 5000


def test_upload_start_with_a_content_length_of_5000_digits_is_a_413(tmp_path: Path) -> None:
    """int() of the 5000-digit Content-Length raised ValueError out of handle_message: no answer."""
    app, conn = _upload_app(tmp_path)
    start = {b"content-length": HUGE_LENGTH, b"x-mongrel2-upload-start": b"/tmp/upload.A"}
    app.handle_message(_upload_notice(start))
    assert conn.sent[0].startswith(b"S 1:7, HTTP/1.1 413 ")
    assert conn.sent[1:] == [b""]  # refused: closed, so Mongrel2 deletes the file


def test_upload_done_with_a_content_length_of_5000_digits_is_answered(tmp_path: Path) -> None:
    """int() of the 5000-digit Content-Length raised ValueError out of handle_message: no answer."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "upload.A").write_bytes(b"hello")
    app, conn = _upload_app(tmp_path)
    done = {
        b"content-length": HUGE_LENGTH,
        b"x-mongrel2-upload-start": b"/tmp/upload.A",
        b"x-mongrel2-upload-done": b"/tmp/upload.A",
    }
    app.handle_message(_upload_notice(done))
    assert len(conn.sent) == 1
    assert conn.sent[0].startswith(b"S 1:7, HTTP/1.1 200 OK")
    assert conn.sent[0].endswith(b"5 bytes")


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "\\ud800"}',  # an escaped lone high surrogate
        b'["x", {"\\uDFFF": 1}]',  # a lone low surrogate, in a key
        b'"\xed\xa0\x80"',  # the UTF-8 bytes of U+D800, which ujson also accepts
    ],
)
def test_json_body_with_a_lone_surrogate_is_a_400_not_a_500_when_echoed(body: bytes) -> None:
    """ujson decoded it; echoing it back failed to encode, a 500 for the client's bad JSON."""
    app = Brubeck()

    @app.add_route(r"^/echo$", method="POST")
    def echo(application: Brubeck, request: Request) -> Any:
        return request.json

    conn = fixtures.RecordingConnection()
    app.msg_conn = conn  # type: ignore[assignment]
    headers = {
        b"METHOD": b"POST",
        b"VERSION": b"HTTP/1.1",
        b"PATH": b"/echo",
        b"content-type": b"application/json",
    }
    app.handle_message(b"S 3 /echo " + tnetstring.dumps(headers) + tnetstring.dumps(body))
    assert len(conn.sent) == 1
    assert conn.sent[0].startswith(b"S 1:3, HTTP/1.1 400 Bad Request")
    assert b"lone surrogate" in conn.sent[0]


def test_json_body_with_a_surrogate_pair_still_decodes() -> None:
    """The lone-surrogate check must not refuse an escaped pair, which is one valid character."""
    request = Request(
        Message(b"S", b"1", b"/", {b"METHOD": b"POST"}, b'{"e": "\\ud83d\\ude00 \\u00e9"}')
    )
    assert request.json == {"e": "\U0001f600 \u00e9"}


def test_signed_cookie_with_a_non_ascii_signature_reads_as_missing() -> None:
    """hmac.compare_digest raised TypeError on the non-ASCII str: a 500 for a forged cookie."""

    class Whoami(WebMessageHandler):
        def get(self) -> str:
            return repr(self.get_cookie("user", "nobody", secret="a-secret-of-16-bytes-or-more"))

    app = Brubeck(handler_tuples=[(r"^/me$", Whoami)])
    conn = fixtures.RecordingConnection()
    app.msg_conn = conn  # type: ignore[assignment]
    headers = {b"METHOD": b"GET", b"VERSION": b"HTTP/1.1", b"cookie": b"user=1.e30.\xe9"}
    app.handle_message(b"S 4 /me " + tnetstring.dumps(headers) + b"0:,")
    assert len(conn.sent) == 1
    assert conn.sent[0].startswith(b"S 1:4, HTTP/1.1 200 OK")
    assert conn.sent[0].endswith(b"'nobody'")


@pytest.mark.parametrize("length", [b"5000000 ", b"5000000\t", b" 5000000"])
def test_upload_over_max_upload_size_is_refused_despite_whitespace_in_content_length(
    tmp_path: Path, length: bytes
) -> None:
    """The start notice counted it as a body, but the size check skipped it: upload accepted."""
    app, conn = _upload_app(tmp_path)
    app.settings["max_upload_size"] = 1000
    app.handle_message(
        _upload_notice({b"content-length": length, b"x-mongrel2-upload-start": b"/tmp/upload.A"})
    )
    assert conn.sent[0].startswith(b"S 1:7, HTTP/1.1 413 ")
    assert conn.sent[1:] == [b""]


@pytest.mark.parametrize("cookie", [b"a b=1; sid=2", b"a\xe9=1; sid=2", b"(x)=1; sid=2"])
def test_delete_cookies_skips_names_no_set_cookie_can_carry(cookie: bytes) -> None:
    """format_set_cookie refused the client's non-token cookie name: delete_cookies was a 500."""

    class Logout(WebMessageHandler):
        def get(self) -> str:
            self.delete_cookies()
            return "bye"

    app = Brubeck(handler_tuples=[(r"^/logout$", Logout)])
    conn = fixtures.RecordingConnection()
    app.msg_conn = conn  # type: ignore[assignment]
    headers = {b"METHOD": b"GET", b"VERSION": b"HTTP/1.1", b"cookie": cookie}
    app.handle_message(b"S 5 /logout " + tnetstring.dumps(headers) + b"0:,")
    assert len(conn.sent) == 1
    assert conn.sent[0].startswith(b"S 1:5, HTTP/1.1 200 OK")
    assert conn.sent[0].count(b"Set-Cookie: ") == 1
    assert b"Set-Cookie: sid=; " in conn.sent[0]


@pytest.mark.parametrize(
    "forged",
    [
        {b"VERSION": 5},
        {b"VERSION": []},
        {b"connection": 7},
        {b"connection": [b"close", 3]},
        {b"content-length": 5},
        {b"content-length": [b"1", 2]},
        {b"DOWNLOAD_CREDITS": b"9" * 5000},
        {b"DOWNLOAD_CREDITS": 5},
        {b"QUERY": 5},
        {b"cookie": 5},
    ],
    ids=lambda forged: repr(forged)[:40],
)
def test_header_values_that_are_not_strings_still_get_an_answer(forged: dict[bytes, Any]) -> None:
    """Only a peer that is not Mongrel2 sends them; they raised out of handle_message (no
    answer): in respond's keep-alive check, the Content-Length check and the credit window."""
    app = Brubeck()

    @app.add_route(r"^/x$", method="GET")
    def page(application: Brubeck, request: Request) -> str:
        return "ok"

    conn = fixtures.RecordingConnection()
    app.msg_conn = conn  # type: ignore[assignment]
    m2 = {b"METHOD": b"GET", b"VERSION": b"HTTP/1.1", b"PATH": b"/x", b"URI": b"/x"}
    app.handle_message(b"S 9 /x " + tnetstring.dumps({**m2, **forged}) + b"0:,")
    # a Content-Length that is not one number is refused (400, then a close: framing_problem)
    status = b"400 Bad Request" if b"content-length" in forged else b"200 OK"
    assert conn.sent and conn.sent[0].split(b", ", 1)[1].startswith(b"HTTP/1.1 " + status)
