"""Whatever bytes a client sends, reading a request gives a value, a 400 or a 413: never a crash.

Each property builds the ``Message`` Mongrel2 would deliver around arbitrary bytes in one
place (query, form body, multipart body, JSON body, Cookie or Content-Length header, path) and
reads the request as a handler would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from brubeck.errors import HTTPError
from brubeck.multipart import UploadedFile
from brubeck.protocol import HeaderValue, Message
from brubeck.request import BodyLimits, Request

SMALL_LIMITS = BodyLimits(max_body_size=300, max_form_parts=5, max_form_fields_size=100)
header_values = st.binary(max_size=80) | st.lists(st.binary(max_size=40), min_size=1, max_size=5)


def request(
    *,
    path: bytes = b"/",
    query: bytes | None = None,
    body: bytes = b"",
    headers: dict[bytes, HeaderValue] | None = None,
    limits: BodyLimits = SMALL_LIMITS,
) -> Request:
    m2: dict[bytes, HeaderValue] = {b"METHOD": b"POST", b"VERSION": b"HTTP/1.1", b"PATH": path}
    if query is not None:
        m2[b"QUERY"] = query
    return Request(Message(b"S", b"1", path, {**(headers or {}), **m2}, body), limits)


def value_or_400_413(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except HTTPError as exc:
        assert exc.status in (400, 413), exc
        assert exc.message
        return None


def assert_arguments_shape(arguments: Any) -> None:
    if arguments is not None:
        assert all(
            isinstance(k, str) and all(isinstance(v, str) for v in vs)
            for k, vs in arguments.items()
        )


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_any_query_string(query: bytes) -> None:
    req = request(query=query)
    assert_arguments_shape(value_or_400_413(lambda: req.arguments))


@settings(deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b"; charset=utf-8", b";;;"]))
def test_any_url_encoded_form(body: bytes, params: bytes) -> None:
    headers: dict[bytes, HeaderValue] = {
        b"content-type": b"application/x-www-form-urlencoded" + params
    }
    req = request(body=body, headers=headers)
    assert_arguments_shape(value_or_400_413(lambda: req.form))
    assert_arguments_shape(value_or_400_413(lambda: req.arguments))
    assert value_or_400_413(lambda: req.files) in ({}, None)


multipart_types = st.sampled_from(
    [
        b"multipart/form-data; boundary=XyZ",
        b'multipart/form-data; boundary="XyZ"',
        b"multipart/form-data",
        b"multipart/form-data; boundary=",
        b"multipart/form-data; boundary=\xff",
        b'multipart/form-data; boundary="unterminated',
        b"Multipart/Form-Data; BOUNDARY=XyZ; boundary=XyZ",
        b"multipart/mixed; boundary=XyZ",
    ]
) | st.binary(max_size=60).map(lambda raw: b"multipart/form-data;" + raw)

multipart_bodies = st.binary(max_size=300) | st.lists(
    st.sampled_from(
        [
            b"--XyZ",
            b"--XyZ--",
            b"\r\n",
            b"\r\n\r\n",
            b'Content-Disposition: form-data; name="a"',
            b'; filename="f"',
            b"Content-Type: x/y",
        ]
    )
    | st.binary(max_size=6),
    max_size=30,
).map(b"".join)


@settings(deadline=None, max_examples=300)
@given(multipart_bodies, multipart_types | header_values)
def test_any_multipart_body_with_any_content_type(body: bytes, content_type: Any) -> None:
    req = request(body=body, headers={b"content-type": content_type})
    assert_arguments_shape(value_or_400_413(lambda: req.form))
    files = value_or_400_413(lambda: req.files)
    if files is not None:
        assert all(isinstance(f, UploadedFile) for fs in files.values() for f in fs)
    assert_arguments_shape(value_or_400_413(lambda: req.arguments))
    value_or_400_413(lambda: req.json)


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_any_json_body(body: bytes) -> None:
    req = request(body=body, headers={b"content-type": b"application/json"})
    value_or_400_413(lambda: req.json)


@settings(deadline=None)
@given(header_values)
def test_any_cookie_header(cookie: HeaderValue) -> None:
    cookies = request(headers={b"cookie": cookie}).cookies
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in cookies.items())


@settings(deadline=None)
@given(header_values)
def test_any_content_length_header(value: HeaderValue) -> None:
    req = request(headers={b"content-length": value})
    value_or_400_413(req.check_content_length)


@settings(deadline=None)
@given(st.binary(max_size=100))
def test_any_path(path: bytes) -> None:
    req = request(path=path)
    decoded = value_or_400_413(lambda: req.path)
    assert decoded is None or isinstance(decoded, str)
