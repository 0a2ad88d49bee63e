"""Request handling, second round, at unit level: framing headers as Mongrel2 passes them on.

Mongrel2 1.12.2 accepts a Content-Length sent twice with the same value (it arrives as a
list), a list value (``21000, 21000``), a ``+`` sign (``+21000``) and a trailing space (kept
in the value), and a ``Transfer-Encoding: chunked`` sent twice (a list); it frames the body
by that length all the same (see tests/e2e/test_requests_edges.py). Tests whose docstring
starts with "Was a bug." pin a defect found here.
"""

from __future__ import annotations

from typing import Any

import pytest
import tnetstring

from brubeck.errors import HTTPError
from brubeck.multipart import parse_multipart
from brubeck.protocol import parse
from brubeck.request import BodyLimits, Request, framing_problem, parse_query

PATH = b"tmp/upload.AbC123"


def request_with(headers: dict[bytes, Any], body: bytes = b"", limit: int = 100) -> Request:
    m2 = {b"METHOD": b"POST", b"VERSION": b"HTTP/1.1", b"PATH": b"/p", b"URI": b"/p"}
    raw = b"S 1 /p %s%s" % (tnetstring.dumps({**headers, **m2}), tnetstring.dumps(body))
    return Request(parse(raw), BodyLimits(max_body_size=limit))


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param({b"content-length": [b"21000", b"21000"]}, id="content-length-twice"),
        pytest.param({b"content-length": b"21000, 21000"}, id="content-length-list"),
        pytest.param({b"content-length": b"+21000"}, id="content-length-plus"),
        pytest.param({b"transfer-encoding": [b"chunked", b"chunked"]}, id="chunked-twice"),
    ],
)
def test_odd_framing_is_refused_before_it_can_be_taken_for_an_upload_notice(framing):
    """Was a bug. ``uploads.announces_body`` reads a Content-Length only when it is one plain
    run of digits, and a Transfer-Encoding only when sent once, so Mongrel2's real start and
    done notices for these bodies were taken for ordinary requests with an empty body: the
    handler ran twice, two responses went to one request, and the file was never deleted.
    Now such framing is refused (400, then a close) before any of that, in
    ``app.handle_message``: ``framing_problem`` names it."""
    problem = framing_problem(framing)
    assert problem is not None and problem.status == 400


@pytest.mark.parametrize("length", [b"+101", b"101, 101"])
def test_a_content_length_that_is_not_one_number_is_a_400(length):
    """Was a bug. ``+101`` or ``101, 101`` passed a 100-byte ``max_body_size`` (read only
    when plain digits), and the handler ran on the 101-byte body Mongrel2 framed by it. RFC
    9112 §6.3: a length that is not one decimal number is a 400, answered with a close."""
    problem = framing_problem({b"content-length": length})
    assert problem is not None and problem.status == 400


def test_a_trailing_space_does_not_hide_a_length_over_the_limit():
    """Was a bug. Mongrel2 keeps a trailing space in the value (``101 ``): it passed."""
    request = request_with({b"content-length": b"101 "}, b"x" * 101)
    assert framing_problem(request.raw_headers) is None
    with pytest.raises(HTTPError) as info:
        request.check_content_length()
    assert info.value.status == 413


@pytest.mark.parametrize(("coding", "status"), [(b"gzip", 501), (b"gzip, chunked", 501)])
def test_a_transfer_coding_other_than_chunked_is_refused(coding, status):
    problem = framing_problem({b"transfer-encoding": coding})
    assert problem is not None and problem.status == status
    assert framing_problem({b"transfer-encoding": b"Chunked "}) is None


def test_check_content_length_already_refuses_plain_repeated_and_zero_padded_lengths():
    for length in (b"101", [b"101", b"101"], b"0101"):
        with pytest.raises(HTTPError) as info:
            request_with({b"content-length": length}, b"x" * 101).check_content_length()
        assert info.value.status == 413
    request_with({b"content-length": b"100"}, b"x" * 100).check_content_length()


# Behaviour worth keeping (WHATWG urlencoded rules; RFC 7578)


def test_url_encoded_bodies_follow_the_whatwg_parser():
    """Invalid percent escapes stay as sent, ``;`` is no separator, a name without ``=`` has
    a blank value and an empty name is kept; only invalid UTF-8 is refused."""
    assert parse_query(b"a=%zz&b=100%&c=%4&d=1;e=2&flag&=x&&", "form body") == {
        "a": ["%zz"],
        "b": ["100%"],
        "c": ["%4"],
        "d": ["1;e=2"],
        "flag": [""],
        "": ["x"],
    }


def test_a_nested_multipart_mixed_part_is_a_field_holding_its_raw_body():
    """RFC 7578 §4.3 deprecates multipart/mixed inside a form: such a part (no filename) is
    kept as one text field with the nested body as sent, not parsed and not dropped."""
    inner = b'--In\r\nContent-Disposition: file; filename="a.txt"\r\n\r\nONE\r\n--In--\r\n'
    body = (
        b'--Out\r\nContent-Disposition: form-data; name="files"\r\n'
        b"Content-Type: multipart/mixed; boundary=In\r\n\r\n" + inner + b"\r\n--Out--\r\n"
    )
    fields, files = parse_multipart(body, b"Out", max_parts=10, max_fields_size=1000)
    assert (fields, files) == ({"files": [inner.decode()]}, {})
