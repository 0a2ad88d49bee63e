"""XSRF protection: unsafe methods must echo the _xsrf cookie when the app asks for it."""

from __future__ import annotations

import re

from brubeck import Brubeck, WebMessageHandler
from brubeck.security import unmask_xsrf_token
from brubeck.testing import TestClient


class Form(WebMessageHandler):
    def get(self):
        return f"<form method=post>{self.xsrf_form_html()}</form>"

    def post(self):
        return "saved"


class Api(WebMessageHandler):
    check_xsrf = False  # authenticated by other means

    def post(self):
        return "api"


def make_app(**settings):
    return Brubeck(handler_tuples=[(r"^/form$", Form), (r"^/api$", Api)], **settings)


async def test_posts_need_the_token_when_enabled():
    async with TestClient(make_app(xsrf_cookies=True)) as client:
        assert (await client.post("/form")).status_code == 403
        page = await client.get("/form")
        token = re.search(r'value="([^"]+)"', page.text).group(1)  # masked, for BREACH
        cookie = client.cookies["_xsrf"]
        assert unmask_xsrf_token(token) == cookie != token
        assert (await client.post("/form", data={"_xsrf": token})).text == "saved"
        assert (await client.post("/form", headers={"X-XSRFToken": token})).text == "saved"
        # what JavaScript sends: the cookie's value as it is
        assert (await client.post("/form", headers={"X-XSRFToken": cookie})).text == "saved"
        for sent in (token, cookie):
            other = sent[:-1] + ("A" if sent[-1] != "A" else "B")  # differs in its last character
            wrong = await client.post("/form", data={"_xsrf": other})
            assert wrong.status_code == 403 and "XSRF" in wrong.text
        assert (await client.post("/api")).text == "api"  # the handler opted out


async def test_the_token_is_stable_and_off_by_default():
    async with TestClient(make_app()) as client:
        assert (await client.post("/form")).text == "saved"
        first = await client.get("/form")
        second = await client.get("/form")
        # the cookie's token is reused, under a new mask on each page
        assert first.text != second.text
        assert len(second.get_all("set-cookie")) == 0
        tokens = [re.search(r'value="([^"]+)"', p.text).group(1) for p in (first, second)]
        assert {unmask_xsrf_token(t) for t in tokens} == {client.cookies["_xsrf"]}
