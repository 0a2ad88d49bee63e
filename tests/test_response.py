"""response.py: the exact HTTP/1.1 bytes Mongrel2 forwards to the client."""

from __future__ import annotations

import json
import re

import pytest

from brubeck.response import Response, check_header, encode_response, reason_phrase

DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


class Parsed:
    """A response split back into status line, header lines and body, checking the framing."""

    def __init__(self, raw: bytes) -> None:
        assert raw.count(b"\r\n\r\n") >= 1, raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        self.status_line, *lines = head.decode("latin-1").split("\r\n")
        self.headers = [tuple(line.split(": ", 1)) for line in lines]
        assert all(len(pair) == 2 for pair in self.headers), lines

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times"
        return values[0] if values else None


def encode(response: Response, **kw: object) -> Parsed:
    return Parsed(response.encode(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (200, "OK"),
        (201, "Created"),
        (204, "No Content"),
        (301, "Moved Permanently"),
        (302, "Found"),
        (304, "Not Modified"),
        (400, "Bad Request"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (418, "I'm a Teapot"),
        (425, "Too Early"),
        (429, "Too Many Requests"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
        (509, "Bandwidth Limit Exceeded"),
        (599, "Unknown"),
        (999, "Unknown"),
    ],
)
def test_reason_phrases(status: int, phrase: str) -> None:
    assert reason_phrase(status) == phrase
    assert encode(Response(status=status)).status_line == f"HTTP/1.1 {status} {phrase}"


def test_a_complete_response() -> None:
    parsed = encode(Response("héllo", headers={"X-A": "1"}))
    assert parsed.status_line == "HTTP/1.1 200 OK"
    assert parsed.body == "héllo".encode()
    assert parsed.get("Content-Length") == "6"
    assert parsed.get("Content-Type") == "text/html; charset=utf-8"
    assert parsed.get("X-A") == "1"
    assert DATE.fullmatch(parsed.get("Date") or "")
    assert parsed.get("Connection") is None


def test_byte_layout_of_a_simple_response() -> None:
    raw = Response(b"hi", content_type="text/plain").encode()
    assert _without_date(raw) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nDate: D\r\n\r\nhi"
    )


@pytest.mark.parametrize("headers", [None, {"X-Other": "y"}, [("X-A", "1"), ("X-B", "2")]])
@pytest.mark.parametrize("connection", [None, "close", "keep-alive"])
@pytest.mark.parametrize("status", [200, 404, 201])
def test_framing_with_and_without_extra_headers(
    headers: object, connection: str | None, status: int
) -> None:
    body = b"x" * 37
    parsed = encode(
        Response(body, status, headers, content_type="text/plain"),  # type: ignore[arg-type]
        connection=connection,
    )
    assert parsed.status_line == f"HTTP/1.1 {status} {reason_phrase(status)}"
    assert parsed.get("Content-Length") == "37"
    assert parsed.get("Content-Type") == "text/plain"
    assert parsed.get("Connection") == connection
    assert parsed.body == body


def test_empty_body_has_a_zero_length_and_no_content_type() -> None:
    parsed = encode(Response())
    assert parsed.get("Content-Length") == "0"
    assert parsed.get("Content-Type") is None
    assert parsed.body == b""


@pytest.mark.parametrize("status", [100, 101, 103, 199])
def test_a_1xx_is_refused_as_an_answer(status: int) -> None:
    """Interim responses: a client given one as the only answer waits for another forever."""
    with pytest.raises(ValueError, match="1xx are interim"):
        Response(b"", status)


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_nor_length_for_204_and_304(status: int) -> None:
    parsed = encode(Response(b"dropped", status, content_type="text/plain"))
    assert parsed.get("Content-Length") is None
    assert parsed.body == b""


@pytest.mark.parametrize("status", [200, 404])
def test_head_keeps_the_length_but_drops_the_body(status: int) -> None:
    parsed = encode(Response(b"twelve bytes", status, content_type="text/plain"), head=True)
    assert parsed.get("Content-Length") == "12"
    assert parsed.body == b""


@pytest.mark.parametrize("connection", ["close", "keep-alive"])
def test_connection_header(connection: str) -> None:
    assert encode(Response(b"x"), connection=connection).get("Connection") == connection


def test_framing_headers_set_by_the_handler_are_replaced() -> None:
    headers = [("Content-Length", "999"), ("Connection", "upgrade"), ("Date", "yesterday")]
    parsed = encode(Response(b"abc", headers=headers), connection="close")
    assert parsed.get("Content-Length") == "3"
    assert parsed.get("Connection") == "close"
    assert parsed.get("Date") != "yesterday"


def test_several_set_cookie_lines_are_kept_in_order() -> None:
    cookies = [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2"), ("set-cookie", "c=3")]
    parsed = encode(Response(b"x", headers=cookies))
    assert parsed.get_all("Set-Cookie") == ["a=1; Path=/", "b=2", "c=3"]


def test_custom_reason() -> None:
    assert encode(Response(status=200, reason="Fine")).status_line == "HTTP/1.1 200 Fine"
    assert encode(Response(status=299)).status_line == "HTTP/1.1 299 Unknown"


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\0b", "x\r\nSet-Cookie: evil=1"])
def test_cr_lf_nul_in_a_header_value_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Response(headers={"X-A": bad})
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Response(content_type=bad)


@pytest.mark.parametrize("bad", ["X\rA", "X\nA", "X\0A", "X-A: b", "X A", ""])
def test_bad_header_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid HTTP header name"):
        Response(headers=[(bad, "v")])


@pytest.mark.parametrize("bad", ["OK\r\n", "O\nK", "\0"])
def test_cr_lf_nul_in_the_reason_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="reason phrase"):
        Response(reason=bad)


def test_check_header_accepts_ordinary_headers() -> None:
    check_header("X-Good", 'a value; with=params, and "quotes" and é')


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({"X-Emoji": "😀"}, None), (None, "Ça va ✓")],
)
def test_non_latin1_head_is_a_clear_value_error(headers: object, reason: str | None) -> None:
    """Refused when the header is given (so the 101 of a WebSocket, too), else at encoding."""
    with pytest.raises(ValueError, match="not Latin-1") as info:
        Response(b"x", headers=headers, reason=reason).encode()  # type: ignore[arg-type]
    assert "percent-encode" in str(info.value)


