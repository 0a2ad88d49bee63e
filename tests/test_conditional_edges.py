"""Second adversarial pass on conditional requests (RFC 9110 §8.8, §13): malformed entity tags
and dates that are not one HTTP-date."""

from __future__ import annotations

from typing import Any

import pytest
import tnetstring

from brubeck.compression import accepts_gzip, compressor
from brubeck.conditional import is_fresh, preconditions_hold
from brubeck.errors import HTTPError
from brubeck.protocol import parse
from brubeck.request import Request
from brubeck.response import Response

TAG = '"v7"'
MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
#: Later than MODIFIED, in each of the three forms a recipient must read (RFC 9110 §5.6.7).
LATER_IMF = "Mon, 07 Nov 1994 08:49:37 GMT"
LATER_850 = "Monday, 07-Nov-94 08:49:37 GMT"
LATER_ASCTIME = "Mon Nov  7 08:49:37 1994"
EARLIER_ASCTIME = "Sat Nov  5 08:49:37 1994"


# Entity tags: only well-formed ones take part in a comparison


@pytest.mark.parametrize(
    "field",
    [
        pytest.param('w/"v7"', id="lower-case-w"),
        pytest.param('junk"v7"', id="junk-before-the-quote"),
        pytest.param('"v1", w/"v7"', id="lower-case-w-in-a-list"),
        pytest.param('"v1", x"v7"', id="junk-in-a-list"),
    ],
)
def test_a_malformed_if_match_element_never_matches(field: str) -> None:
    """Was a bug. ``W/`` is case-sensitive and an entity-tag is a quoted string with nothing
    before it (RFC 9110 §8.8.3): ``w/"v7"`` is not the tag ``"v7"``, and the client that wrote
    it meant a weak tag, which never matches strongly (§13.1.1). The quoted part was picked
    out of the element and the update went ahead; it must be a 412."""
    assert preconditions_hold({b"if-match": field.encode()}, TAG) is False


@pytest.mark.parametrize(
    "field",
    [
        pytest.param('w/"v7"', id="lower-case-w"),
        pytest.param('abc"v7"', id="junk-before-the-quote"),
        pytest.param('"v7', id="missing-closing-quote"),
        pytest.param('"a, "v7"', id="unbalanced-quotes"),
    ],
)
def test_a_malformed_if_none_match_element_never_matches(field: str) -> None:
    """Was a bug (for the first two). Only an entity-tag (RFC 9110 §8.8.3) can match
    If-None-Match (§13.1.2); a malformed element costs the client a full answer, never a 304
    for a copy it did not name."""
    assert is_fresh({b"if-none-match": field.encode()}, TAG) is False


@pytest.mark.parametrize(
    "field",
    [
        '"v1", "v7"',
        '"a,b", "v7"',  # a comma inside a tag
        '  "v1"  ,W/"v7"  ',
        '"v1",,"v7"',  # empty list elements are allowed (RFC 9110 §5.6.1.2)
    ],
)
def test_well_formed_lists_still_match(field: str) -> None:
    assert is_fresh({b"if-none-match": field.encode()}, TAG) is True


def test_if_match_still_matches_a_strong_tag_in_a_list() -> None:
    assert preconditions_hold({b"if-match": b'W/"v7", "v1" , "v7"'}, TAG) is True
    assert preconditions_hold({b"if-match": b'"a,b"'}, '"a,b"') is True


def test_if_none_match_with_other_tags_is_not_the_wildcard() -> None:
    """``*`` is a whole field value, not a list element (RFC 9110 §13.1.2)."""
    assert is_fresh({b"if-none-match": b'"v1", *'}, TAG) is False


# Dates: one HTTP-date in one of its three forms, else the field is ignored


@pytest.mark.parametrize("later", [LATER_IMF, LATER_850, LATER_ASCTIME])
def test_the_three_date_forms_are_read(later: str) -> None:
    """RFC 9110 §5.6.7: a recipient reads IMF-fixdate, RFC 850 and asctime dates."""
    assert is_fresh({b"if-modified-since": later.encode()}, None, MODIFIED) is True
    assert preconditions_hold({b"if-unmodified-since": later.encode()}, None, MODIFIED) is True


def test_a_date_in_the_future_still_counts() -> None:
    """RFC 9110 §13.1.3 compares the dates and nothing else: a later date is a 304."""
    headers = {b"if-modified-since": b"Fri, 01 Jan 2100 00:00:00 GMT"}
    assert is_fresh(headers, None, MODIFIED) is True


