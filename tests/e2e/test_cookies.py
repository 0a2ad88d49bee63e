"""Cookies through a real Mongrel2: several Set-Cookie lines, signed cookies and key rotation."""

from __future__ import annotations

import time

import httpx
import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.security import sign_value

NEW, OLD = "n" * 32, "o" * 32


class Login(WebMessageHandler):
    def post(self) -> str:
        self.set_cookie("user", {"id": 7}, secret=self.application.cookie_secret, httponly=True)
        self.set_cookie("theme", "dark", max_age=3600)
        return "ok"


class Me(WebMessageHandler):
    def get(self) -> dict:
        secret = self.application.cookie_secret
        return {
            "user": self.get_cookie("user", secret=secret, max_age=60),
            "theme": self.get_cookie("theme"),
        }


class Logout(WebMessageHandler):
    def post(self) -> str:
        self.delete_cookies()
        return "bye"


@pytest.fixture(scope="module")
def site(serve_module):
    app = Brubeck(
        handler_tuples=[(r"^/login$", Login), (r"^/me$", Me), (r"^/logout$", Logout)],
        cookie_secret=[NEW, OLD],
    )
    return serve_module(app)


def test_two_set_cookie_lines_and_a_signed_round_trip(site):
    with httpx.Client(base_url=site.url) as client:
        response = client.post("/login")
        lines = response.headers.get_list("set-cookie")
        assert len(lines) == 2
        assert lines[0].startswith("user=1.") and "HttpOnly" in lines[0]
        assert lines[1] == "theme=dark; Max-Age=3600; Path=/; SameSite=Lax"
        assert client.get("/me").json() == {"user": {"id": 7}, "theme": "dark"}


def test_a_tampered_signed_cookie_is_refused(site):
    signed = sign_value(NEW, "user", {"id": 7})
    payload = signed.split(".")[1]
    forged = signed.replace(payload, sign_value(NEW, "user", {"id": 1}).split(".")[1])
    response = httpx.get(f"{site.url}/me", cookies={"user": forged})
    assert response.json()["user"] is None


def test_an_expired_signed_cookie_is_refused(site):
    old = sign_value(NEW, "user", {"id": 7}, now=time.time() - 3600)  # max_age is 60 s
    assert httpx.get(f"{site.url}/me", cookies={"user": old}).json()["user"] is None


def test_a_cookie_signed_with_the_previous_key_still_works(site):
    rotated = sign_value(OLD, "user", {"id": 9})
    assert httpx.get(f"{site.url}/me", cookies={"user": rotated}).json()["user"] == {"id": 9}
    retired = sign_value("r" * 32, "user", {"id": 9})
    assert httpx.get(f"{site.url}/me", cookies={"user": retired}).json()["user"] is None


def test_delete_cookies_expires_each_one(site):
    response = httpx.post(f"{site.url}/logout", cookies={"a": "1", "b": "2"})
    lines = sorted(response.headers.get_list("set-cookie"))
    assert [line.split(";")[0] for line in lines] == ["a=", "b="]
    assert all("Max-Age=0" in line for line in lines)
