"""Real HTTP through a real Mongrel2 to Brubeck apps: the hello example and a test app.

One Mongrel2 per app serves the whole module. Raw sockets check what an HTTP client library
hides: exact framing (Content-Length, no body after HEAD or 204), who closes the connection,
pipelining and repeated headers.
"""

import asyncio
import json
import logging
import runpy
import time
from collections import Counter

import httpx
import pytest

from brubeck import Brubeck, HTTPError, JSONMessageHandler, WebMessageHandler
from brubeck.routing import HTTP_METHODS

SLOW_SECONDS = 0.5
CONCURRENT = 50


class ConnHandler(WebMessageHandler):
    """Answers with the Mongrel2 connection id, and counts the requests seen per id."""

    def get(self):
        conn_id = self.message.conn_id.decode()
        self.application.state.by_conn[conn_id] += 1
        self.set_header("Content-Type", "text/plain")
        self.write(conn_id)
        return self.render()


class StatusHandler(WebMessageHandler):
    def get(self, code):
        status = int(code)
        self.set_status(status)
        if status != 204:
            self.write(f"status {status}\n")
        return self.render()


class RedirectHandler(WebMessageHandler):
    def get(self, code):
        return self.redirect("/target?from=" + code, permanent=code == "301")


class BoomHandler(WebMessageHandler):
    def get(self):
        raise RuntimeError("boom: the handler failed on purpose")


class MissingAsyncHandler(WebMessageHandler):
    async def get(self, name):
        await asyncio.sleep(0)
        raise HTTPError(404, f"no widget called {name}")


class SlowHandler(WebMessageHandler):
    """Sleeps without blocking the loop; records how many requests overlapped."""

    async def get(self):
        state = self.application.state
        state.in_flight += 1
        state.peak = max(state.peak, state.in_flight)
        try:
            await asyncio.sleep(SLOW_SECONDS)
        finally:
            state.in_flight -= 1
        self.write("slept")
        return self.render()


class EchoHandler(JSONMessageHandler):
    """What the app decoded from the request: arguments, a repeated header, cookies."""

    def get(self):
        self.add_to_payload("path", self.message.path)
        self.add_to_payload("arguments", self.message.arguments)
        self.add_to_payload("x_dup", self.message.headers.get("x-dup"))
        self.add_to_payload("cookies", self.message.cookies)
        return self.render()


def build_app() -> Brubeck:
    app = Brubeck(
        handler_tuples=[
            (r"^/conn$", ConnHandler),
            (r"^/status/(\d+)$", StatusHandler),
            (r"^/redirect/(30[12])$", RedirectHandler),
            (r"^/boom$", BoomHandler),
            (r"^/widgets/(?P<name>\w+)$", MissingAsyncHandler),
            (r"^/slow$", SlowHandler),
            (r"^/echo$", EchoHandler),
        ]
    )
    app.state.by_conn = Counter()
    app.state.phantoms = []
    app.state.in_flight = 0
    app.state.peak = 0

    @app.add_route(r"^/fn/dict$")
    def fn_dict(application, message):
        return {"kind": "dict", "items": [1, 2, 3], "text": "é"}

    @app.add_route(r"^/fn/str$")
    def fn_str(application, message):
        return "héllo ☕"

    # A Mongrel2 notice (path "@*") that slipped through as a request would land here.
    @app.add_route(r"^@", method=[*HTTP_METHODS, "JSON"])
    def phantom(application, message):
        application.state.phantoms.append(message)
        return "phantom"

    return app


@pytest.fixture(scope="module")
def example(serve_module, example_app_file):
    """The hello example app, unchanged, behind its own Mongrel2."""
    app = runpy.run_path(str(example_app_file))["app"]
    return serve_module(app)


@pytest.fixture(scope="module")
def app():
    return build_app()


@pytest.fixture(scope="module")
def m2(serve_module, app):
    return serve_module(app)


@pytest.fixture
def client(m2):
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        yield client


@pytest.fixture
def example_client(example):
    with httpx.Client(base_url=example.url, timeout=5) as client:
        yield client


def assert_framed(resp: httpx.Response) -> None:
    assert resp.headers["content-length"] == str(len(resp.content))
    assert len(resp.headers.get_list("content-length")) == 1


# The hello example


def test_example_page(example_client):
    resp = example_client.get("/brubeck")
    assert resp.status_code == 200
    assert resp.reason_phrase == "OK"
    assert resp.http_version == "HTTP/1.1"
    assert resp.text == "Take five"
    assert resp.headers["content-type"].split(";")[0] == "text/html"
    assert_framed(resp)
    assert "date" in resp.headers


