"""Security hardening through a real Mongrel2: login redirects, XSRF and hostile Cookie headers."""

from __future__ import annotations

import httpx
import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.auth import UserHandlingMixin, authenticated, web_authenticated
from brubeck.security import sign_value

SECRET = "e" * 32


class Profile(UserHandlingMixin, WebMessageHandler):
    def get_current_user(self):
        return self.get_cookie("user", secret=self.application.cookie_secret)

    @web_authenticated
    def get(self):
        return f"hello {self.current_user}"


class Api(Profile):
    @authenticated
    async def get(self):
        return {"user": self.current_user}


class Go(WebMessageHandler):
    def get(self, slug):
        return self.redirect(f"/tags/{slug}")


class Form(WebMessageHandler):
    def post(self):
        return "posted"


class Cookies(WebMessageHandler):
    def get(self):
        return {"cookies": self.request.cookies, "user": self.get_cookie("user", secret=SECRET)}


@pytest.fixture(scope="module")
def site(serve_module):
    app = Brubeck(
        handler_tuples=[
            (r"^/p.*$", Profile),
            (r"^/go/(?P<slug>.+)$", Go),
            (r"^/form$", Form),
            (r"^/cookies$", Cookies),
            (r"^/api$", Api),
        ],
        cookie_secret=SECRET,
        login_url="/login",
        xsrf_cookies=True,
        www_authenticate='Bearer realm="api"',
    )

    @app.add_route(r"^/fn$", method=["POST"])
    def fn(application, message):
        return "function posted"

    return serve_module(app)


def test_login_redirect_through_mongrel2(site):
    """An anonymous browser is sent to the login page with ``next``; a signed user gets in."""
    response = httpx.get(f"{site.url}/profile?tab=1")
    assert response.status_code == 302
    assert response.headers["location"] == "/login?next=%2Fprofile%3Ftab%3D1"
    good = sign_value(SECRET, "user", "ann")
    assert httpx.get(f"{site.url}/profile", cookies={"user": good}).text == "hello ann"


def test_an_api_401_carries_the_challenge_through_mongrel2(site):
    """RFC 9110: a 401 names how to authenticate (the ``www_authenticate`` setting)."""
    response = httpx.get(f"{site.url}/api")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    good = sign_value(SECRET, "user", "ann")
    assert httpx.get(f"{site.url}/api", cookies={"user": good}).json() == {"user": "ann"}


def test_redirect_to_a_non_ascii_slug(site):
    """Was a bug (also in the unit tests): a redirect to a path built from a decoded slug
    (``/tags/☃``, reached as ``/go/%E2%98%83``) is a 500 instead of a 302 whose Location is
    percent-encoded UTF-8."""
    response = httpx.get(f"{site.url}/go/%E2%98%83")
    assert response.status_code == 302
    assert response.headers["location"] == "/tags/%E2%98%83"


def test_xsrf_is_enforced_for_a_class_route(site):
    """A cross-site POST (no token) to a handler class is refused through Mongrel2."""
    assert httpx.post(f"{site.url}/form", data={"a": "1"}).status_code == 403


def test_xsrf_is_enforced_for_a_function_route(site):
    """Was a bug (also in the unit tests): the same cross-site POST to a function route passed."""
    response = httpx.post(f"{site.url}/fn", data={"a": "1"})
    assert response.status_code == 403


def test_hostile_cookie_headers_do_not_break_the_handler(site, raw_http):
    """Odd Cookie headers that reach the app through Mongrel2 (two headers, junk pairs,
    Latin-1 bytes, a forged signed value) give a 200 with the junk skipped or kept as text."""
    forged = "1.\u00e9\u00e9.\u00e9\u00e9"
    conn = raw_http(site)
    conn.request(
        "GET",
        "/cookies",
        headers=[("Cookie", f"a=1; ;=x; junk; user={forged}"), ("Cookie", "a=2; b=\u00ff")],
    )
    response = conn.read_response()
    assert response.status == 200
    body = httpx.Response(200, content=response.body).json()
    assert body["user"] is None
    assert body["cookies"]["a"] == "1"
    assert body["cookies"]["b"] == "\u00ff"
