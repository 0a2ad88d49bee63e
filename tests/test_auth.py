"""auth.py: current_user, @authenticated (401) and @web_authenticated (redirect to login)."""

from __future__ import annotations

from brubeck import Brubeck, WebMessageHandler
from brubeck.auth import UserHandlingMixin, authenticated, web_authenticated
from brubeck.testing import TestClient

SECRET = "s" * 32


class Base(UserHandlingMixin, WebMessageHandler):
    def get_current_user(self):
        return self.get_cookie("user", secret=SECRET)


class Api(Base):
    @authenticated
    def get(self):
        return {"user": self.current_user}

    @authenticated
    async def post(self):
        return {"posted_by": self.current_user}


class Page(Base):
    @web_authenticated
    def get(self):
        return f"hello {self.current_user}"

    @web_authenticated
    def post(self):
        return "posted"


class Login(WebMessageHandler):
    def post(self):
        self.set_cookie("user", "ann", secret=SECRET)
        return "ok"


def make_app(**settings):
    return Brubeck(
        handler_tuples=[(r"^/api$", Api), (r"^/page$", Page), (r"^/login$", Login)], **settings
    )


async def test_api_answers_401_until_logged_in():
    async with TestClient(make_app()) as client:
        assert (await client.get("/api")).status_code == 401
        assert (await client.post("/api")).status_code == 401
        await client.post("/login")
        assert (await client.get("/api")).json() == {"user": "ann"}
        assert (await client.post("/api")).json() == {"posted_by": "ann"}


async def test_pages_redirect_to_login_with_next():
    async with TestClient(make_app(login_url="/login")) as client:
        response = await client.get("/page", params={"a": "1"})
        assert response.status_code == 302
        assert response.headers["location"] == "/login?next=%2Fpage%3Fa%3D1"
        assert (await client.post("/page")).status_code == 401  # no redirect for a POST
        await client.post("/login")
        assert (await client.get("/page")).text == "hello ann"


async def test_without_login_url_pages_answer_401():
    async with TestClient(make_app()) as client:
        assert (await client.get("/page")).status_code == 401


async def test_a_forged_user_cookie_is_nobody():
    async with TestClient(make_app()) as client:
        client.cookies["user"] = "1.eyJ4Ijp0cnVlfQ.forged"
        assert (await client.get("/api")).status_code == 401


async def test_401_carries_the_www_authenticate_setting():
    challenge = 'Bearer realm="api"'
    async with TestClient(make_app(www_authenticate=challenge, login_url="/login")) as client:
        for response in (await client.get("/api"), await client.post("/api")):
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == challenge
        refused_post = await client.post("/page")  # @web_authenticated, not a GET: 401 too
        assert refused_post.headers["www-authenticate"] == challenge
        assert "www-authenticate" not in (await client.get("/page")).headers  # the redirect


async def test_without_the_setting_no_challenge_is_sent():
    async with TestClient(make_app()) as client:
        assert "www-authenticate" not in (await client.get("/api")).headers


async def test_a_challenge_that_would_split_the_header_is_a_500_not_a_header():
    async with TestClient(make_app(www_authenticate="Bearer\r\nSet-Cookie: x=1")) as client:
        response = await client.get("/api")
        assert response.status_code == 500
        assert "set-cookie" not in response.headers
