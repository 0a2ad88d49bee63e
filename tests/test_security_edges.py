"""Security, second round: password hashing, the Cookie parser and redirect targets.

The tests whose docstring starts "Was a bug." fail until their fix; the others pin behaviour
that keeps an attack out and had no test yet. HTTP-visible findings are tested through a real
Mongrel2 in tests/e2e/test_security_edges.py.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.cookies import parse_cookies
from brubeck.security import check_password, hash_password
from brubeck.testing import TestClient


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# Password hashing


def test_check_password_verifies_a_hash_made_with_a_higher_cost():
    """Was a bug. ``hash_password`` stores scrypt's parameters in the hash "so they can be
    raised later", but ``check_password`` calls ``hashlib.scrypt`` without ``maxmem``, and
    OpenSSL's default limit (32 MiB) refuses any N >= 2**15 with r=8. A hash made at a higher
    cost (OWASP's N=2**17, or one migrated from another system) is then a ValueError, which
    ``check_password`` turns into False: the right password is refused, and the cost can never be
    raised. It should verify (pass ``maxmem`` from n and r, with a sane upper bound)."""
    salt = os.urandom(16)
    n, r, p = 2**15, 8, 1
    digest = hashlib.scrypt(b"correct horse", salt=salt, n=n, r=r, p=p, dklen=32, maxmem=2**26)
    stored = f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"
    assert check_password("correct horse", stored)
    assert not check_password("wrong horse", stored)


def test_hash_password_cost_meets_the_owasp_minimum():
    """Was a bug. ``hash_password`` uses scrypt N=2**14, r=8, p=1. The OWASP Password Storage
    Cheat Sheet gives as the minimum N=2**17, r=8, p=1, or an equivalent trade of memory for
    parallelism (down to N=2**14, r=8, p=5; N=2**13, r=8, p=10). Brubeck's default is five
    times cheaper than the weakest of them, so an offline guess against a stolen hash costs
    five times less than OWASP's floor. The stored parameters should reach it (Django's scrypt
    hasher uses N=2**14, r=8, p=5)."""
    scheme, n, r, p, _salt, _digest = hash_password("correct horse").split("$")
    assert scheme == "scrypt"
    n, r, p = int(n), int(r), int(p)
    assert r >= 8
    assert n * r * p >= 2**14 * 8 * 5


# The Cookie header


@pytest.mark.parametrize("junk", ["\xa0", "\x85"])
def test_cookie_names_are_trimmed_of_spaces_and_tabs_only(junk):
    """Was a bug. ``parse_cookies`` trims names with ``str.strip()``, which also removes
    NBSP (byte 0xA0) and NEL (0x85) from the Latin-1 text of the header. RFC 6265
    §5.2 trims only spaces and tabs: to the browser ``\\xa0__Host-sid`` is another cookie,
    one without the ``__Host-`` rules, which a sibling subdomain may set for the whole
    domain. Brubeck reads it as ``__Host-sid``, so the planted value passes for the
    host-only, Secure one: the cookie-prefix bypass PortSwigger published (Django and ASP.NET
    were hit the same way). Only SP and HTAB should be trimmed from a name."""
    parsed = parse_cookies(f"{junk}__Host-sid=planted; {junk}sid=planted; theme=dark")
    assert "__Host-sid" not in parsed
    assert "sid" not in parsed
    assert parsed["theme"] == "dark"
    assert parse_cookies(" \t__Host-sid=real") == {"__Host-sid": "real"}


# Redirect targets


class Redirect(WebMessageHandler):
    def get(self):
        return self.redirect(self.get_argument("to", strip=False))


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/\\evil.example", "/%5Cevil.example"),
        ("\\\\evil.example", "%5C%5Cevil.example"),
        ("/\t/evil.example", "/%09/evil.example"),
        ("/\n/evil.example", "/%0A/evil.example"),
        ("/\r/evil.example", "/%0D/evil.example"),
        (" //evil.example", "%20//evil.example"),
        ("java\tscript:alert(1)", "java%09script:alert(1)"),
    ],
)
async def test_redirect_never_sends_what_a_browser_reads_as_another_host(target, location):
    """Browsers read ``\\`` as ``/`` and drop tabs, line breaks and leading spaces from a
    Location (WHATWG URL), so ``/\\evil.example`` or ``/\\t/evil.example`` built from a slug
    would send the user to evil.example. ``redirect`` percent-encodes them: the URL stays a
    path on this site."""
    async with TestClient(Brubeck(handler_tuples=[(r"^/r$", Redirect)])) as client:
        response = await client.get("/r", params={"to": target})
        assert response.status_code == 302
        assert response.headers["location"] == location
