"""request.py: what a handler reads from a Mongrel2 message, and the 400s for bad input."""

from __future__ import annotations

from typing import Any

import pytest
import tnetstring

from brubeck.errors import HTTPError
from brubeck.protocol import parse
from brubeck.request import Headers, Request, parse_query
from tests import fixtures


def make_request(
    path: bytes = b"/",
    *,
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    query: bytes | None = None,
    body: bytes = b"",
    headers: dict[bytes, Any] | None = None,
) -> Request:
    """A request parsed from the bytes Mongrel2 would send; ``headers`` are the client's."""
    m2 = {b"METHOD": method, b"VERSION": version, b"PATH": path, b"URI": path}
    if query is not None:
        m2[b"QUERY"] = query
        m2[b"URI"] = path + b"?" + query
    raw = b"S 1 %s %s%s" % (
        path,
        tnetstring.dumps({**(headers or {}), **m2}),
        tnetstring.dumps(body),
    )
    return Request(parse(raw))


def form_request(
    body: bytes, content_type: bytes = b"application/x-www-form-urlencoded"
) -> Request:
    return make_request(method=b"POST", body=body, headers={b"content-type": content_type})


def assert_400(read: Any, *words: str) -> None:
    with pytest.raises(HTTPError) as info:
        read()
    assert info.value.status == 400
    for word in words:
        assert word in str(info.value.message)


# Facts from the fixtures


def test_request_from_the_get_fixture() -> None:
    request = Request(parse(fixtures.GET_QUERY))
    assert request.method == "GET"
    assert request.version == "HTTP/1.1"
    assert request.path == "/hello/world"
    assert request.uri == "/hello/world?a=1&b=two"
    assert request.query_string == "a=1&b=two"
    assert request.arguments == {"a": ["1"], "b": ["two"]}
    assert request.pattern == "/"
    assert request.scheme == "http"
    assert request.remote_addr == "127.0.0.1"
    assert request.host == "127.0.0.1:6767"
    assert request.url == "http://127.0.0.1:6767/hello/world?a=1&b=two"
    assert request.conn_id == b"1"
    assert request.sender == fixtures.SENDER
    assert request.keep_alive


def test_request_from_the_post_fixture() -> None:
    request = Request(parse(fixtures.POST_FORM))
    assert request.method == "POST"
    assert request.body == b"name=value&x=y"
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.arguments == {"name": ["value"], "x": ["y"]}
    assert not request.is_json


def test_request_from_the_json_protocol_fixture() -> None:
    request = Request(parse(fixtures.JSON_GET))
    assert request.path == "/json/path"
    assert request.arguments == {"a": ["1"], "b": ["2"]}
    assert request.headers["x-dup"] == ["one", "two"]
    assert request.headers["X-Q"] == 'say "hi" \\back'


def test_defaults_when_mongrel2_facts_are_missing() -> None:
    request = Request(parse(b"S 1 /p 15:6:METHOD,3:GET,}0:,"))
    assert request.version == "HTTP/1.1"
    assert request.scheme == "http"
    assert (request.uri, request.query_string, request.pattern, request.remote_addr) == ("",) * 4
    assert request.host == ""
    assert request.arguments == {}


def test_repr() -> None:
    assert repr(make_request(b"/x")) == "<Request GET b'/x' conn=b'1'>"


# Headers


def test_headers_are_case_insensitive() -> None:
    headers = make_request(headers={b"content-type": b"text/plain"}).headers
    for name in ("content-type", "Content-Type", "CONTENT-TYPE"):
        assert headers[name] == "text/plain"
        assert name in headers
        assert headers.get(name) == "text/plain"


def test_repeated_header_is_a_list_and_getlist_first_agree() -> None:
    headers = Request(parse(fixtures.REPEATED_HEADERS)).headers
    assert headers["X-Dup"] == ["one", "two", "three"]
    assert headers.getlist("x-dup") == ["one", "two", "three"]
    assert headers.first("x-dup") == "one"
    assert headers["accept"] == "*/*"
    assert headers.getlist("accept") == ["*/*"]
    assert headers.first("accept") == "*/*"


def test_missing_header() -> None:
    headers = make_request().headers
    assert headers.get("x-nope") is None
    assert headers.get("x-nope", "d") == "d"
    assert headers.getlist("x-nope") == []
    assert headers.first("x-nope") is None
    assert headers.first("x-nope", "d") == "d"
    assert "x-nope" not in headers
    assert 5 not in headers
    with pytest.raises(KeyError):
        headers["x-nope"]


def test_mongrel2_keys_are_not_client_headers() -> None:
    headers = Request(parse(fixtures.GET_QUERY)).headers
    assert sorted(headers) == ["accept", "host", "user-agent", "x-forwarded-for"]
    assert len(headers) == 4
    assert dict(headers) == {
        "host": "127.0.0.1:6767",
        "user-agent": "curl/7.88.1",
        "accept": "*/*",
        "x-forwarded-for": "127.0.0.1",
    }
    assert "Headers(" in repr(headers)


def test_header_values_are_latin1_text() -> None:
    headers = make_request(headers={b"x-name": b"caf\xe9", b"x-list": [b"\xff", b"a"]}).headers
    assert headers["x-name"] == "café"
    assert headers.getlist("x-list") == ["ÿ", "a"]


def test_headers_wrap_a_raw_dict() -> None:
    headers = Headers({b"METHOD": b"GET", b"x-a": b"1", b"x-b": [b"2", b"3"]})
    assert list(headers) == ["x-a", "x-b"]
    assert headers.first("X-B") == "2"


