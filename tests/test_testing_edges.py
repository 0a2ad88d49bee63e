"""testing.py hunt: does TestClient send what a real Mongrel2 sends, and fail instead of hanging?

Every expectation here was checked against Mongrel2 1.12.2 (tests/e2e/test_testing_edges.py
compares the two for the same app and request). The message Mongrel2 sends is read back
through ``message.raw_headers``, exactly as the app received it.
"""

from __future__ import annotations

import asyncio

import pytest

from brubeck import Brubeck, JSONMessageHandler, WebMessageHandler
from brubeck.testing import TestClient


def _text(value: bytes | list[bytes]) -> str | list[str]:
    return value.decode("latin-1") if isinstance(value, bytes) else [v.decode() for v in value]


class Echo(JSONMessageHandler):
    """What the app received: the raw Mongrel2 headers, the decoded path and arguments."""

    def get(self) -> dict:
        message = self.message
        raw = {key.decode(): _text(value) for key, value in message.raw_headers.items()}
        return {"raw": raw, "path": message.path, "args": message.arguments}

    post = get


class Slow(WebMessageHandler):
    """A long poll: held longer than the app's keepalive_interval."""

    async def get(self) -> str:
        await asyncio.sleep(0.35)
        return "late"


def echo_app(**settings: object) -> Brubeck:
    app = Brubeck(handler_tuples=[(r"^/echo", Echo), (r"^/slow$", Slow)])
    app.settings.update(settings)
    return app


# Request line: what a real client and Mongrel2 make of the URL


async def test_a_fragment_is_neither_path_nor_query() -> None:
    """Was a bug. '#frag' must stay out of PATH, QUERY and URI, as Mongrel2 and clients do."""
    async with TestClient(echo_app(), timeout=2) as client:
        with_query = (await client.get("/echo?a=1#frag")).json()
        path_only = (await client.get("/echo/x#top")).json()
    assert with_query["args"] == {"a": ["1"]}
    assert (with_query["raw"]["QUERY"], with_query["raw"]["URI"]) == ("a=1", "/echo?a=1")
    assert (path_only["path"], path_only["raw"]["URI"]) == ("/echo/x", "/echo/x")


async def test_characters_mongrel2_refuses_in_a_request_line_do_not_reach_the_app_raw() -> None:
    """Was a bug. Raw é, '"' etc. are a 400 at Mongrel2: percent-encode them (or refuse)."""
    async with TestClient(echo_app(), timeout=2) as client:
        try:
            response = await client.get('/echo/café?q=é"')
        except ValueError:
            return  # refusing the URL is an acceptable fix too
    got = response.json()
    assert got["raw"]["PATH"] == "/echo/caf%C3%A9"
    assert got["raw"]["URI"] == "/echo/caf%C3%A9?q=%C3%A9%22"
    assert (got["path"], got["args"]) == ("/echo/café", {"q": ['é"']})


@pytest.mark.parametrize("path", ["echo", "echo/x?a=1"])
async def test_a_path_without_a_leading_slash_is_refused(path: str) -> None:
    """Was a bug. 'echo' never reaches the app via Mongrel2 (its own 404): raise ValueError."""
    async with TestClient(echo_app(), timeout=2) as client:
        with pytest.raises(ValueError):
            await client.get(path)


async def test_an_absolute_url_is_not_sent_as_the_path() -> None:
    """Was a bug. An absolute URL went out as PATH 'http://testserver/echo'."""
    async with TestClient(echo_app(), timeout=2) as client:
        try:
            response = await client.get("http://testserver/echo?x=1")
        except ValueError:
            return  # refusing an absolute URL is an acceptable fix too
    assert response.status_code == 200, response.text
    got = response.json()
    assert (got["raw"]["PATH"], got["args"]) == ("/echo", {"x": ["1"]})


async def test_none_in_params_and_form_data_is_not_the_text_none() -> None:
    """Was a bug. A None value went out as the text 'None' (httpx: 'a=', requests: left out)."""
    async with TestClient(echo_app(), timeout=2) as client:
        got = (await client.post("/echo", params={"q": None}, data={"f": None, "g": "1"})).json()
    assert got["args"].get("q") in (None, [""])
    assert got["args"].get("f") in (None, [""])
    assert got["args"]["g"] == ["1"]


# Headers: how Mongrel2 passes them on


async def test_a_header_sent_once_arrives_as_a_string_even_from_a_list() -> None:
    """Was a bug. A header sent once is a str from Mongrel2, not a one-element list."""
    async with TestClient(echo_app(), timeout=2) as client:
        got = (await client.get("/echo", headers={"X-One": ["only"], "X-Two": ["1", "2"]})).json()
    assert got["raw"]["x-one"] == "only"
    assert got["raw"]["x-two"] == ["1", "2"]


async def test_at_most_five_values_of_a_repeated_header_are_kept() -> None:
    """Was a bug. Mongrel2 keeps the first 5 values of a repeated header (verified with 7)."""
    values = [str(n) for n in range(1, 8)]
    async with TestClient(echo_app(), timeout=2) as client:
        got = (await client.get("/echo", headers={"X-D": values})).json()
    assert got["raw"]["x-d"] == values[:5]


async def test_mongrel2_keys_and_client_headers_for_a_plain_request() -> None:
    """The keys Mongrel2 adds, with client headers lower-cased and X-Forwarded-For replaced."""
    async with TestClient(echo_app(), timeout=2) as client:
        client.cookies = {"a": "1", "b": "2"}
        got = await client.post(
            "/echo?x=1",
            params={"y": ["2", "3"]},
            headers={"X-Forwarded-For": "6.6.6.6", "X-Dup": ["one", "two"]},
            data=b"body",
        )
    raw = got.json()["raw"]
    assert raw == {
        "METHOD": "POST",
        "VERSION": "HTTP/1.1",
        "PATH": "/echo",
        "URI": "/echo?x=1&y=2&y=3",
        "QUERY": "x=1&y=2&y=3",
        "PATTERN": "/",
        "URL_SCHEME": "http",
        "REMOTE_ADDR": "127.0.0.1",
        "host": "testserver",
        "cookie": "a=1; b=2",
        "x-dup": ["one", "two"],
        "content-length": "4",
        "x-forwarded-for": "127.0.0.1",
    }


# Answers the client must see through, and failures that must not hang


async def test_a_keep_alive_ctl_during_a_long_request_is_not_taken_for_its_answer() -> None:
    """Was a bug. The app's keep-alive ctl was parsed as the HTTP answer (ValueError)."""
    async with TestClient(echo_app(keepalive_interval=0.05), timeout=3) as client:
        response = await client.get("/slow")
    assert (response.status_code, response.text) == (200, "late")


async def test_a_request_to_an_app_that_stopped_serving_fails_instead_of_hanging() -> None:
    """Was a bug. With serve() ended, a request hung forever on the send, past the timeout."""
    app = echo_app()

    @app.on_startup
    async def connect_database() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):  # raised again on exit
        async with TestClient(app, timeout=0.3) as client:
            await asyncio.sleep(0.05)  # serve() has ended with the hook's error
            request = asyncio.ensure_future(client.get("/echo"))
            done, _ = await asyncio.wait({request}, timeout=1.5)
            request.cancel()
    assert request in done, "the request was still waiting well past the client's timeout"
    assert request.exception() is not None
