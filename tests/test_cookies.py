from datetime import UTC, datetime

import pytest

from brubeck.cookies import format_set_cookie, parse_cookies


def test_parse_skips_malformed_pairs_and_unquotes():
    assert parse_cookies('a=1; junk; =x; b="two"; a=3') == {"a": "1", "b": "two"}


def test_format_defaults():
    assert format_set_cookie("sid", "abc") == "sid=abc; Path=/; SameSite=Lax"


def test_format_all_attributes():
    line = format_set_cookie(
        "sid",
        "abc",
        max_age=60,
        expires=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        path="/app",
        domain="example.com",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    assert line == (
        "sid=abc; Max-Age=60; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Path=/app; "
        "Domain=example.com; SameSite=Strict; Secure; HttpOnly"
    )


def test_expires_from_timestamp():
    assert "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in format_set_cookie("a", "", expires=0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("bad name", "v"),
        ("semi;colon", "v"),
        ("", "v"),
        ("n", "has space"),
        ("n", "semi;colon"),
        ("n", "line\r\nbreak"),
        ("n", "zoë"),
    ],
)
def test_refuses_what_a_cookie_cannot_carry(name, value):
    with pytest.raises(ValueError):
        format_set_cookie(name, value)


def test_samesite_none_requires_secure():
    with pytest.raises(ValueError, match="secure"):
        format_set_cookie("a", "b", samesite="None")
    assert "SameSite=None; Secure" in format_set_cookie("a", "b", samesite="None", secure=True)