def test_example_json_with_path_parameter(example_client):
    resp = example_client.get("/user/42")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"user": "42"}
    assert_framed(resp)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_example_function_route(example_client, method):
    resp = example_client.request(method, "/deco/bob", content=b"x=1" if method == "POST" else None)
    assert resp.status_code == 200
    assert resp.text == "hi bob"
    assert_framed(resp)


def test_example_unknown_paths_are_404(example_client):
    for path in ("/user/abc", "/nothing/here", "/brubeck/"):
        resp = example_client.get(path)
        assert resp.status_code == 404, path
        assert resp.reason_phrase == "Not Found"
        assert_framed(resp)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("DELETE", "/brubeck", "GET, HEAD"), ("PUT", "/deco/bob", "GET, HEAD, POST")],
)
def test_example_unsupported_method_is_405_with_allow(example_client, method, path, allow):
    resp = example_client.request(method, path)
    assert resp.status_code == 405
    assert resp.reason_phrase == "Method Not Allowed"
    assert resp.headers["allow"] == allow
    assert_framed(resp)


def test_head_is_get_without_body(example, raw_http):
    conn = raw_http(example)
    # Pipelined: whatever follows the HEAD response's head must be the next response.
    conn.request("HEAD", "/brubeck")
    conn.request("GET", "/user/7")
    head = conn.read_response(head_request=True)
    assert (head.status, head.reason) == (200, "OK")
    assert head.header("Content-Length") == str(len("Take five"))
    assert head.header("Content-Type").startswith("text/html")
    after = conn.read_response()
    assert after.head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert after.body == b'{"user":"7"}'


# Function handlers


def test_function_returning_dict_is_json(client):
    resp = client.get("/fn/dict")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"kind": "dict", "items": [1, 2, 3], "text": "é"}
    assert_framed(resp)


def test_function_returning_str_is_utf8_html(client):
    resp = client.get("/fn/str")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.content == "héllo ☕".encode()
    assert resp.headers["content-length"] == "10"  # bytes, not characters


# Status lines and framing, read off the wire


@pytest.mark.parametrize(
    ("method", "path", "status", "reason", "headers"),
    [
        ("GET", "/status/201", 201, "Created", {}),
        ("GET", "/status/204", 204, "No Content", {}),
        ("GET", "/redirect/301", 301, "Moved Permanently", {"Location": "/target?from=301"}),
        ("GET", "/redirect/302", 302, "Found", {"Location": "/target?from=302"}),
        ("GET", "/no/such/path", 404, "Not Found", {}),
        ("POST", "/conn", 405, "Method Not Allowed", {"Allow": "GET, HEAD"}),
        ("GET", "/status/418", 418, "I'm a Teapot", {}),
        ("GET", "/boom", 500, "Internal Server Error", {}),
    ],
)
def test_status_line_and_framing(m2, raw_http, method, path, status, reason, headers):
    conn = raw_http(m2, timeout=3)
    conn.request(method, path, [("Connection", "close")])
    resp = conn.read_response()
    assert resp.head.split(b"\r\n", 1)[0] == f"HTTP/1.1 {status} {reason}".encode()
    for name, value in headers.items():
        assert resp.header(name) == value
    if status == 204:
        assert resp.header("Content-Length") is None
        assert resp.body == b""
    else:
        assert resp.header("Content-Length") == str(len(resp.body))
        assert bool(resp.body) is (status not in (301, 302))  # redirects: Content-Length: 0
    assert resp.header("Connection") == "close"
    # Nothing after the framed body, then the server closes the connection.
    assert conn.rest_until_closed() == b""


def test_no_body_after_204(m2, raw_http):
    conn = raw_http(m2)
    conn.request("GET", "/status/204")
    conn.request("GET", "/status/201")
    first = conn.read_response()
    assert first.status == 204
    second = conn.read_response()
    assert (second.status, second.body) == (201, b"status 201\n")


# Connection management


def test_http10_response_then_close(example, raw_http):
    conn = raw_http(example, timeout=3)
    conn.request("GET", "/brubeck", version="HTTP/1.0")
    resp = conn.read_response()
    assert resp.status == 200
    assert resp.body == b"Take five"
    assert resp.header("Connection") == "close"
    assert conn.rest_until_closed() == b""


def test_http10_keep_alive_stays_open(m2, raw_http):
    conn = raw_http(m2)
    conn.request("GET", "/conn", [("Connection", "keep-alive")], version="HTTP/1.0")
    first = conn.read_response()
    assert first.header("Connection") == "keep-alive"
    conn.request("GET", "/conn", [("Connection", "keep-alive")], version="HTTP/1.0")
    second = conn.read_response()
    assert second.status == 200
    assert first.body == second.body  # the same Mongrel2 connection


def test_http11_connection_close(example, raw_http):
    conn = raw_http(example, timeout=3)
    conn.request("GET", "/user/9", [("Connection", "close")])
    resp = conn.read_response()
    assert resp.status == 200
    assert resp.body == b'{"user":"9"}'
    assert resp.header("Connection") == "close"
    assert conn.rest_until_closed() == b""