def test_latin1_header_values_go_out_as_latin1() -> None:
    raw = Response(headers={"X-Name": "café"}).encode()
    assert b"X-Name: caf\xe9\r\n" in raw


@pytest.mark.parametrize("body", [{"a": [1, "é"]}, [1, 2, {"b": None}]])
def test_dict_and_list_bodies_are_json(body: object) -> None:
    parsed = encode(Response(body))  # type: ignore[arg-type]
    assert parsed.get("Content-Type") == "application/json"
    assert json.loads(parsed.body) == body
    assert parsed.get("Content-Length") == str(len(parsed.body))


def test_content_type_argument_wins_over_headers_and_json() -> None:
    response = Response({"a": 1}, headers={"content-type": "text/old"}, content_type="x/new")
    assert encode(response).get_all("Content-Type") == ["x/new"]
    assert encode(Response(b"x", headers={"Content-Type": "text/plain"})).get_all(
        "content-type"
    ) == ["text/plain"]


@pytest.mark.parametrize(
    ("body", "data"),
    [
        (None, b""),
        (b"b", b"b"),
        ("é", b"\xc3\xa9"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"m"), b"m"),
    ],
)
def test_body_types(body: object, data: bytes) -> None:
    assert Response(body).body == data  # type: ignore[arg-type]


def test_unsupported_body_type() -> None:
    with pytest.raises(TypeError, match="not int"):
        Response(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [99, 1000, 0, -200, "200", 200.0])
def test_bad_status(status: object) -> None:
    with pytest.raises(ValueError, match=r"200\.\.999"):
        Response(status=status)  # type: ignore[arg-type]


def test_encode_response_is_the_same_framing() -> None:
    raw = encode_response(201, [("Content-Type", "text/plain")], b"ok", connection="close")
    parsed = Parsed(raw)
    assert parsed.status_line == "HTTP/1.1 201 Created"
    assert (parsed.get("Content-Length"), parsed.get("Connection")) == ("2", "close")
    assert parsed.body == b"ok"


def _without_date(raw: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*", b"Date: D", raw)


def test_repeated_encodes_differ_only_by_the_connection_line() -> None:
    response = Response(b"same", content_type="text/plain")
    first, second = response.encode(), response.encode(connection="close")
    assert _without_date(first).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") == (
        _without_date(second)
    )


def test_repr() -> None:
    assert repr(Response(b"abc", 404)) == "<Response 404 3 bytes>"


@pytest.mark.parametrize(
    "value",
    [{}, [], {"a/b": "é <x> &"}, [1, 2.5, None, True, "\u2028"], {"n": {"deep": ["/"] * 3}}],
)
def test_json_bodies_are_the_same_whichever_way_ujson_is_called(value: object) -> None:
    from brubeck.response import _keyword_json_bytes, _positional_json_bytes, json_bytes

    assert _positional_json_bytes(value) == _keyword_json_bytes(value)  # type: ignore[arg-type]
    assert json_bytes is _positional_json_bytes  # the fast form is the one in use
