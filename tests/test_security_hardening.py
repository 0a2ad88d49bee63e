"""Security hardening: cookies, signed cookies, XSRF, login redirects and ``redirect()``.

Each test states the behaviour a user of a serious web framework relies on. Those marked
"Was a bug" failed before their fix (see the docstrings).
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
import warnings
from datetime import datetime, timedelta, timezone

import pytest

from brubeck import Brubeck, JSONMessageHandler, WebMessageHandler
from brubeck.auth import UserHandlingMixin, authenticated, web_authenticated
from brubeck.cookies import format_set_cookie, parse_cookies
from brubeck.security import sign_value, unmask_xsrf_token, verify_value
from brubeck.testing import TestClient

SECRET = "r" * 32
OTHER = "q" * 32


# Handlers shared by the tests below


class Echo(JSONMessageHandler):
    """The cookies as the handler sees them, and the signed ``sid`` verified."""

    def get(self):
        return {
            "cookies": self.request.cookies,
            "sid": self.get_cookie("sid", secret=SECRET),
        }


class Redirect(WebMessageHandler):
    def get(self):
        return self.redirect(self.get_argument("to", strip=False))


class SetBad(WebMessageHandler):
    """Sets a cookie from the query: every piece is client input."""

    def get(self):
        self.set_cookie(
            self.get_argument("name", strip=False),
            self.get_argument("value", strip=False),
            path=self.get_argument("path", "/", strip=False),
            domain=self.get_argument("domain", None, strip=False),
        )
        return "set"


class Form(WebMessageHandler):
    def get(self):
        return self.xsrf_form_html()

    def post(self):
        return "posted"

    def put(self):
        return "put"

    def patch(self):
        return "patched"

    def delete(self):
        return "deleted"


class DeletePrefixed(WebMessageHandler):
    def get(self):
        self.delete_cookie("__Host-sid")
        self.delete_cookie("__Secure-token")
        return "gone"


class DeleteAll(WebMessageHandler):
    def get(self):
        self.delete_cookies()
        return "gone"


def app_with(*routes, **settings):
    return Brubeck(handler_tuples=list(routes), **settings)


# Redirects


async def test_redirect_refuses_a_location_with_a_line_break():
    """A CR/LF in a redirect target (client input) must not split the response: no injected
    Set-Cookie or header reaches the client; the line break stays inside the URL, encoded."""
    async with TestClient(app_with((r"^/r$", Redirect))) as client:
        response = await client.get("/r", params={"to": "/ok\r\nSet-Cookie: admin=1"})
        assert response.get_all("set-cookie") == []
        assert response.headers.get("location") == "/ok%0D%0ASet-Cookie:%20admin=1"
        assert client.cookies == {}


async def test_redirect_to_a_non_ascii_url_is_percent_encoded():
    """Was a bug: ``redirect()`` to a URL with non-ASCII characters (a slug like ``/café`` or
    ``/☃``) must send a Location the browser can follow: the UTF-8 bytes percent-encoded, as
    Django's redirects do. Now ``/☃`` is a 500 (the head cannot be encoded as Latin-1) and
    ``/café`` goes out as the single Latin-1 byte 0xE9, which no browser reads as ``é``."""
    async with TestClient(app_with((r"^/r$", Redirect))) as client:
        snowman = await client.get("/r", params={"to": "/\u2603"})
        assert snowman.status_code == 302
        assert snowman.headers["location"] == "/%E2%98%83"
        cafe = await client.get("/r", params={"to": "/caf\u00e9?q=\u00e9"})
        assert cafe.status_code == 302
        assert cafe.headers["location"] == "/caf%C3%A9?q=%C3%A9"


async def test_redirect_keeps_cookies_set_before_it():
    """A login that sets its session cookie and then redirects must send both."""

    class Login(WebMessageHandler):
        def post(self):
            self.set_cookie("sid", "abc", httponly=True)
            return self.redirect("/home")

    async with TestClient(app_with((r"^/login$", Login))) as client:
        response = await client.post("/login")
        assert response.status_code == 302
        assert response.headers["location"] == "/home"
        assert response.get_all("set-cookie") == ["sid=abc; Path=/; SameSite=Lax; HttpOnly"]
        assert response.content == b""


async def test_redirect_needs_a_3xx_status():
    """``redirect(url, status=200)`` is a programming error, not a 200 with a Location."""

    class Bad(WebMessageHandler):
        def get(self):
            return self.redirect("/x", status=200)

    async with TestClient(app_with((r"^/$", Bad))) as client:
        response = await client.get("/")
        assert response.status_code == 500
        assert response.headers.get("location") is None


# Header injection through Set-Cookie


@pytest.mark.parametrize(
    "query",
    [
        {"name": "a=b", "value": "1"},
        {"name": "sid\r\nX-Evil: 1", "value": "1"},
        {"name": "sid", "value": "1\r\nX-Evil: 1"},
        {"name": "sid", "value": "1; Domain=evil.example"},
        {"name": "sid", "value": "1", "path": "/; Domain=evil.example"},
        {"name": "sid", "value": "1", "path": "/\r\nX-Evil: 1"},
        {"name": "sid", "value": "1", "domain": "example.com; Secure"},
        {"name": "sid", "value": "1", "domain": "example.com\nX-Evil: 1"},
    ],
)
async def test_set_cookie_from_client_input_cannot_inject(query):
    """A cookie name, value, path or domain that would add attributes or header lines is
    refused (a 500 from the ValueError), never written out."""
    async with TestClient(app_with((r"^/set$", SetBad))) as client:
        response = await client.get("/set", params=query)
        assert response.status_code == 500
        assert response.get_all("set-cookie") == []
        assert response.headers.get("x-evil") is None


def test_expires_in_another_time_zone_is_sent_in_gmt():
    """An aware ``expires`` in another zone is converted, not printed with the wrong hour."""
    paris = timezone(timedelta(hours=2))
    line = format_set_cookie("a", "b", expires=datetime(2030, 6, 1, 12, 0, tzinfo=paris))
    assert "Expires=Sat, 01 Jun 2030 10:00:00 GMT" in line


def test_negative_max_age_still_expires():
    """``max_age`` of 0 or less tells the browser to drop the cookie at once (RFC 6265)."""
    assert "Max-Age=0" in format_set_cookie("a", "", max_age=0)
    assert "Max-Age=-1" in format_set_cookie("a", "", max_age=-1)


# Deleting cookies


async def test_delete_cookie_expires_it_on_the_same_path():
    """``delete_cookie`` sends an empty value, Max-Age=0 and an Expires in the past."""

    class Del(WebMessageHandler):
        def get(self):
            self.delete_cookie("sid", path="/app")
            return "gone"

    async with TestClient(app_with((r"^/$", Del))) as client:
        (line,) = (await client.get("/")).get_all("set-cookie")
        assert line.startswith("sid=; ")
        assert "Max-Age=0" in line
        assert "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in line
        assert "Path=/app" in line


async def test_delete_cookie_of_a_prefixed_cookie_is_secure():
    """Was a bug: browsers ignore a Set-Cookie for a ``__Secure-`` or ``__Host-`` name that lacks
    the ``Secure`` attribute, so ``delete_cookie("__Host-sid")`` must send ``Secure`` (as
    Django's ``delete_cookie`` does) or the session cookie is never removed (a logout that
    does not log out). Now the deletion line has no ``Secure``."""
    async with TestClient(app_with((r"^/$", DeletePrefixed))) as client:
        lines = (await client.get("/")).get_all("set-cookie")
        assert len(lines) == 2
        for line in lines:
            attributes = [part.strip() for part in line.split(";")]
            assert "Secure" in attributes, line
        host_line = next(line for line in lines if line.startswith("__Host-sid="))
        assert "Path=/" in host_line and "Domain=" not in host_line


async def test_delete_cookies_skips_names_no_set_cookie_can_carry():
    """``delete_cookies`` expires each cookie the client sent, and a name that is not a
    token (sent by a hostile client) is skipped rather than making the whole answer a 500."""
    async with TestClient(app_with((r"^/$", DeleteAll))) as client:
        response = await client.get("/", headers={"cookie": "a=1; b c=2; d\x7f=3; e=4"})
        assert response.status_code == 200
        names = sorted(line.split("=", 1)[0] for line in response.get_all("set-cookie"))
        assert names == ["a", "e"]


# Parsing the Cookie header


@pytest.mark.parametrize(
    "header",
    [
        "",
        ";;;",
        "=",
        "=x",
        "novalue",
        "a",
        "a=1;;b",
        '"',
        'sid="',
        "\x00=\x00",
        "sid=\xff\xfe",
        "a=" + "x" * 10_000,
        "sid=1.\xe9.\xe9",  # a signed-looking value with non-ASCII parts
        "sid=1..",
        "sid=1.e30.e30",
    ],
)
async def test_a_malformed_cookie_header_never_fails_the_request(header):
    """Garbage in the Cookie header is skipped or kept as a string: the handler runs, and a
    signed read of it gives None instead of a 500."""
    async with TestClient(app_with((r"^/$", Echo))) as client:
        response = await client.get("/", headers={"cookie": header})
        assert response.status_code == 200
        assert response.json()["sid"] is None


async def test_first_cookie_wins_across_several_cookie_headers():
    """With two Cookie headers, the first value of a name wins (the browser sends the most
    specific path first), and names only in the second header are kept."""
    async with TestClient(app_with((r"^/$", Echo))) as client:
        response = await client.get("/", headers={"cookie": ["sid=first; a=1", "sid=2; b=2"]})
        assert response.json()["cookies"] == {"sid": "first", "a": "1", "b": "2"}


def test_parse_cookies_unquotes_only_a_fully_quoted_value():
    """A lone quote is part of the value; only a matching pair is removed."""
    assert parse_cookies('a="x; b=y"') == {"a": '"x', "b": 'y"'}
    assert parse_cookies('a=""') == {"a": ""}


# Signed cookies


async def test_a_signed_cookie_replayed_under_another_name_is_refused():
    """A value signed for ``theme`` (which a user may control) is worthless as ``sid``."""
    forged = sign_value(SECRET, "theme", {"id": 1})
    async with TestClient(app_with((r"^/$", Echo))) as client:
        response = await client.get("/", headers={"cookie": f"sid={forged}"})
        assert response.json()["sid"] is None


async def test_a_signed_cookie_expires_after_31_days_by_default():
    """``get_cookie(secret=…)`` without ``max_age`` refuses values older than 31 days."""
    old = sign_value(SECRET, "sid", "ann", now=time.time() - 32 * 24 * 3600)
    recent = sign_value(SECRET, "sid", "ann", now=time.time() - 30 * 24 * 3600)
    async with TestClient(app_with((r"^/$", Echo))) as client:
        assert (await client.get("/", headers={"cookie": f"sid={old}"})).json()["sid"] is None
        assert (await client.get("/", headers={"cookie": f"sid={recent}"})).json()["sid"] == "ann"


async def test_a_quoted_signed_cookie_still_verifies():
    """Some clients quote cookie values; the quotes are not part of the signed value."""
    signed = sign_value(SECRET, "sid", "ann")
    async with TestClient(app_with((r"^/$", Echo))) as client:
        response = await client.get("/", headers={"cookie": f'sid="{signed}"'})
        assert response.json()["sid"] == "ann"


def test_signature_is_not_malleable():
    """Another spelling of the same signature bytes (padding, the unused low bits of the
    last base64 character) is refused: a signature has exactly one accepted form."""
    signed = sign_value(SECRET, "sid", "ann")
    head, sig = signed.rsplit(".", 1)
    assert verify_value(SECRET, "sid", signed) == "ann"
    assert verify_value(SECRET, "sid", f"{head}.{sig}=") is None
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = last[last.index(sig[-1]) ^ 1]  # same top 4 bits: decodes to the same 32 bytes
    assert verify_value(SECRET, "sid", f"{head}.{sig[:-1]}{twin}") is None
    assert verify_value(SECRET, "sid", f"{head}.{sig}.extra") is None


def test_a_payload_with_an_extra_field_is_refused_even_when_signed():
    """A value whose payload is not ``[name, value, issued]`` is refused, not unpacked."""
    import base64
    import hashlib
    import hmac

    payload = base64.urlsafe_b64encode(b'["sid","ann",1,2]').rstrip(b"=").decode()
    mac = hmac.new(SECRET.encode(), f"1.sid.{payload}".encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert verify_value(SECRET, "sid", f"1.{payload}.{signature}") is None


# Authentication


class Profile(UserHandlingMixin, WebMessageHandler):
    """The pattern docs/templates-and-auth.md shows."""

    def get_current_user(self):
        return self.get_cookie("user", secret=self.application.cookie_secret)

    @web_authenticated
    def get(self):
        return f"hello {self.current_user}"


class ProfileApi(Profile):
    @authenticated
    def get(self):
        return f"data of {self.current_user}"


async def test_no_cookie_secret_does_not_trust_an_unsigned_user_cookie():
    """Was a bug: the documented ``get_current_user`` reads
    ``get_cookie("user", secret=self.application.cookie_secret)``. When the app has no
    ``cookie_secret`` setting, that property is None, ``get_cookie`` treats it as "not
    signed" and returns whatever the client sent: ``Cookie: user=admin`` logs anyone in as
    admin. A missing secret must fail closed (an error, as Tornado's ``require_setting``
    does), never accept unsigned values."""
    app = app_with((r"^/api$", ProfileApi), login_url="/login")  # cookie_secret forgotten
    async with TestClient(app) as client:
        response = await client.get("/api", headers={"cookie": "user=admin"})
        assert response.status_code != 200
        assert "admin" not in response.text


async def test_a_forged_user_cookie_gets_the_login_redirect():
    """With a secret, an unsigned or foreign-key user cookie is nobody: a browser is sent
    to the login page."""
    app = app_with((r"^/me$", Profile), cookie_secret=SECRET, login_url="/login")
    foreign = sign_value(OTHER, "user", "admin")
    async with TestClient(app) as client:
        for cookie in ("user=admin", f"user={foreign}"):
            response = await client.get("/me", headers={"cookie": cookie})
            assert response.status_code == 302
            assert response.headers["location"] == "/login?next=%2Fme"
        good = sign_value(SECRET, "user", "ann")
        assert (await client.get("/me", headers={"cookie": f"user={good}"})).text == "hello ann"


async def test_an_async_get_current_user_is_not_a_logged_in_user():
    """Was a bug: with ``async def get_current_user`` (natural in an asyncio framework, e.g. to
    look the session up in a database) ``current_user`` is a coroutine object, which is
    truthy, so ``@authenticated`` lets everyone in while the coroutine is never awaited.
    Either await it or refuse it; never answer 200 to an anonymous client."""

    class AsyncUser(UserHandlingMixin, WebMessageHandler):
        async def get_current_user(self):
            return None  # nobody is logged in

        @authenticated
        async def get(self):
            return "secret data"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the coroutine nobody awaited
        async with TestClient(app_with((r"^/$", AsyncUser))) as client:
            response = await client.get("/")
        gc.collect()
    assert response.status_code in (401, 500)
    assert "secret data" not in response.text


async def test_login_redirect_next_is_the_uri_percent_encoded():
    """``next`` carries the original URI, encoded so it cannot add parameters to the login
    URL, and a login_url that has a query keeps it."""
    app = app_with((r"^/me$", Profile), cookie_secret=SECRET, login_url="/login?from=app")
    async with TestClient(app) as client:
        response = await client.get("/me?x=1&next=//evil.example")
        assert response.status_code == 302
        assert response.headers["location"] == (
            "/login?from=app&next=%2Fme%3Fx%3D1%26next%3D%2F%2Fevil.example"
        )


async def test_authenticated_refuses_unsafe_methods_without_redirect():
    """A POST without a user is a 401 even with a login_url: a redirect would turn it into
    a GET of the login page and drop the body silently."""

    class Page(Profile):
        @web_authenticated
        def post(self):
            return "posted"

    app = app_with((r"^/$", Page), cookie_secret=SECRET, login_url="/login")
    async with TestClient(app) as client:
        response = await client.post("/", data={"a": "1"})
        assert response.status_code == 401
        assert response.headers.get("location") is None


# XSRF


def _token(page_text):
    return re.search(r'value="([^"]+)"', page_text).group(1)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_every_unsafe_method_needs_the_token(method):
    """POST, PUT, PATCH and DELETE are all refused without the token, and all accepted
    with it in the X-XSRFToken header."""
    async with TestClient(app_with((r"^/f$", Form), xsrf_cookies=True)) as client:
        assert (await client.request(method, "/f")).status_code == 403
        token = _token((await client.get("/f")).text)
        accepted = await client.request(method, "/f", headers={"X-XSRFToken": token})
        assert accepted.status_code == 200


async def test_xsrf_token_without_its_cookie_is_refused():
    """A token sent by a page that cannot read the cookie (a cross-site form) is useless:
    without the cookie, or with another one, the request is a 403."""
    async with TestClient(app_with((r"^/f$", Form), xsrf_cookies=True)) as client:
        token = _token((await client.get("/f")).text)
        client.cookies.clear()
        assert (await client.post("/f", data={"_xsrf": token})).status_code == 403
        other = "A" * 43 if token != "A" * 43 else "B" * 43
        response = await client.post(
            "/f", headers={"cookie": f"_xsrf={other}"}, data={"_xsrf": token}
        )
        assert response.status_code == 403


async def test_xsrf_empty_cookie_and_empty_token_do_not_match():
    """An empty ``_xsrf`` cookie echoed as an empty argument is not a match."""
    async with TestClient(app_with((r"^/f$", Form), xsrf_cookies=True)) as client:
        response = await client.post(
            "/f", headers={"cookie": "_xsrf=", "X-XSRFToken": ""}, data={"_xsrf": ""}
        )
        assert response.status_code == 403


async def test_xsrf_cookie_is_readable_by_scripts_and_lax():
    """The ``_xsrf`` cookie must not be HttpOnly (JavaScript copies it into the header),
    and is SameSite=Lax on path /."""
    async with TestClient(app_with((r"^/f$", Form), xsrf_cookies=True)) as client:
        (line,) = (await client.get("/f")).get_all("set-cookie")
        attributes = [part.strip() for part in line.split(";")]
        assert "HttpOnly" not in attributes
        assert "SameSite=Lax" in attributes
        assert "Path=/" in attributes
        assert re.fullmatch(r"_xsrf=[A-Za-z0-9_-]{43}", attributes[0])


async def test_a_malformed_xsrf_cookie_is_replaced_not_echoed():
    """A junk ``_xsrf`` cookie (planted, or HTML) is not put in the form as is: a fresh
    token is made and set."""
    async with TestClient(app_with((r"^/f$", Form), xsrf_cookies=True)) as client:
        page = await client.get("/f", headers={"cookie": '_xsrf="><script>'})
        token = unmask_xsrf_token(_token(page.text))  # the form's is masked (BREACH)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
        assert "<script>" not in page.text
        assert page.get_all("set-cookie")[0].startswith(f"_xsrf={token};")


async def test_xsrf_protects_function_routes_too():
    """Was a bug: docs/cookies.md says that with ``xsrf_cookies=True`` *every* POST, PUT, PATCH and
    DELETE must echo the ``_xsrf`` cookie, but a function route
    (``@app.add_route(..., method=["POST"])``) runs without any check: a cross-site form can
    post to it. It should answer 403 like a handler class does."""
    app = app_with(xsrf_cookies=True)

    @app.add_route(r"^/transfer$", method=["POST"])
    def transfer(application, message):
        return "money sent"

    async with TestClient(app) as client:
        response = await client.post("/transfer", data={"to": "mallory"})
        assert response.status_code == 403
        assert "money sent" not in response.text


# The fixes' other sides


class AsyncLogin(UserHandlingMixin, WebMessageHandler):
    """``get_current_user`` looks the session up in a store: it awaits."""

    async def get_current_user(self):
        await asyncio.sleep(0)
        return self.get_cookie("user", secret=SECRET)

    @authenticated
    async def get(self):
        return f"hello {self.current_user}"


class SyncReaderOfAsyncUser(AsyncLogin):
    """A ``def`` method cannot await ``get_current_user``: reading ``current_user`` raises."""

    def get(self):
        return f"hello {self.current_user}"


async def test_an_async_get_current_user_is_awaited_by_the_async_guard():
    good = sign_value(SECRET, "user", "ann")
    async with TestClient(app_with((r"^/$", AsyncLogin))) as client:
        logged_in = await client.get("/", headers={"cookie": f"user={good}"})
        forged = await client.get("/", headers={"cookie": "user=ann"})
    assert (logged_in.status_code, logged_in.text) == (200, "hello ann")
    assert forged.status_code == 401


async def test_current_user_refuses_an_async_get_current_user_it_cannot_await(caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "never awaited" would be an error
        async with TestClient(app_with((r"^/$", SyncReaderOfAsyncUser))) as client:
            response = await client.get("/")
        gc.collect()
    assert response.status_code == 500
    assert "get_current_user is async" in caplog.text


def test_cookie_secret_without_the_setting_is_an_error_that_says_so():
    with pytest.raises(RuntimeError, match="cookie_secret setting is not set"):
        _ = app_with().cookie_secret
    assert app_with(cookie_secret=SECRET).cookie_secret == SECRET
    assert app_with(cookie_secret=[SECRET, OTHER]).cookie_secret == [SECRET, OTHER]


async def test_a_function_route_may_opt_out_of_the_xsrf_check():
    app = app_with(xsrf_cookies=True)

    @app.add_route(r"^/api/transfer$", method=["POST"], check_xsrf=False)
    def api_transfer(application, message):
        return "api: token checked otherwise"

    def hook(application, message):
        return "hook"

    app.add_route_rule(r"^/hook$", hook, method=["POST"], check_xsrf=False)

    @app.add_route(r"^/form$", method=["POST"])
    def form(application, message):
        return "form"

    async with TestClient(app) as client:
        assert (await client.post("/api/transfer")).status_code == 200
        assert (await client.post("/hook")).status_code == 200
        assert (await client.post("/form")).status_code == 403
        token = "t" * 32
        echoed = await client.post(
            "/form", headers={"cookie": f"_xsrf={token}", "x-xsrftoken": token}
        )
        assert (echoed.status_code, echoed.text) == (200, "form")
        as_field = await client.post(
            "/form", headers={"cookie": f"_xsrf={token}"}, data={"_xsrf": f" {token} "}
        )
        assert as_field.status_code == 200


def test_init_kwargs_other_than_check_xsrf_are_still_refused_for_a_function():
    app = app_with()
    with pytest.raises(TypeError, match="init kwargs are for handler classes"):
        app.add_route_rule(r"^/x$", lambda application, message: "x", title="no")


async def test_delete_cookie_of_an_ordinary_cookie_is_not_marked_secure():
    class Logout(WebMessageHandler):
        def get(self):
            self.delete_cookie("sid")
            return "bye"

    async with TestClient(app_with((r"^/$", Logout))) as client:
        response = await client.get("/")
    (line,) = response.get_all("set-cookie")
    assert line.startswith("sid=;") and "Secure" not in line


async def test_redirect_keeps_escapes_and_url_syntax_as_they_are():
    async with TestClient(app_with((r"^/r$", Redirect))) as client:
        for target in (
            "/a%20b?x=1&y=%C3%A9#frag",
            "https://example.org:8443/p;q=1?a=[1]&b=@~!$'()*+,",
        ):
            response = await client.get("/r", params={"to": target})
            assert response.headers["location"] == target