# Path


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b"/a%20b/c", "/a b/c"),
        (b"/plain", "/plain"),
        (b"/caf%C3%A9", "/café"),
        (b"/caf\xc3\xa9", "/café"),
        (b"/50%25", "/50%"),
        (b"/a%2Fb", "/a/b"),
        (b"/%zz", "/%zz"),
    ],
)
def test_path_is_percent_decoded_utf8(raw: bytes, decoded: str) -> None:
    assert make_request(raw).path == decoded


@pytest.mark.parametrize("raw", [b"/caf\xe9", b"/%ff", b"/a%C3", b"/\xc3%A9x%80"])
def test_non_utf8_path_is_a_400(raw: bytes) -> None:
    request = make_request(raw)
    assert_400(lambda: request.path, "path", "UTF-8")


# Query and form arguments


@pytest.mark.parametrize(
    ("query", "arguments"),
    [
        (b"a=1&a=2&b=3", {"a": ["1", "2"], "b": ["3"]}),
        (b"blank=&flag", {"blank": [""], "flag": [""]}),
        (b"name=caf%C3%A9&sp=a+b%20c", {"name": ["café"], "sp": ["a b c"]}),
        (b"name=caf\xc3\xa9", {"name": ["café"]}),
        (b"x=%41&%41=y", {"x": ["A"], "A": ["y"]}),
        (b"a=1;b=2", {"a": ["1;b=2"]}),
        (b"", {}),
    ],
)
def test_query_arguments(query: bytes, arguments: dict[str, list[str]]) -> None:
    assert make_request(query=query).arguments == arguments


@pytest.mark.parametrize("query", [b"x=%ff", b"x=caf\xe9", b"%C3=1"])
def test_query_with_invalid_utf8_is_a_400(query: bytes) -> None:
    request = make_request(query=query)
    assert_400(lambda: request.arguments, "query string", "UTF-8")


def test_form_arguments_are_merged_after_the_query() -> None:
    request = make_request(
        method=b"POST",
        query=b"a=q&only=query",
        body=b"a=form&name=caf%C3%A9&raw=\xc3\xa9",
        headers={b"content-type": b"application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert request.arguments == {
        "a": ["q", "form"],
        "only": ["query"],
        "name": ["café"],
        "raw": ["é"],
    }


def test_form_body_with_invalid_utf8_is_a_400() -> None:
    assert_400(lambda: form_request(b"x=%ff").arguments, "form body")


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/json", b"multipart/x"])
def test_other_bodies_are_not_arguments(content_type: bytes) -> None:
    assert form_request(b"a=1", content_type).arguments == {}


def test_parse_query_directly() -> None:
    assert parse_query(b"") == {}
    assert parse_query(b"k=v") == {"k": ["v"]}
    with pytest.raises(HTTPError, match="the form body"):
        parse_query(b"k=%80", "form body")


# Cookies


def test_cookies_from_repeated_cookie_headers() -> None:
    request = Request(parse(fixtures.REPEATED_HEADERS))
    assert request.cookies == {"a": "1", "b": "2"}
    assert request.get_cookie("b") == "2"
    assert request.get_cookie("nope") is None
    assert request.get_cookie("nope", "d") == "d"


def test_cookies_quoted_values_and_malformed_pairs() -> None:
    request = make_request(
        headers={b"cookie": [b'a=1; q="quoted value"; junk; =novalue; e=', b"b=2; a=ignored"]}
    )
    assert request.cookies == {"a": "1", "q": "quoted value", "e": "", "b": "2"}


# Connection persistence


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"HTTP/1.1", None, True),
        (b"HTTP/1.1", b"keep-alive", True),
        (b"HTTP/1.1", b"close", False),
        (b"HTTP/1.1", b"Close", False),
        (b"HTTP/1.1", b"Upgrade, close", False),
        (b"HTTP/1.1", [b"keep-alive", b"close"], False),
        (b"HTTP/1.0", None, False),
        (b"HTTP/1.0", b"keep-alive", True),
        (b"HTTP/1.0", b"Keep-Alive", True),
        (b"HTTP/1.0", b"keep-alive, close", False),
    ],
)
def test_keep_alive(version: bytes, connection: Any, keep_alive: bool) -> None:
    headers = {} if connection is None else {b"connection": connection}
    assert make_request(version=version, headers=headers).keep_alive is keep_alive


# Content type and JSON


@pytest.mark.parametrize(
    ("content_type", "media_type", "is_json"),
    [
        (b"application/json", "application/json", True),
        (b"Application/JSON; charset=utf-8", "application/json", True),
        (b"application/vnd.api+json", "application/vnd.api+json", True),
        (b"text/html; charset=utf-8", "text/html", False),
        (None, "", False),
    ],
)
def test_content_type(content_type: bytes | None, media_type: str, is_json: bool) -> None:
    headers = {} if content_type is None else {b"content-type": content_type}
    request = make_request(headers=headers)
    assert request.content_type == media_type
    assert request.is_json is is_json


def test_json_body() -> None:
    request = form_request(b'{"a": [1, 2], "b": "\xc3\xa9"}', b"application/json")
    assert request.json == {"a": [1, 2], "b": "é"}
    assert request.json is request.json


@pytest.mark.parametrize("body", [b"{bad", b"[1,", b"\xff", b"{}}"])
def test_malformed_json_body_is_a_400(body: bytes) -> None:
    request = form_request(body, b"application/json")
    assert_400(lambda: request.json, "malformed JSON")


def test_empty_json_body_is_a_400() -> None:
    assert_400(lambda: make_request().json, "empty body")


def test_url_uses_scheme_host_and_raw_uri() -> None:
    request = make_request(b"/a%20b", query=b"x=1", headers={b"host": b"example.com"})
    assert request.url == "http://example.com/a%20b?x=1"
