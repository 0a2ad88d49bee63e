"""request.py: what a handler reads from a Mongrel2 message, and the 400s for bad input."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import tnetstring

from brubeck.errors import HTTPError
from brubeck.multipart import encode_multipart
from brubeck.protocol import parse, parse_fields
from brubeck.request import DEFAULT_LIMITS, BodyLimits, Headers, Request, parse_query
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


# Form bodies, files and the body limits


def multipart_request(
    fields: dict[str, Any] | None = None,
    files: dict[str, Any] | None = None,
    *,
    query: bytes | None = None,
    limits: BodyLimits = DEFAULT_LIMITS,
) -> Request:
    body, content_type = encode_multipart(fields, files)
    request = make_request(
        method=b"POST",
        query=query,
        body=body,
        headers={b"content-type": content_type.encode()},
    )
    request.limits = limits
    return request


def assert_413(read: Any, *words: str) -> None:
    with pytest.raises(HTTPError) as info:
        read()
    assert info.value.status == 413
    for word in words:
        assert word in str(info.value.message)


def test_url_encoded_form() -> None:
    request = form_request(b"a=1&a=2&b=caf%C3%A9")
    assert request.form == {"a": ["1", "2"], "b": ["café"]}
    assert request.files == {}


def test_multipart_fields_files_and_arguments() -> None:
    request = multipart_request(
        {"a": ["form1", "form2"], "title": "café"},
        {"doc": ("a.txt", b"hello\r\n", "text/plain"), "pics": [b"1", b"2"]},
        query=b"a=query",
    )
    assert request.form == {"a": ["form1", "form2"], "title": ["café"]}
    assert request.arguments == {"a": ["query", "form1", "form2"], "title": ["café"]}
    doc = request.files["doc"][0]
    assert (doc.name, doc.filename, doc.content_type, doc.body) == (
        "doc",
        "a.txt",
        "text/plain",
        b"hello\r\n",
    )
    assert [f.body for f in request.files["pics"]] == [b"1", b"2"]
    assert request.form is request.form
    assert request.files is request.files


def test_form_of_other_bodies_and_of_no_body_is_empty_and_fresh() -> None:
    for request in (make_request(), form_request(b'{"a": 1}', b"application/json")):
        assert request.form == {} and request.files == {}
        request.form["mine"] = ["x"]  # a handler may fill its own copy
    assert make_request().form == {}


def test_multipart_without_boundary_is_a_400() -> None:
    request = form_request(b"--x\r\n", b"multipart/form-data")
    assert_400(lambda: request.form, "boundary")
    assert_400(lambda: request.arguments, "boundary")


def test_malformed_multipart_is_a_400_through_files_and_arguments() -> None:
    request = form_request(b"--x\r\nno end", b"multipart/form-data; boundary=x")
    assert_400(lambda: request.files, "multipart", "closing line")
    assert_400(lambda: request.arguments, "multipart")


def test_nothing_is_parsed_until_read() -> None:
    request = form_request(b"--x\r\nbroken", b"multipart/form-data; boundary=x")
    assert request.method == "POST"
    assert request.path == "/"
    assert request.content_type == "multipart/form-data"
    request.check_content_length()
    assert_400(lambda: request.form)


def test_body_limits_from_settings() -> None:
    assert BodyLimits.from_settings({}) == DEFAULT_LIMITS == BodyLimits()
    assert DEFAULT_LIMITS.max_body_size == 10 * 1024 * 1024
    assert DEFAULT_LIMITS.max_form_parts == 1000
    assert DEFAULT_LIMITS.max_form_fields_size == 1024 * 1024
    limits = BodyLimits.from_settings({"max_body_size": 5, "max_form_parts": 0, "debug": True})
    assert limits == BodyLimits(max_body_size=5, max_form_parts=0)
    for bad in (-1, "10", 1.5, True, None):
        with pytest.raises(ValueError, match="max_form_parts setting must be an int"):
            BodyLimits.from_settings({"max_form_parts": bad})


def test_a_request_uses_the_default_limits_unless_given() -> None:
    assert make_request().limits is DEFAULT_LIMITS
    limits = BodyLimits(max_body_size=1)
    assert Request(parse(fixtures.POST_FORM), limits).limits is limits


@pytest.mark.parametrize(
    "read",
    [
        lambda r: r.form,
        lambda r: r.files,
        lambda r: r.arguments,
    ],
)
def test_a_body_over_max_body_size_is_a_413_when_read(read: Any) -> None:
    request = multipart_request({"a": "x" * 100}, limits=BodyLimits(max_body_size=100))
    assert_413(lambda: read(request), "max_body_size", f"{len(request.body)} bytes")
    at_limit = Request(form_request(b"a=" + b"x" * 100).message, BodyLimits(max_body_size=102))
    assert at_limit.form == {"a": ["x" * 100]}
    over = Request(at_limit.message, BodyLimits(max_body_size=101))
    assert_413(lambda: read(over), "max_body_size", "102 bytes")


def test_a_json_body_over_max_body_size_is_a_413() -> None:
    request = form_request(b"[" + b"1," * 50 + b"1]", b"application/json")
    request.limits = BodyLimits(max_body_size=100)
    assert_413(lambda: request.json, "max_body_size")


def test_an_oversized_body_is_not_refused_until_read() -> None:
    request = Request(parse(fixtures.POST_FORM), BodyLimits(max_body_size=1))
    assert (request.method, request.path, request.body) == ("POST", "/post", b"name=value&x=y")
    assert_413(lambda: request.arguments, "max_body_size")


def test_check_content_length() -> None:
    limits = BodyLimits(max_body_size=10)

    def check(headers: dict[bytes, Any], body: bytes = b"", upload: Any = None) -> None:
        request = make_request(method=b"POST", headers=headers, body=body)
        request.limits = limits
        if upload is not None:
            request.set_upload(upload)
        request.check_content_length()

    check({})
    check({b"content-length": b"10"})
    check({b"content-length": b"not a number"})
    check({b"content-length": b"-5"})
    assert_413(lambda: check({b"content-length": b"11"}), "Content-Length 11", "max_body_size")
    assert_413(lambda: check({b"content-length": [b"1", b"11"]}), "Content-Length 11")
    assert_413(lambda: check({b"content-length": b"9" * 5000}), "Content-Length 999")
    # A body spooled to a file (by Mongrel2, or from Mongrel2's pieces) is not in memory: not
    # this limit's business. The app marks it by setting the upload.
    check({b"content-length": b"1000", b"x-mongrel2-upload-done": b"/tmp/u.x"}, upload=object())
    check({b"content-length": b"1000", b"UPLOAD_STREAM": b"0"}, upload=object())
    # A client forging the upload header is still refused, with a body or without one.
    assert_413(lambda: check({b"content-length": b"1000", b"x-mongrel2-upload-done": b"x"}))
    assert_413(
        lambda: check(
            {b"content-length": b"1000", b"x-mongrel2-upload-done": b"x"}, body=b"y" * 11
        ),
        "max_body_size",
    )


def test_max_form_parts_for_url_encoded_and_multipart() -> None:
    limits = BodyLimits(max_form_parts=3)
    request = form_request(b"a=1&b=2&c=3")
    request.limits = limits
    assert len(request.form) == 3
    request = form_request(b"a=1&b=2&c=3&d")
    request.limits = limits
    assert_413(lambda: request.arguments, "more than 3 fields", "max_form_parts")
    request = multipart_request({"a": "1", "b": "2"}, {"c": b"3", "d": b"4"}, limits=limits)
    assert_413(lambda: request.files, "more than 3 parts", "max_form_parts")


def test_max_form_fields_size_for_url_encoded_and_multipart() -> None:
    limits = BodyLimits(max_form_fields_size=10)
    request = form_request(b"a=123456789")
    request.limits = limits
    assert_413(lambda: request.form, "11 bytes", "max_form_fields_size")
    request = multipart_request({"a": "1234567890"}, {"f": b"x" * 1000}, limits=limits)
    assert request.form == {"a": ["1234567890"]}
    request = multipart_request({"a": "12345678901"}, limits=limits)
    assert_413(lambda: request.form, "max_form_fields_size")


def test_the_method_is_text_and_a_repeated_one_counts_once() -> None:
    from brubeck.protocol import Message

    for raw, text in [(b"GET", "GET"), (b"PROPFIND", "PROPFIND"), ([b"PUT", b"POST"], "POST")]:
        message = Message(b"S", b"1", b"/", {b"METHOD": raw}, b"")
        assert Request(message).method == text
    with pytest.raises((TypeError, AttributeError)):  # the app drops such a message, logged
        Request(Message(b"S", b"1", b"/", {b"METHOD": 5}, b""))  # type: ignore[dict-item]


def test_message_is_made_on_demand_and_keeps_mongrel2s_body() -> None:
    fields = parse_fields(fixtures.POST_FORM)
    request = Request.from_fields(*fields, DEFAULT_LIMITS, 3)
    message = request.message
    assert (message.sender, message.conn_id, message.path) == fields[:3]
    assert message.headers is fields[3] and message.body == fields[4]
    assert request.message is message and request.epoch == 3


def test_message_of_a_spooled_upload_has_no_body_even_after_the_file_was_read() -> None:
    request = Request.from_fields(b"S", b"1", b"/up", {b"METHOD": b"PUT"}, b"", DEFAULT_LIMITS, 0)
    request.set_upload(SimpleNamespace(size=4, read=lambda: b"file"))
    assert request.body == b"file"
    assert request.message.body == b""
