"""Security, second round, through a real Mongrel2: XSRF settings and token masking, cookie
prefixes, and the Host header.

The tests whose docstring starts "Was a bug." fail until their fix.
"""

from __future__ import annotations

import re

import httpx
import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.auth import UserHandlingMixin, web_authenticated
from brubeck.static import StaticFileHandler

SECRET = "w" * 32
INDEX = "index.html"
PADDING = "<p>" + "lorem ipsum dolor sit amet " * 80 + "</p>"  # over compress_min_size


class Form(WebMessageHandler):
    def get(self):
        form = f"<form method=post>{self.xsrf_form_html()}</form>"
        return f"<html><body>{form}{PADDING}</body></html>"

    def post(self):
        return "posted"


class Cookies(WebMessageHandler):
    def get(self):
        return {"host_sid": self.get_cookie("__Host-sid"), "names": sorted(self.request.cookies)}


class Logout(WebMessageHandler):
    def get(self):
        self.delete_cookie("__host-sid")
        self.delete_cookie("__SECURE-token")
        return "bye"


class Profile(UserHandlingMixin, WebMessageHandler):
    def get_current_user(self):
        return self.get_cookie("user", secret=self.application.cookie_secret)

    @web_authenticated
    def get(self):
        return f"hello {self.current_user}"


@pytest.fixture(scope="module")
def late(serve_module):
    """An app whose settings are completed after it was built (a config file read later)."""
    app = Brubeck(handler_tuples=[(r"^/form$", Form)])

    @app.add_route(r"^/transfer$", method=["POST"])
    def transfer(application, message):
        return "money sent"

    app.settings.update({"xsrf_cookies": True, "cookie_secret": SECRET})
    return serve_module(app)


@pytest.fixture(scope="module")
def site(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    (root / "docs").mkdir()
    (root / "docs" / INDEX).write_text("docs")
    app = Brubeck(
        handler_tuples=[
            (r"^/form$", Form),
            (r"^/cookies$", Cookies),
            (r"^/logout$", Logout),
            (r"^/me$", Profile),
            (r"^/files/(.*)$", StaticFileHandler, {"root": str(root), "default_filename": INDEX}),
        ],
        cookie_secret=SECRET,
        login_url="/login",
        xsrf_cookies=True,
        compress_response=True,
    )
    return serve_module(app)


def _token(page: str) -> str:
    return re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)


# XSRF


def test_xsrf_setting_given_after_the_app_was_built_is_enforced(late):
    """Was a bug. docs/cookies.md says to turn on ``xsrf_cookies`` "in the app's settings", and
    docs/settings.md says handlers read ``settings``, a plain dict. But the app copies the
    setting into ``app.xsrf_cookies`` once, in ``__init__``: an app that fills its settings
    after construction (``app.settings.update(config)``) believes it is protected, and every
    cross-site POST still goes through, to handler classes and function routes alike. (The
    other settings read late, ``login_url``, ``debug``, ``compress_response``, do work.) It
    should fail closed: read the setting when a request is checked, or refuse the change."""
    form = httpx.post(f"{late.url}/form", data={"a": "1"})
    assert form.status_code == 403
    transfer = httpx.post(f"{late.url}/transfer", data={"to": "mallory"})
    assert transfer.status_code == 403
    assert "money sent" not in transfer.text


def test_a_gzipped_page_does_not_carry_the_raw_xsrf_secret(site):
    """Was a bug. With ``compress_response`` on, a page holding ``xsrf_form_html()`` is gzipped
    with the ``_xsrf`` cookie's value written verbatim in it, the same on every response. That is
    what BREACH (CVE-2013-3587) recovers, byte by byte, from the compressed sizes of pages that
    also reflect attacker input; with the token, a cross-site form passes the double-submit
    check. Tornado 3.2.2 (a security release) and Django mask the token with a fresh random
    pad per response. The form field should differ on each page, never hold the cookie value
    as is, and still be accepted."""
    with httpx.Client(base_url=site.url) as client:
        first = client.get("/form")
        assert first.headers.get("content-encoding") == "gzip"
        cookie = client.cookies["_xsrf"]
        second = client.get("/form")
        tokens = [_token(first.text), _token(second.text)]
        assert cookie not in first.text and cookie not in second.text
        assert tokens[0] != tokens[1]
        for token in tokens:
            assert client.post("/form", data={"_xsrf": token}).text == "posted"


# Cookie prefixes


def test_a_planted_cookie_with_an_nbsp_does_not_pass_for_a_host_cookie(site, raw_http):
    """Was a bug. A ``__Host-`` cookie can only be set by this host, over HTTPS. A cookie named
    ``<NBSP>__Host-sid`` has no such rules: a sibling subdomain may set it for the whole
    domain, and the browser sends both. Brubeck strips the NBSP (byte 0xA0, Python's
    ``str.strip``) and, the planted cookie coming first, hands its value to the handler as
    ``__Host-sid``: session fixation past the prefix (PortSwigger, cookie prefix bypass).
    RFC 6265 §5.2 trims only spaces and tabs from a name."""
    conn = raw_http(site)
    conn.request("GET", "/cookies", headers=[("Cookie", "\xa0__Host-sid=planted; __Host-sid=real")])
    response = conn.read_response()
    assert response.status == 200
    body = httpx.Response(200, content=response.body).json()
    assert body["host_sid"] == "real"


def test_deleting_a_prefixed_cookie_of_any_case_is_secure(site):
    """Was a bug. Browsers match the ``__Secure-`` and ``__Host-`` prefixes case-insensitively
    (RFC 6265bis §5.7, "a case-insensitive match"; Chrome and Firefox do), and ignore a
    Set-Cookie of such a name without ``Secure``. ``delete_cookie`` adds ``Secure`` only
    for the exact spelling, so ``delete_cookie("__host-sid")`` sends a deletion the browser
    drops: the session cookie outlives the logout. The first round fixed the exact-case
    names only."""
    response = httpx.get(f"{site.url}/logout")
    lines = response.headers.get_list("set-cookie")
    assert len(lines) == 2
    for line in lines:
        assert "Secure" in [part.strip() for part in line.split(";")], line


# The Host header


def test_a_hostile_host_header_never_reaches_a_location(site):
    """Nothing builds an absolute URL from the client's ``Host``: the login redirect and the
    directory redirect of ``StaticFileHandler`` stay relative, so a forged Host (or a cache
    keyed without it) cannot send users elsewhere."""
    headers = {"Host": "evil.example"}
    login = httpx.get(f"{site.url}/me", headers=headers)
    assert login.status_code == 302
    assert login.headers["location"] == "/login?next=%2Fme"
    directory = httpx.get(f"{site.url}/files/docs", headers=headers)
    assert directory.status_code == 301
    assert directory.headers["location"] == "/files/docs/"
