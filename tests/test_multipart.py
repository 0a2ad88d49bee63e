"""multipart.py: multipart/form-data bodies, well-formed, malformed and over the limits."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brubeck.errors import HTTPError
from brubeck.multipart import (
    UploadedFile,
    encode_multipart,
    parse_boundary,
    parse_multipart,
    parse_params,
)

BOUNDARY = b"XyZ"


def part(
    name: str | None = "f",
    content: bytes = b"v",
    *,
    filename: str | None = None,
    content_type: str | None = None,
    headers: bytes | None = None,
) -> bytes:
    """One part as a client writes it: its headers, a blank line, its content."""
    if headers is None:
        disposition = "form-data" if name is None else f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        headers = f"Content-Disposition: {disposition}".encode()
        if content_type is not None:
            headers += f"\r\nContent-Type: {content_type}".encode()
    return headers + b"\r\n\r\n" + content


def multipart(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    dash = b"--" + BOUNDARY
    head = preamble + b"\r\n" if preamble else b""
    inner = b"".join(dash + b"\r\n" + p + b"\r\n" for p in parts)
    return head + inner + dash + b"--\r\n" + epilogue


def parse(
    body: bytes, *, max_parts: int = 100, max_fields_size: int = 10_000
) -> tuple[dict[str, list[str]], dict[str, list[UploadedFile]]]:
    return parse_multipart(body, BOUNDARY, max_parts=max_parts, max_fields_size=max_fields_size)


def fields_of(body: bytes) -> dict[str, list[str]]:
    return parse(body)[0]


def only_file(body: bytes) -> UploadedFile:
    files = parse(body)[1]
    assert len(files) == 1
    (uploads,) = files.values()
    assert len(uploads) == 1
    return uploads[0]


def assert_status(status: int, read: Callable[[], Any], *words: str) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        read()
    assert info.value.status == status, info.value
    for word in words:
        assert word in str(info.value.message), info.value.message
    return info.value


# Well-formed bodies


def test_fields_keep_every_value_in_order() -> None:
    body = multipart(part("a", b"1"), part("b", b"two"), part("a", b"3"))
    assert parse(body) == ({"a": ["1", "3"], "b": ["two"]}, {})


def test_a_field_is_utf8_text() -> None:
    assert fields_of(multipart(part("name", "café ☕".encode()))) == {"name": ["café ☕"]}


def test_empty_values_and_empty_names() -> None:
    body = multipart(part("empty", b""), part("", b"x"))
    assert fields_of(body) == {"empty": [""], "": ["x"]}


def test_a_file_keeps_its_bytes_filename_and_type() -> None:
    upload = only_file(multipart(part("doc", b"%PDF", filename="a.pdf", content_type="x/pdf")))
    assert upload == UploadedFile("doc", "a.pdf", "x/pdf", b"%PDF")
    assert upload.size == 4


def test_default_content_types() -> None:
    upload = only_file(multipart(part("f", b"data", filename="f.bin")))
    assert upload.content_type == "application/octet-stream"
    # A field's type only matters for decoding; one with a type is still a field.
    body = multipart(part("j", b'{"a": 1}', content_type="application/json"))
    assert parse(body) == ({"j": ['{"a": 1}']}, {})


def test_an_empty_file_input_is_a_file_without_a_name() -> None:
    upload = only_file(multipart(part("f", b"", filename="")))
    assert (upload.filename, upload.size, upload.body) == ("", 0, b"")


def test_fields_and_files_with_the_same_name_are_kept_apart() -> None:
    body = multipart(
        part("x", b"text"), part("x", b"one", filename="1"), part("x", b"two", filename="2")
    )
    fields, files = parse(body)
    assert fields == {"x": ["text"]}
    assert [(f.filename, f.body) for f in files["x"]] == [("1", b"one"), ("2", b"two")]


def test_binary_content_with_crlf_dashes_and_the_boundary_inside() -> None:
    content = (
        b"\r\n\r\n--\r\n--Xy\r\nXyZ--XyZ\r\n-XyZ\r\n\r--XyZ\n--XyZ\x00\xff\xfe"
        + bytes(range(256))
        + b"\r\n"
    )
    assert only_file(multipart(part("bin", content, filename="b"))).body == content


def test_content_may_end_with_crlf_or_dashes() -> None:
    for content in (b"\r\n", b"--", b"\r\n--", b"x\r"):
        assert only_file(multipart(part("f", content, filename="f"))).body == content


def test_preamble_and_epilogue_are_ignored() -> None:
    body = multipart(
        part("a", b"1"),
        preamble=b"This is a multi-part message.\r\nsay --XyZ mid-line, -XyZ",
        epilogue=b"trailing junk\r\n--XyZ\r\nmore",
    )
    assert fields_of(body) == {"a": ["1"]}


def test_the_closing_line_may_lack_its_crlf_and_lines_may_have_padding() -> None:
    body = b"--XyZ  \t\r\n" + part("a", b"1") + b"\r\n--XyZ--"
    assert fields_of(body) == {"a": ["1"]}


def test_no_parts_at_all() -> None:
    assert parse(b"--XyZ--\r\n") == ({}, {})
    # A boundary that does not start a line is preamble: only the closing line counts.
    assert parse(b"x--XyZ\r\n" + part() + b"\r\n--XyZ--") == ({}, {})


def test_a_part_with_headers_and_no_content() -> None:
    body = b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n--XyZ--'
    assert fields_of(body) == {"a": [""]}


def test_header_names_and_disposition_are_case_insensitive() -> None:
    headers = b'content-DISPOSITION:FORM-DATA;NAME="a";  FileName = "b.txt" \r\nCONTENT-type: t/x'
    upload = only_file(multipart(part(headers=headers, content=b"1")))
    assert (upload.name, upload.filename, upload.content_type) == ("a", "b.txt", "t/x")


def test_unknown_part_headers_are_ignored() -> None:
    headers = b'Content-Disposition: form-data; name="a"\r\nContent-Transfer-Encoding: binary'
    assert fields_of(multipart(part(headers=headers, content=b"1"))) == {"a": ["1"]}


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        (b'form-data; name="f"; filename="plain.txt"', "plain.txt"),
        (b"form-data; name=f; filename=unquoted.txt", "unquoted.txt"),
        (b'form-data; name="f"; filename="say \\"hi\\".txt"', 'say "hi".txt'),
        (b'form-data; name="f"; filename="say %22hi%22.txt"', 'say "hi".txt'),
        (b'form-data; name="f"; filename="two%0D%0Alines"', "two\r\nlines"),
        (b'form-data; name="f"; filename="semi;colon=.txt"', "semi;colon=.txt"),
        (b'form-data; name="f"; filename="C:\\dir\\file.txt"', "C:\\dir\\file.txt"),
        (b'form-data; name="f"; filename="back\\\\slash"', "back\\slash"),
        (b'form-data; name="f"; filename="100%.txt"', "100%.txt"),
        (b'form-data; name="f"; filename="caf\xc3\xa9 \xe2\x98\x95.txt"', "café ☕.txt"),
        (b"form-data; name=\"f\"; filename*=UTF-8''%E2%82%AC%20rates.txt", "€ rates.txt"),
        (b"form-data; name=\"f\"; filename*=utf-8'en'caf%C3%A9", "café"),
        (b"form-data; name=\"f\"; filename*=ISO-8859-1''caf%E9", "café"),
        (b'form-data; name="f"; filename="fallback"; filename*=UTF-8\'\'%C3%A9', "é"),
        (b'form-data; name="f"; filename*=UTF-8\'\'%C3%A9; filename="fallback"', "é"),
        (b'form-data; name="f"; filename="trailing";', "trailing"),
        (b'form-data ; name="f" ; filename="spaced" ', "spaced"),
    ],
)
def test_filenames(disposition: bytes, filename: str) -> None:
    headers = b"Content-Disposition: " + disposition
    assert only_file(multipart(part(headers=headers))).filename == filename


def test_names_are_unescaped_like_filenames() -> None:
    headers = 'Content-Disposition: form-data; name="a %22b\\" ☕"'.encode()
    assert fields_of(multipart(part(headers=headers))) == {'a "b" ☕': ["v"]}


# Malformed bodies: a 400 that says what is wrong


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", ["no line '--XyZ'"]),
        (b"name=value", ["no line '--XyZ'"]),
        (b"--XyZ", ["ends without the closing line '--XyZ--'"]),
        (b"--XyZ\r\n" + part(), ["ends without the closing line"]),
        (b"--XyZ\r\n" + part() + b"\r\n--XyZ\r\n" + part(), ["ends without the closing line"]),
        (b"--XyZjunk\r\n" + part() + b"\r\n--XyZ--", ["b'junk\\r\\n' instead of CRLF"]),
        (b"--XyZ\r\n" + part() + b"\r\n--XyZZ\r\n" + part() + b"\r\n--XyZ--", ["instead of CRLF"]),
        (b'--XyZ\nContent-Disposition: form-data; name="a"\n\nv\n--XyZ--\n', ["instead of CRLF"]),
        (b"--XyZ\r\nContent-Disposition: form-data; name=a\r\nv\r\n--XyZ--", ["no blank line"]),
        (multipart(b"\r\nno headers"), ["no Content-Disposition"]),
        (multipart(b""), ["no Content-Disposition"]),
        (multipart(part(headers=b"Content-Type: text/plain")), ["no Content-Disposition"]),
        (multipart(part(headers=b'Content-Disposition: attachment; name="a"')), ["'attachment'"]),
        (multipart(part(None)), ["part 1 has no name"]),
        (multipart(part(), part(headers=b"Content-Disposition: form-data")), ["part 2"]),
        (multipart(part(headers=b'no colon here; name="a"')), ["malformed header line"]),
        (multipart(part(headers=b"Bad Name: x")), ["malformed header line"]),
        (
            multipart(part(headers=b'Content-Disposition: form-data;\r\n name="a"')),
            ["malformed header line"],
        ),
        (
            multipart(part(headers=b"Content-Disposition: form-data; name=a\r\n" * 2)),
            ["repeats its Content-Disposition header"],
        ),
        (
            multipart(part(headers=b'Content-Disposition: form-data; name="a"; name="b"')),
            ["repeats its 'name' parameter"],
        ),
        (
            multipart(part(headers=b'Content-Disposition: form-data; name="unterminated')),
            ["malformed parameters", "Content-Disposition of part 1"],
        ),
        (
            multipart(part(headers=b"Content-Disposition: form-data; name")) + b"",
            ["malformed parameters"],
        ),
        (
            multipart(part(headers=b'Content-Disposition: form-data; name="a"junk')),
            ["malformed parameters"],
        ),
        (multipart(part("a", b"caf\xe9")), ["field 'a' is not valid UTF-8"]),
        (
            multipart(part(headers=b'Content-Disposition: form-data; name="caf\xe9"')),
            ["headers of part 1 are not valid UTF-8"],
        ),
        (
            multipart(part(headers=b"Content-Disposition: form-data; name=f; filename*=x.txt")),
            ["filename*", "not UTF-8''percent-encoded"],
        ),
        (
            multipart(part(headers=b"Content-Disposition: form-data; name=f; filename*=koi8-r''x")),
            ["not UTF-8''percent-encoded"],
        ),
        (
            multipart(
                part(headers=b"Content-Disposition: form-data; name=f; filename*=UTF-8''%E9")
            ),
            ["not valid UTF-8"],
        ),
    ],
)
def test_malformed_bodies_are_a_400(body: bytes, words: list[str]) -> None:
    error = assert_status(400, lambda: parse(body), "malformed", *words)
    assert len(str(error.message)) < 300


# Limits: a 413 that names the setting


def test_max_parts_counts_fields_and_files() -> None:
    body = multipart(part("a"), part("b", filename="b"), part("c"))
    assert parse(body, max_parts=3)
    assert_status(413, lambda: parse(body, max_parts=2), "more than 2 parts", "max_form_parts")
    assert_status(413, lambda: parse(body, max_parts=0), "max_form_parts")
    assert parse(b"--XyZ--", max_parts=0) == ({}, {})


def test_the_parts_limit_is_checked_before_a_malformed_part() -> None:
    body = multipart(part("a"), part(None))
    assert_status(413, lambda: parse(body, max_parts=1), "max_form_parts")


def test_max_fields_size_counts_field_values_not_files() -> None:
    body = multipart(
        part("a", b"x" * 60), part("b", b"y" * 40), part("f", b"z" * 999, filename="f")
    )
    assert parse(body, max_fields_size=100)[0] == {"a": ["x" * 60], "b": ["y" * 40]}
    assert_status(
        413,
        lambda: parse(body, max_fields_size=99),
        "more than 99 bytes",
        "max_form_fields_size",
    )


# The Content-Type header


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/form-data; boundary=XyZ", b"XyZ"),
        ('multipart/form-data; boundary="XyZ"', b"XyZ"),
        ('multipart/form-data; boundary="with space"', b"with space"),
        (
            "multipart/form-data;boundary=----WebKitFormBoundary7MA4YWxk",
            b"----WebKitFormBoundary7MA4YWxk",
        ),
        ("Multipart/Form-Data; charset=utf-8; BOUNDARY=abc'()+_,-./:=?", b"abc'()+_,-./:=?"),
        ("multipart/form-data; boundary=" + "b" * 70, b"b" * 70),
    ],
)
def test_boundary_from_content_type(header: str, boundary: bytes) -> None:
    assert parse_boundary(header) == boundary


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("multipart/form-data", ["needs a boundary"]),
        ("multipart/form-data; charset=utf-8", ["needs a boundary"]),
        ("multipart/form-data; boundary=", ["invalid multipart boundary ''"]),
        ('multipart/form-data; boundary=""', ["invalid multipart boundary"]),
        ("multipart/form-data; boundary=" + "b" * 71, ["1 to 70"]),
        ('multipart/form-data; boundary="ends with space "', ["not ending with a space"]),
        ("multipart/form-data; boundary=semi@colon", ["invalid multipart boundary"]),
        ("multipart/form-data; boundary=caf\xe9", ["invalid multipart boundary"]),
        ('multipart/form-data; boundary="unterminated', ["malformed parameters"]),
        ("multipart/form-data; boundary=a; boundary=b", ["repeats its 'boundary'"]),
    ],
)
def test_missing_or_invalid_boundary_is_a_400(header: str, words: list[str]) -> None:
    assert_status(400, lambda: parse_boundary(header), *words)


def test_parse_params() -> None:
    assert parse_params("Text/HTML", "x") == ("text/html", {})
    assert parse_params('a; K="v;\\"q\\"" ; e=; u = spaced value ;', "x") == (
        "a",
        {"k": 'v;"q"', "e": "", "u": "spaced value"},
    )


@pytest.mark.parametrize(
    "value",
    [
        "a; n=" + " " * 100_000 + '"',
        'a; n="' + "\\" * 100_000,
        "a; n" + " " * 100_000 + '"',
        'a; n="x"' + " " * 100_000 + "y",
        "a;" + " \t" * 50_000 + "n",
    ],
    ids=["spaces-quote", "backslashes", "name-spaces", "after-quote", "blanks"],
)
def test_parameters_are_parsed_in_linear_time(value: str) -> None:
    # Backtracking once made the first of these take minutes.
    started = time.perf_counter()
    assert_status(400, lambda: parse_params(value, "header"), "malformed parameters")
    assert time.perf_counter() - started < 1.0


# UploadedFile


def test_uploaded_file_is_small_and_prints_without_its_body() -> None:
    upload = UploadedFile("f", "a.txt", "text/plain", b"secret" * 1000)
    assert not hasattr(upload, "__dict__")
    assert repr(upload) == (
        "UploadedFile(name='f', filename='a.txt', content_type='text/plain', size=6000)"
    )
    assert upload.size == 6000


# The encoder (what TestClient sends)


def test_encode_then_parse_gives_back_fields_and_files() -> None:
    photo = bytes(range(256)) * 4
    body, content_type = encode_multipart(
        {"title": "Caf\u00e9", "tag": ["a", "b"], "n": 3},
        {
            "photo": ("me.png", photo, "image/png"),
            "docs": [b"raw", ('say "hi"\\.txt', b"text")],
            "kept": UploadedFile("ignored", "k.txt", "text/plain", b"k"),
        },
    )
    assert content_type.startswith("multipart/form-data; boundary=")
    fields, files = parse_multipart(
        body, parse_boundary(content_type), max_parts=10, max_fields_size=100
    )
    assert fields == {"title": ["Café"], "tag": ["a", "b"], "n": ["3"]}
    assert files == {
        "photo": [UploadedFile("photo", "me.png", "image/png", photo)],
        "docs": [
            UploadedFile("docs", "docs", "application/octet-stream", b"raw"),
            UploadedFile("docs", 'say "hi"\\.txt', "application/octet-stream", b"text"),
        ],
        "kept": [UploadedFile("kept", "k.txt", "text/plain", b"k")],
    }


def test_encode_picks_a_boundary_absent_from_the_content() -> None:
    body, content_type = encode_multipart({"a": "XyZ"}, boundary="XyZ")
    assert content_type == "multipart/form-data; boundary=XyZ"
    assert body == b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nXyZ\r\n--XyZ--\r\n'
    body, content_type = encode_multipart({}, {})
    assert body.startswith(b"--") and body.endswith(b"--\r\n")


def test_a_large_file_is_parsed_without_a_loop_per_byte() -> None:
    data = hashlib.sha256(b"seed").digest() * 65536  # 2 MiB
    body, content_type = encode_multipart(files={"big": ("big.bin", data)})
    boundary = parse_boundary(content_type)
    files = parse_multipart(body, boundary, max_parts=1, max_fields_size=0)[1]
    assert files["big"][0].body == data


# Properties: whatever the bytes, the answer is the fields and files, a 400 or a 413


_names = st.text(max_size=20).filter(lambda s: "%" not in s)


@settings(deadline=None)
@given(
    st.dictionaries(_names, st.lists(st.text(max_size=30), min_size=1, max_size=3), max_size=5),
    st.dictionaries(
        _names,
        st.lists(st.tuples(_names, st.binary(max_size=200)), min_size=1, max_size=3),
        max_size=5,
    ),
)
def test_encode_parse_round_trip(
    fields: dict[str, list[str]], files: dict[str, list[tuple[str, bytes]]]
) -> None:
    body, content_type = encode_multipart(fields, files)  # type: ignore[arg-type]
    parsed_fields, parsed_files = parse_multipart(
        body, parse_boundary(content_type), max_parts=1000, max_fields_size=10**6
    )
    assert parsed_fields == {k: v for k, v in fields.items() if v}
    assert {
        name: [(f.filename, f.body) for f in uploads] for name, uploads in parsed_files.items()
    } == files


def _only_400_or_413(read: Callable[[], Any]) -> None:
    try:
        read()
    except HTTPError as exc:
        assert exc.status in (400, 413), exc
        assert exc.message


@settings(deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_as_a_body(body: bytes) -> None:
    _only_400_or_413(lambda: parse(body, max_parts=3, max_fields_size=50))


# Pieces that reach deep into the parser, shuffled into bodies random bytes would not find.
_PIECES = [
    b"--XyZ",
    b"--XyZ--",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"Content-Disposition: form-data",
    b"content-disposition:attachment",
    b'; name="a"',
    b"; name=b",
    b'; filename="f.txt"',
    b"; filename*=UTF-8''%E2%82%AC",
    b"; filename*=bad",
    b"Content-Type: text/plain",
    b'"',
    b"\\",
    b";",
    b"=",
    b":",
    b" ",
    b"%22",
    b"\xff\xfe",
    "é".encode(),
]


@settings(deadline=None, max_examples=300)
@given(st.lists(st.sampled_from(_PIECES) | st.binary(max_size=8), max_size=40))
def test_any_arrangement_of_multipart_pieces(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    _only_400_or_413(lambda: parse(body, max_parts=4, max_fields_size=40))


@settings(deadline=None)
@given(st.text(max_size=120) | st.sampled_from(["multipart/form-data; boundary=", ";", '"']))
def test_any_content_type_header(header: str) -> None:
    _only_400_or_413(lambda: parse_boundary(header))
