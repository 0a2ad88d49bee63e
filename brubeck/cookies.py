"""Cookie headers: parse what the client sent, format what the handler sets (RFC 6265).

Rules of this module: a cookie name is an RFC 9110 token and a value is RFC 6265
cookie-octets; anything else is refused with a ValueError rather than escaped in a way a
browser would not undo. Signed values (``security.sign_value``) are always valid octets.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_OCTETS = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_SAMESITE = {"strict": "Strict", "lax": "Lax", "none": "None"}


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a Cookie header; a malformed pair is skipped, as browsers do; first one wins."""
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        # Spaces and tabs only (RFC 6265 5.2): str.strip() also takes U+00A0 and U+0085, so
        # "\xa0__Host-sid", which a sibling subdomain may set, would pass for "__Host-sid".
        name = name.strip(" \t")
        if not sep or not name:
            continue
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies


def is_cookie_name(name: str) -> bool:
    """Whether ``name`` is a token, so that a Set-Cookie header can name it."""
    return _TOKEN.fullmatch(name) is not None


def format_set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    expires: datetime | int | float | None = None,
    path: str | None = "/",
    domain: str | None = None,
    secure: bool = False,
    httponly: bool = False,
    samesite: str | None = "Lax",
) -> str:
    """The value of one Set-Cookie header line.

    ``expires`` is a datetime or a Unix timestamp; ``samesite`` is Strict, Lax, None or None
    (omit); ``samesite="None"`` requires ``secure=True``, as browsers do.
    """
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid cookie name {name!r}: use letters, digits and !#$%&'*+-.^_`|~")
    if not _OCTETS.fullmatch(value):
        raise ValueError(
            f"cookie {name!r} value {value!r} has characters a cookie cannot carry "
            "(space, quote, comma, semicolon, backslash, non-ASCII): URL-encode it or sign it"
        )
    parts = [f"{name}={value}"]
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    if expires is not None:
        if not isinstance(expires, datetime):
            expires = datetime.fromtimestamp(float(expires), UTC)
        elif expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        parts.append(f"Expires={format_datetime(expires.astimezone(UTC), usegmt=True)}")
    for attr, text in (("Path", path), ("Domain", domain)):
        if text:
            if not _OCTETS.fullmatch(text) or ";" in text:
                raise ValueError(f"invalid cookie {attr.lower()} {text!r}")
            parts.append(f"{attr}={text}")
    if samesite is not None:
        canonical = _SAMESITE.get(samesite.lower())
        if canonical is None:
            raise ValueError(f"samesite must be 'Strict', 'Lax' or 'None', got {samesite!r}")
        if canonical == "None" and not secure:
            raise ValueError("samesite='None' cookies must also be secure=True")
        parts.append(f"SameSite={canonical}")
    if secure:
        parts.append("Secure")
    if httponly:
        parts.append("HttpOnly")
    return "; ".join(parts)