def test_keep_alive_reuses_one_connection(m2):
    with httpx.Client(base_url=m2.url, timeout=5) as first:
        ids = [first.get("/conn").text for _ in range(4)]
        with httpx.Client(base_url=m2.url, timeout=5) as second:
            other = second.get("/conn").text
    assert ids[0].isdigit()
    assert ids == [ids[0]] * 4
    assert other != ids[0]


def test_pipelined_requests_answered_in_order(example, raw_http):
    conn = raw_http(example)
    conn.send(
        b"GET /deco/first HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /deco/second HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    assert conn.read_response().body == b"hi first"
    assert conn.read_response().body == b"hi second"


def test_disconnect_notice_is_not_a_request(m2, app, caplog, wait_for):
    with caplog.at_level(logging.DEBUG, logger="brubeck"):
        with httpx.Client(base_url=m2.url, timeout=5) as client:
            conn_id = client.get("/conn").text
            assert client.get("/conn").text == conn_id
        # The client closed its keep-alive connection: Mongrel2 sends a disconnect notice.
        wait_for(
            lambda: any(
                f"connection {conn_id} closed by the client" in r.getMessage()
                for r in caplog.records
            ),
            what=f"the disconnect notice of connection {conn_id}",
        )
    assert app.state.by_conn[conn_id] == 2
    assert app.state.phantoms == []
    problems = [r for r in caplog.records if r.name.startswith("brubeck") and r.levelno >= 30]
    assert problems == []


# Errors


def test_handler_exception_is_500_logged_and_survived(client, caplog):
    with caplog.at_level(logging.ERROR, logger="brubeck"):
        resp = client.get("/boom")
    assert resp.status_code == 500
    assert resp.reason_phrase == "Internal Server Error"
    assert "boom" not in resp.text  # no traceback for the client (debug is off)
    assert_framed(resp)
    logged = [r for r in caplog.records if r.exc_info and r.name.startswith("brubeck")]
    assert len(logged) == 1
    assert isinstance(logged[0].exc_info[1], RuntimeError)
    assert "Traceback" in caplog.text and "boom: the handler failed on purpose" in caplog.text
    after = client.get("/fn/str")
    assert after.status_code == 200
    assert after.text == "héllo ☕"


def test_http_error_from_async_handler(client):
    resp = client.get("/widgets/sprocket")
    assert resp.status_code == 404
    assert "no widget called sprocket" in resp.text
    assert_framed(resp)


def test_unknown_path_and_method(client):
    assert client.get("/definitely/not/routed").status_code == 404
    resp = client.delete("/fn/dict")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD"


# Concurrency


async def test_async_handlers_overlap(m2, app):
    app.state.peak = 0
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=m2.url, timeout=30, limits=limits) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get("/slow") for _ in range(CONCURRENT)))
        elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    assert {r.text for r in responses} == {"slept"}
    # Serially this would take CONCURRENT * SLOW_SECONDS = 25 s.
    assert elapsed < 8 * SLOW_SECONDS, elapsed
    assert app.state.peak >= CONCURRENT // 2, app.state.peak
    assert app.state.in_flight == 0


# Request decoding


def test_query_arguments_percent_encoded_utf8(client):
    resp = client.get("/echo?name=%C3%A9t%C3%A9%20%E2%98%95&x=1&x=2&empty=")
    assert resp.status_code == 200
    assert resp.json()["arguments"] == {"name": ["été ☕"], "x": ["1", "2"], "empty": [""]}


def test_percent_encoded_path_is_decoded(client):
    resp = client.get("/status/%32%30%31")  # "/status/201"
    assert resp.status_code == 201
    assert resp.text == "status 201\n"


def test_repeated_header_arrives_as_list(m2, raw_http):
    conn = raw_http(m2)
    conn.request("GET", "/echo", [("X-Dup", "one"), ("X-Dup", "two")])
    repeated = conn.read_response()
    conn.request("GET", "/echo", [("X-Dup", "only")])
    single = conn.read_response()
    assert json.loads(repeated.body)["x_dup"] == ["one", "two"]
    assert json.loads(single.body)["x_dup"] == "only"


def test_cookies_in(client, m2, raw_http):
    resp = client.get("/echo", headers={"Cookie": 'session=abc123; theme="dark"'})
    assert resp.json()["cookies"] == {"session": "abc123", "theme": "dark"}
    conn = raw_http(m2)
    conn.request("GET", "/echo", [("Cookie", "a=1"), ("Cookie", "b=2; a=ignored")])
    assert json.loads(conn.read_response().body)["cookies"] == {"a": "1", "b": "2"}
