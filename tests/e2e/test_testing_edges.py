"""TestClient against a real Mongrel2: the same app and the same request, through both.

The app echoes the Mongrel2 message it received (``message.raw_headers``), so any difference
between what ``TestClient`` builds and what Mongrel2 1.12.2 sends shows up as a failed
comparison. One Mongrel2 serves the module; TestClient drives a second copy of the app.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from brubeck.testing import TestClient
from tests.test_testing_edges import echo_app


@pytest.fixture(scope="module")
def m2(serve_module):
    return serve_module(echo_app(keepalive_interval=0.05))


def real(raw_http, m2, head: str, body: bytes = b"") -> Any:
    """Send an exact request head (Host: testserver, as TestClient's) and return the echo."""
    conn = raw_http(m2)
    conn.send(head.encode("latin-1") + b"\r\nHost: testserver\r\n\r\n" + body)
    response = conn.read_response()
    assert response.status == 200, (response, response.body)
    return httpx.Response(200, content=response.body).json()


def fake(method: str, path: str, **kw: Any) -> Any:
    with TestClient(echo_app(), timeout=2) as client:
        response = client.request(method, path, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_plain_request_is_the_same_message(m2, raw_http) -> None:
    """Mongrel2's keys, lower-cased client headers, a repeated header, the cookie and the body."""
    through_mongrel2 = real(
        raw_http,
        m2,
        "POST /echo?x=1&y=2&y=3 HTTP/1.1\r\nCookie: a=1; b=2\r\nX-Forwarded-For: 6.6.6.6\r\n"
        "X-Dup: one\r\nX-Dup: two\r\nContent-Length: 4",
        b"body",
    )
    through_client = fake(
        "POST",
        "/echo?x=1",
        params={"y": ["2", "3"]},
        headers={"Cookie": "a=1; b=2", "X-Forwarded-For": "6.6.6.6", "X-Dup": ["one", "two"]},
        data=b"body",
    )
    assert through_client == through_mongrel2


def test_a_fragment_reaches_the_app_the_same_way(m2, raw_http) -> None:
    """Was a bug. TestClient put '#frag' in QUERY; Mongrel2 keeps it out (a=['1'])."""
    through_mongrel2 = real(raw_http, m2, "GET /echo?a=1#frag HTTP/1.1")
    through_client = fake("GET", "/echo?a=1#frag")
    keys = ("PATH", "QUERY", "URI")
    assert through_client["args"] == through_mongrel2["args"] == {"a": ["1"]}
    assert [through_client["raw"][k] for k in keys] == [through_mongrel2["raw"][k] for k in keys]


def test_a_header_sent_once_is_a_string_both_ways(m2, raw_http) -> None:
    """Was a bug. One X-One line is a str via Mongrel2; TestClient's ['only'] a list."""
    through_mongrel2 = real(raw_http, m2, "GET /echo HTTP/1.1\r\nX-One: only")
    through_client = fake("GET", "/echo", headers={"X-One": ["only"]})
    assert through_client["raw"]["x-one"] == through_mongrel2["raw"]["x-one"] == "only"


def test_a_header_repeated_seven_times_keeps_five_values_both_ways(m2, raw_http) -> None:
    """Was a bug. Mongrel2 keeps 5 values of a repeated header; TestClient kept all 7."""
    values = [str(n) for n in range(1, 8)]
    lines = "".join(f"\r\nX-D: {v}" for v in values)
    through_mongrel2 = real(raw_http, m2, "GET /echo HTTP/1.1" + lines)
    through_client = fake("GET", "/echo", headers={"X-D": values})
    assert through_client["raw"]["x-d"] == through_mongrel2["raw"]["x-d"] == values[:5]


def test_non_ascii_in_the_url_reaches_the_app_as_a_real_client_sends_it(m2, raw_http) -> None:
    """Was a bug. TestClient sent raw UTF-8 that Mongrel2 refuses; clients send %C3%A9."""
    conn = raw_http(m2)
    conn.send("GET /echo/café?q=é HTTP/1.1\r\nHost: testserver\r\n\r\n".encode())
    assert conn.read_response().status == 400  # curl's raw bytes never reach the app
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        through_mongrel2 = client.get("/echo/café?q=é").json()
    through_client = fake("GET", "/echo/café?q=é")
    assert through_client["raw"]["PATH"] == through_mongrel2["raw"]["PATH"] == "/echo/caf%C3%A9"
    assert through_client["raw"]["URI"] == through_mongrel2["raw"]["URI"]
    assert through_client["args"] == through_mongrel2["args"] == {"q": ["é"]}


def test_a_request_held_past_keepalive_interval_is_answered_both_ways(m2) -> None:
    """Was a bug. Mongrel2 swallows the keep-alive ctl; TestClient took it for the answer."""
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        through_mongrel2 = client.get("/slow")
    assert (through_mongrel2.status_code, through_mongrel2.text) == (200, "late")
    with TestClient(echo_app(keepalive_interval=0.05), timeout=3) as client:
        through_client = client.get("/slow")
    assert (through_client.status_code, through_client.text) == (200, "late")