def test_if_modified_since_is_ignored_when_if_none_match_is_present() -> None:
    """RFC 9110 §13.1.3: with If-None-Match, If-Modified-Since is not consulted either way."""
    stale = {b"if-none-match": b'"v1"', b"if-modified-since": LATER_IMF.encode()}
    assert is_fresh(stale, TAG, MODIFIED) is False
    assert is_fresh(stale, None, MODIFIED) is False


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([LATER_ASCTIME.encode(), LATER_ASCTIME.encode()], id="repeated-asctime"),
        pytest.param(f"{LATER_ASCTIME}, junk".encode(), id="asctime-then-junk"),
        pytest.param(f"{LATER_IMF} junk".encode(), id="imf-then-junk"),
        pytest.param(b"Mon, 07 Nov 1994", id="no-time"),
    ],
)
def test_if_modified_since_that_is_not_one_date_is_ignored(value: Any) -> None:
    """Was a bug. RFC 9110 §13.1.3: a field value that is not a valid HTTP-date is ignored.
    Two asctime dates (a repeated field, joined by a comma) or a date followed by junk were
    read as one date, and a 304 answered a request the RFC says to answer in full."""
    assert is_fresh({b"if-modified-since": value}, None, MODIFIED) is False


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([EARLIER_ASCTIME.encode(), LATER_ASCTIME.encode()], id="repeated-asctime"),
        pytest.param(f"{EARLIER_ASCTIME}, junk".encode(), id="asctime-then-junk"),
    ],
)
def test_if_unmodified_since_that_is_not_one_date_is_ignored(value: Any) -> None:
    """Was a bug. RFC 9110 §13.1.4: an invalid If-Unmodified-Since is ignored, so the update
    goes ahead; the first of two asctime dates was read, and the update refused with a 412."""
    assert preconditions_hold({b"if-unmodified-since": value}, None, MODIFIED) is True


# gzip: Accept-Encoding and bodies gzip must not touch


class _Request:
    def __init__(self, accept_encoding: bytes | None) -> None:
        self.raw_headers = {} if accept_encoding is None else {b"accept-encoding": accept_encoding}


BODY = b"<p>hello</p>" * 200


def _compress(accept_encoding: bytes | None, response: Response) -> Response:
    compress = compressor({"compress_response": True})
    assert compress is not None
    return compress(_Request(accept_encoding), response)


@pytest.mark.parametrize(
    ("value", "takes"),
    [
        (b"gzip;q=0.000", False),
        (b"GZIP", True),
        (b"x-gzip", True),
        (b"*;q=0", False),
        (b"identity;q=0", False),  # gzip not named: identity goes out all the same (below)
        (b"identity;q=0, *", True),
        (b"gzip ; Q = 0", False),
    ],
)
def test_accept_encoding_values(value: bytes, takes: bool) -> None:
    assert accepts_gzip(value.decode()) is takes


def test_identity_refused_and_gzip_not_offered_still_gets_identity() -> None:
    """RFC 9110 §12.5.3 lets the server disregard Accept-Encoding rather than answer 406: a
    page the client cannot otherwise read is better than an error."""
    response = _compress(b"identity;q=0, *;q=0", Response(BODY))
    assert response.status == 200 and response.body == BODY


def test_a_body_with_content_range_is_not_compressed() -> None:
    """Was a bug. Content-Range counts the bytes of the selected representation (RFC 9110
    §14.4); a handler's own ranged answer with a status other than 206 was gzipped, so the
    range named bytes the client never got. It goes out as written, with its Vary."""
    headers = [("Content-Type", "text/html"), ("Content-Range", "bytes 0-2399/5000")]
    response = _compress(b"gzip", Response(BODY, 200, headers))
    assert response.body == BODY
    assert ("Content-Encoding", "gzip") not in response.headers
    assert ("Vary", "Accept-Encoding") in response.headers


def test_a_handlers_content_encoding_identity_is_left_alone() -> None:
    """The handler's own Content-Encoding, even ``identity``, says the bytes are as it wants
    them: never a second coding on top."""
    headers = [("Content-Type", "text/html"), ("Content-Encoding", "identity")]
    response = _compress(b"gzip", Response(BODY, 200, headers))
    assert response.body == BODY


def _put(headers: dict[bytes, Any], method: bytes = b"PUT") -> Request:
    m2 = {b"METHOD": method, b"VERSION": b"HTTP/1.1", b"PATH": b"/d", b"URI": b"/d"}
    raw = b"S 1 /d %s0:," % tnetstring.dumps({**headers, **m2})
    return Request(parse(raw))


@pytest.mark.parametrize(
    ("if_none_match", "etag", "refused"),
    [
        (b"*", '"v1"', True),  # create only, and it exists
        (b"*", None, False),  # create only, and it does not exist yet
        (b'"v1"', '"v1"', True),
        (b'W/"v1"', '"v1"', True),  # If-None-Match compares weakly
        (b'"v0", "v2"', '"v1"', False),
    ],
)
def test_if_none_match_on_an_update_refuses_to_overwrite(
    if_none_match: bytes, etag: str | None, refused: bool
) -> None:
    """Was a bug. RFC 9110 §13.1.2: on a method other than GET and HEAD, an If-None-Match that
    names the current version (or is ``*`` and one exists) is a 412: "create only" with
    ``If-None-Match: *`` overwrote the existing resource, check_preconditions ignored it."""
    request = _put({b"if-none-match": if_none_match})
    if refused:
        with pytest.raises(HTTPError) as info:
            request.check_preconditions(etag)
        assert info.value.status == 412
    else:
        request.check_preconditions(etag)
    _put({b"if-none-match": if_none_match}, b"GET").check_preconditions(etag)  # GET: a 304's
