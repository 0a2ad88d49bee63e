"""multipart.py, second pass: edges a first pass left open (each was a bug)."""

from __future__ import annotations

import pytest

from brubeck.errors import HTTPError
from brubeck.multipart import encode_multipart, parse_boundary, parse_multipart

BOUNDARY = b"XyZ"


def parse(body: bytes) -> tuple[dict[str, list[str]], dict[str, list]]:
    return parse_multipart(body, BOUNDARY, max_parts=100, max_fields_size=10_000)


def one_part(head: bytes, content: bytes) -> bytes:
    return b"--XyZ\r\n" + head + b"\r\n\r\n" + content + b"\r\n--XyZ--\r\n"


@pytest.mark.parametrize(
    ("charset", "content", "text"),
    [
        ("iso-8859-1", b"caf\xe9", "café"),
        ('"windows-1252"', b"\x80 5", "€ 5"),
        ("UTF-8", "café".encode(), "café"),
        ("utf-16-le", "ok".encode("utf-16-le"), "ok"),
    ],
)
def test_a_field_is_decoded_with_the_charset_of_its_content_type(
    charset: str, content: bytes, text: str
) -> None:
    """Was a bug. RFC 7578 4.4 lets a text part name its charset; Brubeck decoded UTF-8
    anyway, so a valid ISO-8859-1 field was a 400. The part's charset must be used."""
    head = b'Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset='
    fields, _ = parse(one_part(head + charset.encode(), content))
    assert fields == {"a": [text]}


@pytest.mark.parametrize("charset", ["no-such-charset", "rot13", "iso-8859-1"])
def test_an_unknown_or_wrong_charset_is_a_400(charset: str) -> None:
    """Was a bug (the charset was ignored). An unknown charset, or content that is not in
    it, is a 400 naming the field."""
    head = b'Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset='
    content = b"\xe9" if charset != "iso-8859-1" else b"ok"
    body = one_part(head + charset.encode(), content)
    if charset == "iso-8859-1":
        assert parse(body)[0] == {"a": ["ok"]}
        return
    with pytest.raises(HTTPError) as info:
        parse(body)
    assert info.value.status == 400 and "'a'" in str(info.value.message)


def test_a_file_part_keeps_its_bytes_whatever_its_charset() -> None:
    """Files are bytes: a charset changes nothing (only fields are decoded)."""
    head = (
        b'Content-Disposition: form-data; name="f"; filename="a.txt"\r\n'
        b"Content-Type: text/plain; charset=iso-8859-1"
    )
    (upload,) = parse(one_part(head, b"\xe9"))[1]["f"]
    assert (upload.body, upload.content_type) == (b"\xe9", "text/plain; charset=iso-8859-1")


@pytest.mark.parametrize(
    "head",
    [
        b'Content-Disposition: form-data; name="f"; filename="x"\r\nContent-Type: text/html\nX: 1',
        b'Content-Disposition: form-data; name="f"; filename="x"\r\nContent-Type: text/html\rX: 1',
        b'Content-Disposition: form-data; name="f\n"; filename="x"',
    ],
)
def test_a_bare_cr_or_lf_in_a_part_header_is_a_400(head: bytes) -> None:
    """Was a bug. A bare LF or CR in a part's header line reached the handler in
    ``UploadedFile.content_type`` (``'text/html\\nX: 1'``), ready to be echoed into a
    response header or a log line. It must be a 400."""
    with pytest.raises(HTTPError) as info:
        parse(one_part(head, b"d"))
    assert info.value.status == 400


def test_a_tab_in_a_header_value_is_fine() -> None:
    head = b'Content-Disposition:\tform-data;\tname="a"'
    assert parse(one_part(head, b"v"))[0] == {"a": ["v"]}


def test_encode_sends_bytes_field_values_as_they_are() -> None:
    """Was a bug. ``encode_multipart({"a": b"xy"})`` sent the text ``b'xy'``."""
    body, content_type = encode_multipart({"a": b"xy", "b": "caf\xe9"})
    fields, _ = parse_multipart(
        body, parse_boundary(content_type), max_parts=10, max_fields_size=100
    )
    assert fields == {"a": ["xy"], "b": ["café"]}


def test_encode_refuses_a_boundary_that_would_corrupt_the_body() -> None:
    """Was a bug. A given boundary found in the content, or one RFC 2046 forbids, gave a
    body that parsed differently (or not at all); it must be a ValueError."""
    with pytest.raises(ValueError, match="boundary"):
        encode_multipart({"a": "x\r\n--zz"}, boundary="zz")
    with pytest.raises(ValueError, match="boundary"):
        encode_multipart({"a": "x"}, boundary="b" * 71)
    with pytest.raises(ValueError, match="boundary"):
        encode_multipart({"a": "x"}, boundary="")


def test_encode_refuses_a_content_type_that_would_add_headers() -> None:
    """Was a bug. A file's content type holding CRLF wrote extra part headers."""
    with pytest.raises(ValueError, match="content type"):
        encode_multipart({}, {"f": ("a.txt", b"x", "text/plain\r\nX-Evil: 1")})
