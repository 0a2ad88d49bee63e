"""app.py: dispatch of Mongrel2 messages, function routes, robustness, limits and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest
import tnetstring
import zmq.asyncio

from brubeck import Brubeck, HTTPError, Response, WebMessageHandler, WebSocketHandler
from brubeck.request import Request
from brubeck.testing import TestClient, TestResponse
from brubeck.waiting import WaitingRoom
from tests import fixtures
from tests.test_connection import Mongrel2Side, handshaken, targets, until

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "JSON", "XML"]


async def no_reply(client: TestClient, conn_id: int) -> bool:
    """True when nothing was sent to ``conn_id``.

    Replies leave in order, so call this after a later request was answered: a reply to
    ``conn_id`` would have arrived before that answer.
    """
    saved, client.timeout = client.timeout, 0.05
    try:
        await client.receive(conn_id)
    except TimeoutError:
        return True
    finally:
        client.timeout = saved
    return False


async def exchange(client: TestClient, raw: bytes, conn_id: int) -> TestResponse:
    """Send raw Mongrel2 bytes and read the reply to ``conn_id``."""
    await client.send_raw(raw)
    return TestResponse(await client.receive(conn_id), closed=False)


def raw_request(path: bytes, conn_id: int) -> bytes:
    """A GET for a path exactly as given, bytes the test client would not build."""
    headers = {b"METHOD": b"GET", b"VERSION": b"HTTP/1.1", b"PATH": path, b"URI": path}
    return b"S %d %s %s0:," % (conn_id, path, tnetstring.dumps(headers))


def recording_app(**options: Any) -> tuple[Brubeck, list[str]]:
    """An app whose catch-all route answers every method and records each path it saw."""
    seen: list[str] = []
    app = Brubeck(**options)

    @app.add_route(r"^.*$", method=ALL_METHODS)
    def everything(application: Brubeck, request: Request) -> str:
        seen.append(request.path)
        return f"saw {request.path}"

    return app, seen


# Function routes


def function_app(result: Callable[[], Any], **options: Any) -> Brubeck:
    app = Brubeck(**options)

    @app.add_route(r"^/f$")
    def route(application: Brubeck, request: Request) -> Any:
        return result()

    return app


@pytest.mark.parametrize(
    ("result", "status", "content_type", "content"),
    [
        ("text é", 200, "text/html; charset=utf-8", "text é".encode()),
        (b"bytes", 200, "text/html; charset=utf-8", b"bytes"),
        ({"a": [1]}, 200, "application/json", b'{"a":[1]}'),
        ([1, 2], 200, "application/json", b"[1,2]"),
        (Response(b"made", 201, content_type="text/plain"), 201, "text/plain", b"made"),
        (None, 204, None, b""),
    ],
)
async def test_function_route_results(
    result: Any, status: int, content_type: str | None, content: bytes
) -> None:
    async with TestClient(function_app(lambda: result)) as client:
        response = await client.get("/f")
    assert response.status_code == status
    assert response.headers.get("content-type") == content_type
    assert response.content == content


async def test_function_route_with_an_unsupported_result_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TestClient(function_app(lambda: 3.5)) as client:
        response = await client.get("/f")
    assert response.status_code == 500
    assert "must return a Response, str, bytes, dict, list or None, not float" in caplog.text


async def test_async_function_route_and_url_groups() -> None:
    app = Brubeck()

    @app.add_route(r"^/users/(?P<user>\w+)/(\d+)$", method=["GET", "POST"])
    async def user(application: Brubeck, request: Request, number: str, user: str) -> dict:
        await asyncio.sleep(0)
        return {"user": user, "number": number, "method": request.method}

    async with TestClient(app) as client:
        response = await client.post("/users/ada/7")
    assert response.json() == {"user": "ada", "number": "7", "method": "POST"}


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_function_route_http_error(asynchronous: bool) -> None:
    app = Brubeck()

    def fail() -> None:
        raise HTTPError(429, "slow down", {"Retry-After": 3})

    @app.add_route(r"^/f$")
    def route(application: Brubeck, request: Request) -> Any:
        if asynchronous:

            async def later() -> None:
                fail()

            return later()
        fail()

    async with TestClient(app) as client:
        response = await client.get("/f")
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")
    assert "slow down" in response.text


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_function_route_exception_is_a_logged_500_and_serving_goes_on(
    asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    app = Brubeck()

    @app.add_route(r"^/boom$")
    def boom(application: Brubeck, request: Request) -> Any:
        if asynchronous:

            async def later() -> None:
                raise OSError("disk on fire")

            return later()
        raise OSError("disk on fire")

    @app.add_route(r"^/ok$")
    def ok(application: Brubeck, request: Request) -> str:
        return "still here"

    async with TestClient(app) as client:
        failed = await client.get("/boom")
        after = await client.get("/ok")
    assert failed.status_code == 500
    assert "disk on fire" not in failed.text
    assert after.text == "still here"
    assert "uncaught exception" in caplog.text
    assert "OSError: disk on fire" in caplog.text


async def test_head_on_a_function_route_drops_the_body() -> None:
    async with TestClient(function_app(lambda: "twelve chars")) as client:
        response = await client.head("/f")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-length"] == "12"


# Routing outcomes


async def test_unknown_path_is_a_404() -> None:
    async with TestClient(function_app(lambda: "x")) as client:
        response = await client.get("/nowhere")
    assert response.status_code == 404
    assert "nothing here at /nowhere" in response.text


async def test_wrong_method_is_a_405_with_allow() -> None:
    app = function_app(lambda: "x")
    app.add_route_rule(r"^/f$", lambda application, request: "x", method=["DELETE"])
    async with TestClient(app) as client:
        response = await client.put("/f")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD"
    assert "PUT is not allowed here" in response.text


async def test_custom_error_handler_renders_404_405_and_function_errors() -> None:
    class Plain(WebMessageHandler):
        def write_error(self, status_code: int, exc_info: Any = None, message: Any = None) -> None:
            self.set_header("Content-Type", "text/plain")
            self.write(f"plain {status_code}")

    app = function_app(lambda: 1 / 0, error_handler=Plain)
    async with TestClient(app) as client:
        statuses = [await client.get("/nope"), await client.post("/f"), await client.get("/f")]
    assert [r.text for r in statuses] == ["plain 404", "plain 405", "plain 500"]


async def test_paths_are_matched_percent_decoded_and_as_utf8() -> None:
    app = Brubeck()

    @app.add_route(r"^/café/(?P<name>.+)$")
    def cafe(application: Brubeck, request: Request, name: str) -> dict:
        return {"name": name, "q": request.arguments.get("q")}

    async with TestClient(app) as client:
        raw_utf8 = await client.get("/café/crème-brûlée?q=é")
        escaped = await client.get("/caf%C3%A9/a%2Fb?q=%C3%A9")
    assert raw_utf8.json() == {"name": "crème-brûlée", "q": ["é"]}
    assert escaped.json() == {"name": "a/b", "q": ["é"]}


async def test_client_encodes_what_a_request_line_cannot_carry() -> None:
    app, seen = recording_app()
    async with TestClient(app) as client:
        with pytest.raises(ValueError, match="percent-encode"):
            client.build_message("GET", "/a b", conn_id=1)  # the raw tool sends as given
        await client.get("/a b?q=x y#part")  # as an HTTP client sends it
    assert seen[-1] == "/a b"  # sent as /a%20b, with the query q=x%20y and no fragment


@pytest.mark.parametrize("path", [b"/caf\xe9", b"/%ff"])
async def test_non_utf8_path_is_a_400(path: bytes) -> None:
    app, seen = recording_app()
    async with TestClient(app) as client:
        response = await exchange(client, raw_request(path, 9000), 9000)
    assert response.status_code == 400
    assert "not valid UTF-8" in response.text
    assert seen == []


# Closing connections


@pytest.mark.parametrize(
    ("version", "headers", "connection", "closed"),
    [
        ("HTTP/1.1", {}, None, False),
        ("HTTP/1.1", {"connection": "keep-alive"}, None, False),
        ("HTTP/1.1", {"connection": "close"}, "close", True),
        ("HTTP/1.1", {"connection": "Upgrade, Close"}, "close", True),
        ("HTTP/1.0", {}, "close", True),
        ("HTTP/1.0", {"connection": "keep-alive"}, "keep-alive", False),
    ],
)
@pytest.mark.parametrize("path", ["/f", "/missing"])
async def test_connection_close_rules(
    version: str, headers: dict[str, str], connection: str | None, closed: bool, path: str
) -> None:
    async with TestClient(function_app(lambda: "x")) as client:
        response = await client.get(path, headers=headers, version=version)
        follow_up = await client.get("/f")
    assert response.headers.get("connection") == connection
    assert response.closed is closed
    assert (follow_up.status_code, follow_up.closed) == (200, False)


# Messages that are not requests


@pytest.mark.parametrize("notice", sorted(fixtures.NOTICES))
async def test_notices_are_never_dispatched(notice: str) -> None:
    app, seen = recording_app()
    async with TestClient(app) as client:
        await client.send_raw(fixtures.with_conn_id(fixtures.NOTICES[notice], 9001))
        response = await client.get("/after")
        assert await no_reply(client, 9001)
    assert response.text == "saw /after"
    assert seen == ["/after"]


async def test_unknown_notice_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    app, seen = recording_app()
    notice = b'S 9002 @* 16:6:METHOD,4:JSON,}16:{"type":"other"},'
    async with TestClient(app) as client:
        await client.send_raw(notice)
        await client.get("/after")
        assert await no_reply(client, 9002)
    assert seen == ["/after"]
    assert "unknown Mongrel2 notice" in caplog.text


@pytest.mark.parametrize("method", [b"JSON", b"XML"])
async def test_json_and_xml_socket_messages_are_not_requests(method: bytes) -> None:
    app, seen = recording_app()
    raw = b'S 9003 /chat %s13:{"msg":"hi"},' % tnetstring.dumps({b"METHOD": method})
    async with TestClient(app) as client:
        await client.send_raw(raw)
        await client.get("/after")
        assert await no_reply(client, 9003)
    assert seen == ["/after"]


async def test_only_the_upload_done_message_is_answered(tmp_path: Any) -> None:
    spooled = tmp_path / "tmp" / "upload.C1CV4a"  # the fixture's path, inside the run dir
    spooled.parent.mkdir()
    spooled.write_bytes(b"x" * 1000)
    app = Brubeck(mongrel2_run_dir=str(tmp_path))
    seen: list[str] = []

    @app.add_route(r"^/upload$", method="POST")
    def upload(application: Brubeck, request: Request) -> str:
        seen.append(request.headers["x-mongrel2-upload-done"])
        assert request.upload.path == spooled and request.upload.size == 1000
        return "stored"

    async with TestClient(app) as client:
        await client.send_raw(fixtures.with_conn_id(fixtures.UPLOAD_START, 9004))
        response = await exchange(client, fixtures.with_conn_id(fixtures.UPLOAD_DONE, 9004), 9004)
        await client.get("/after")
        assert await no_reply(client, 9004)
    assert (response.status_code, response.text) == (200, "stored")
    assert seen == ["/tmp/upload.C1CV4a"]
    assert not spooled.exists()  # deleted once answered


async def test_uploads_refused_at_start_get_an_answer_and_a_close(tmp_path: Any) -> None:
    class Picky(WebMessageHandler):
        def accept_upload(self) -> bool:
            return self.request.headers.get("content-type") == "text/csv"

        def post(self) -> str:
            return "ok"

    app = Brubeck(handler_tuples=[(r"^/upload$", Picky)], mongrel2_run_dir=str(tmp_path))
    async with TestClient(app) as client:
        await client.send_raw(fixtures.with_conn_id(fixtures.UPLOAD_START, 31))
        refused = TestResponse(await client.receive(31), closed=False)
        assert refused.status_code == 413 and await client.receive(31) == b""
        small = Brubeck(handler_tuples=[(r"^/upload$", Picky)], max_upload_size=10)
    async with TestClient(small) as client:
        await client.send_raw(fixtures.with_conn_id(fixtures.UPLOAD_START, 32))
        assert TestResponse(await client.receive(32), closed=False).status_code == 413


async def test_upload_done_with_mismatched_or_escaping_paths_is_a_400(tmp_path: Any) -> None:
    app, seen = recording_app(mongrel2_run_dir=str(tmp_path))
    mismatched = fixtures.UPLOAD_DONE.replace(
        b"22:x-mongrel2-upload-done,18:/tmp/upload.C1CV4a",
        b"22:x-mongrel2-upload-done,18:/tmp/upload.XXXXXX",
    )
    escaping = fixtures.UPLOAD_DONE.replace(b"/tmp/upload.C1CV4a", b"/../../../etc/shdw")
    async with TestClient(app) as client:
        for conn_id, raw in ((41, mismatched), (42, escaping)):
            response = await exchange(client, fixtures.with_conn_id(raw, conn_id), conn_id)
            assert response.status_code == 400
    assert seen == []


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("get_query", "/hello/world"),
        ("post_form", "/post"),
        ("repeated_headers", "/dup"),
        ("fragment", "/frag/x"),
        ("json_get", "/json/path"),
    ],
)
async def test_every_fixture_request_is_answered_on_its_connection(name: str, path: str) -> None:
    app, seen = recording_app()
    async with TestClient(app) as client:
        response = await exchange(
            client, fixtures.with_conn_id(fixtures.REQUESTS[name], 9005), 9005
        )
    assert (response.status_code, response.text) == (200, f"saw {path}")
    assert seen == [path]


async def test_replies_echo_the_sender_and_the_app_learns_it() -> None:
    app, _ = recording_app()
    async with TestClient(app) as client:
        await client.send_raw(fixtures.with_conn_id(fixtures.GET_QUERY, 9006))
        assert client.app.msg_conn is not None
        await client.receive(9006)
        assert client.app.msg_conn.sender_id == fixtures.SENDER


# Robustness


def garbage(count: int, seed: int = 7) -> list[bytes]:
    """Random bytes and truncated fixtures; none of them is a well-formed message."""
    rng = random.Random(seed)
    samples = list(fixtures.ALL.values())
    messages = []
    for i in range(count):
        if i % 2:
            messages.append(rng.randbytes(rng.randrange(0, 200)))
        else:
            raw = rng.choice(samples)
            messages.append(raw[: rng.randrange(len(raw))])
    return messages


class DropCounter(logging.Handler):
    """Counts the app's malformed-message warnings, without pytest formatting 10,000 records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.msg.startswith("dropped a malformed message")


async def test_garbage_flood_then_a_good_request(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("brubeck.app")
    counter = DropCounter()
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(counter)
    app, seen = recording_app()
    try:
        async with TestClient(app) as client:
            for raw in garbage(10_000):
                await client.send_raw(raw)
            response = await client.get("/good")
    finally:
        logger.removeHandler(counter)
    assert (response.status_code, response.text) == (200, "saw /good")
    assert seen == ["/good"]
    assert counter.count == 10_000


@pytest.mark.parametrize(
    "headers",
    [
        {b"METHOD": 5},
        {b"METHOD": b"GET", b"VERSION": []},
        {b"METHOD": [], b"PATH": b"/x"},
        {b"METHOD": b"GET", b"x-nested": {b"a": b"b"}},
        {b"METHOD": b"GET", b"VERSION": None},
        {b"METHOD": b"GET", b"connection": [1, 2]},
    ],
)
async def test_odd_header_values_never_stop_the_app(headers: dict[bytes, Any]) -> None:
    app, _ = recording_app()
    raw = b"S 9007 /x " + tnetstring.dumps(headers) + b"0:,"
    async with TestClient(app) as client:
        await client.send_raw(raw)
        response = await client.get("/after")
    assert (response.status_code, response.text) == (200, "saw /after")


# Concurrency limit


async def test_max_in_flight_holds_back_the_next_request() -> None:
    started: list[str] = []
    release = asyncio.Event()

    class Blocked(WebMessageHandler):
        async def get(self) -> str:
            started.append(self.get_argument("n"))
            await release.wait()
            return self.get_argument("n")

    app = Brubeck(handler_tuples=[(r"^/$", Blocked)], max_in_flight=2)
    async with TestClient(app) as client:
        requests = [asyncio.create_task(client.get("/", params={"n": str(n)})) for n in range(3)]
        for _ in range(100):
            await asyncio.sleep(0.005)
            if len(started) >= 2:
                break
        await asyncio.sleep(0.05)
        assert sorted(started) == ["0", "1"]
        release.set()
        responses = await asyncio.gather(*requests)
    assert [r.text for r in responses] == ["0", "1", "2"]
    assert sorted(started) == ["0", "1", "2"]


async def test_synchronous_handlers_do_not_count_against_the_limit() -> None:
    app = function_app(lambda: "quick", max_in_flight=1)
    async with TestClient(app) as client:
        responses = await asyncio.gather(*(client.get("/f") for _ in range(20)))
    assert {r.text for r in responses} == {"quick"}


# Lifespan


async def test_startup_and_shutdown_hooks_sync_and_async() -> None:
    events: ClassVar[list[str]] = []
    app = function_app(lambda: events.append("request") or "ok")

    @app.on_startup
    def sync_start() -> None:
        events.append("sync start")

    @app.on_startup
    async def async_start() -> None:
        await asyncio.sleep(0)
        events.append("async start")

    @app.on_shutdown
    def sync_stop() -> None:
        events.append("sync stop")

    @app.on_shutdown
    async def async_stop() -> None:
        await asyncio.sleep(0)
        events.append("async stop")

    async with TestClient(app) as client:
        assert (await client.get("/f")).text == "ok"
    assert events == ["sync start", "async start", "request", "sync stop", "async stop"]


async def test_a_failing_shutdown_hook_does_not_skip_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: ClassVar[list[str]] = []
    app = function_app(lambda: "ok")

    @app.on_shutdown
    def broken() -> None:
        raise RuntimeError("hook broke")

    @app.on_shutdown
    def after() -> None:
        events.append("after")

    async with TestClient(app) as client:
        await client.get("/f")
    assert events == ["after"]
    assert "an on_shutdown hook failed" in caplog.text


async def test_graceful_stop_finishes_the_request_in_flight() -> None:
    events: ClassVar[list[str]] = []
    started, release = asyncio.Event(), asyncio.Event()

    class Slow(WebMessageHandler):
        async def get(self) -> str:
            started.set()
            await release.wait()
            events.append("request finished")
            return "finished"

    app = Brubeck(handler_tuples=[(r"^/$", Slow)])
    app.on_shutdown(lambda: events.append("shutdown"))
    async with TestClient(app) as client:
        pending = asyncio.create_task(client.get("/"))
        await asyncio.wait_for(started.wait(), 2)
        app.stop()
        await asyncio.sleep(0.02)
        assert events == []
        release.set()
        response = await pending
    assert (response.status_code, response.text) == (200, "finished")
    assert events == ["request finished", "shutdown"]


async def test_stop_cancels_requests_past_the_shutdown_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()

    class Stuck(WebMessageHandler):
        async def get(self) -> str:
            started.set()
            await asyncio.Event().wait()
            return "never"

    app = Brubeck(handler_tuples=[(r"^/$", Stuck)], shutdown_timeout=0.05)
    async with TestClient(app) as client:
        pending = asyncio.create_task(client.get("/"))
        await asyncio.wait_for(started.wait(), 2)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
    assert "cancelled 1 requests still running" in caplog.text


async def test_serve_needs_a_connection() -> None:
    with pytest.raises(RuntimeError, match="msg_conn"):
        await Brubeck().serve()


def test_stop_before_serve_is_harmless() -> None:
    Brubeck().stop()


# Construction


def test_settings_and_options_are_merged() -> None:
    app = Brubeck(settings={"debug": False, "a": 1}, debug=True, template_dir="t")
    assert app.settings == {"debug": True, "a": 1, "template_dir": "t"}


def test_handler_tuples_with_init_kwargs() -> None:
    class Page(WebMessageHandler):
        def get(self) -> None: ...

    app = Brubeck(handler_tuples=[(r"^/a$", Page), (r"^/b$", Page, {"title": "B"})])
    assert [r.init_kwargs for r in app.router.routes] == [{}, {"title": "B"}]


async def test_handler_tuple_init_kwargs_may_be_called_name_or_method() -> None:
    class Named(WebMessageHandler):
        def get(self) -> dict[str, str]:
            return {"name": self.name, "method": self.method}

    app = Brubeck(handler_tuples=[(r"^/$", Named, {"name": "home", "method": "POST"})])
    route = app.router.routes[0]
    assert (route.name, route.methods) == (None, {"GET", "HEAD"})
    async with TestClient(app) as client:
        assert (await client.get("/")).json() == {"name": "home", "method": "POST"}


@pytest.mark.parametrize("rule", [("^/$",), ("^/$", WebMessageHandler, {}, "extra")])
def test_handler_tuples_of_the_wrong_length(rule: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError, match="a handler tuple is"):
        Brubeck(handler_tuples=[rule])


@pytest.mark.parametrize("target", [object, "not callable", Request])
def test_route_targets_must_be_handlers_or_functions(target: Any) -> None:
    with pytest.raises(TypeError, match="MessageHandler subclass or a function"):
        Brubeck().add_route_rule("^/$", target)


def test_init_kwargs_are_for_classes() -> None:
    with pytest.raises(TypeError, match="init kwargs are for handler classes"):
        Brubeck().add_route_rule("^/$", lambda app, request: "x", greeting="hi")


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight must be at least 1"):
        Brubeck(max_in_flight=0)


def test_reverse_url_even_for_a_group_called_name() -> None:
    app = Brubeck()
    app.add_route_rule(r"^/u/(?P<name>\w+)$", lambda a, r: "x", name="user")
    assert app.reverse_url("user", name="ada") == "/u/ada"


async def test_pipelined_answers_keep_request_order() -> None:
    """A slow async request then a fast one on the same connection: answers leave in order."""
    app = Brubeck()
    release = asyncio.Event()

    @app.add_route(r"^/slow$")
    async def slow(application: Brubeck, request: Request) -> str:
        await release.wait()
        return "slow"

    @app.add_route(r"^/fast$")
    def fast(application: Brubeck, request: Request) -> str:
        return "fast"

    async with TestClient(app) as client:
        await client.send_raw(client.build_message("GET", "/slow", conn_id=7))
        await client.send_raw(client.build_message("GET", "/fast", conn_id=7))
        await client.send_raw(client.build_message("GET", "/fast", conn_id=8))
        other = TestResponse(await client.receive(8), closed=False)
        assert other.text == "fast"  # another connection is not held up
        assert await no_reply(client, 7)
        release.set()
        first = TestResponse(await client.receive(7), closed=False)
        second = TestResponse(await client.receive(7), closed=False)
        assert (first.text, second.text) == ("slow", "fast")
        assert app._order.queues == {}


async def test_a_forged_upload_header_without_a_body_is_answered() -> None:
    """Mongrel2's upload-start always announces a body; a bare client header is a request."""
    app, seen = recording_app()
    async with TestClient(app) as client:
        response = await client.get("/x", headers={"x-mongrel2-upload-start": "tmp/upload.X"})
        assert response.status_code == 200 and seen == ["/x"]


async def test_reason_phrase_with_a_line_break_is_refused() -> None:
    class Splitter(WebMessageHandler):
        def get(self) -> None:
            self.set_status(200, "OK\r\nX-Injected: yes")

    async with TestClient(Brubeck(handler_tuples=[(r"^/$", Splitter)])) as client:
        response = await client.get("/")
        assert response.status_code == 500
        assert "x-injected" not in response.headers


class Waiter(WebMessageHandler):
    """Holds its request until released; records what happened to it."""

    events: ClassVar[list[str]] = []
    release = asyncio.Event()

    async def get(self) -> str:
        try:
            await Waiter.release.wait()
        except asyncio.CancelledError:
            Waiter.events.append("cancelled")
            raise
        return "released"

    def on_connection_close(self) -> None:
        Waiter.events.append("closed")


async def test_a_disconnect_tells_the_handler_and_cancels_its_task() -> None:
    Waiter.events, Waiter.release = [], asyncio.Event()
    app = Brubeck(handler_tuples=[(r"^/wait$", Waiter)])
    async with TestClient(app) as client:
        await client.send_raw(client.build_message("GET", "/wait", conn_id=4))
        async with asyncio.timeout(2):
            while 4 not in [int(c) for c in app._inflight._by_conn]:
                await asyncio.sleep(0.01)
        await client.send_raw(fixtures.DISCONNECT)  # a notice for connection 4
        async with asyncio.timeout(2):
            while "cancelled" not in Waiter.events:
                await asyncio.sleep(0.01)
        assert Waiter.events == ["closed", "cancelled"]
        assert await no_reply(client, 4) and len(app._inflight) == 0


async def test_a_handler_past_its_timeout_gets_a_504() -> None:
    class Slow(Waiter):
        timeout = 0.05

    Waiter.events, Waiter.release = [], asyncio.Event()
    async with TestClient(Brubeck(handler_tuples=[(r"^/slow$", Slow)])) as client:
        response = await client.get("/slow")
        assert response.status_code == 504 and Waiter.events == ["cancelled"]


async def test_held_connections_get_keep_alive_ctl() -> None:
    Waiter.events, Waiter.release = [], asyncio.Event()
    app = Brubeck(handler_tuples=[(r"^/wait$", Waiter)], keepalive_interval=0.05)
    async with TestClient(app) as client:
        await client.send_raw(client.build_message("GET", "/wait", conn_id=9))
        ctl = await client.receive(9)  # the raw stream: the "X 9" ctl reply comes first
        assert tnetstring.loads(ctl) == [b"ctl", {b"keep-alive": True}]
        assert client.controls[b"9"][0] == [b"ctl", {b"keep-alive": True}]
        answer = asyncio.ensure_future(client.receive_reply(9))
        await until(lambda: len(client.controls[b"9"]) > 1, "another keep-alive")
        Waiter.release.set()
        assert (await answer).startswith(b"HTTP/1.1 200 OK")  # no ctl taken for the answer


# Mongrel2 going away: a new one gives the old connection ids to new clients


@pytest.fixture
async def over_tcp() -> AsyncIterator[Callable[[Brubeck], Awaitable[Mongrel2Side]]]:
    """``start(app)``: serve the app from a fake Mongrel2 over TCP, which can stop and start."""
    context = zmq.asyncio.Context()
    served: list[tuple[Brubeck, asyncio.Task[None], Mongrel2Side]] = []

    async def start(app: Brubeck) -> Mongrel2Side:
        side = Mongrel2Side(context, "tcp")
        app.msg_conn = side.connection()
        served.append((app, asyncio.get_running_loop().create_task(app.serve()), side))
        await until(lambda: app.msg_conn is not None and app.msg_conn.is_open, "serve")
        await handshaken(app.msg_conn)
        return side

    yield start
    for app, task, side in served:
        app.stop()
        await asyncio.wait_for(task, 5)
        await side.close()
    context.destroy(linger=0)


def message(path: bytes, conn_id: int, **headers: bytes) -> bytes:
    head = {b"METHOD": b"GET", b"VERSION": b"HTTP/1.1", b"PATH": path, b"URI": path}
    head.update((key.encode(), value) for key, value in headers.items())
    return b"S %d %s %s0:," % (conn_id, path, tnetstring.dumps(head))


def body(reply: bytes) -> bytes:
    return reply.partition(b", ")[2].partition(b"\r\n\r\n")[2]


class Held(WebMessageHandler):
    """Answers once ``app.state.release`` is set; records its request and its close."""

    async def get(self, name: str) -> str:
        state = self.application.state
        state.held.append(self.request)
        await state.release.wait()
        return f"answer for {name}"

    def on_connection_close(self) -> None:
        self.application.state.closed.append(self.request.path)


def held_app() -> Brubeck:
    app = Brubeck(handler_tuples=[(r"^/hold/(\w+)$", Held)])
    app.state.held, app.state.closed, app.state.release = [], [], asyncio.Event()

    @app.add_route(r"^/now$")
    def now(application: Brubeck, request: Request) -> str:
        return "now"

    return app


async def lose_mongrel2(app: Brubeck, side: Mongrel2Side) -> None:
    """Mongrel2 is killed; another starts on the same addresses."""
    epoch = app.epoch
    await side.stop()
    await until(lambda: app.epoch == epoch + 1, "the loss")
    side.start()
    assert app.msg_conn is not None
    await handshaken(app.msg_conn)


async def test_a_late_answer_never_reaches_the_client_that_got_the_same_id(
    over_tcp: Callable[[Brubeck], Awaitable[Mongrel2Side]], caplog: pytest.LogCaptureFixture
) -> None:
    app = held_app()
    side = await over_tcp(app)
    await side.push.send(message(b"/hold/old", 7))
    await until(lambda: len(app.state.held) == 1, "the old request")
    await lose_mongrel2(app, side)
    assert app.state.closed == ["/hold/old"] and len(app._inflight) == 0
    await side.push.send(message(b"/hold/new", 7))
    await until(lambda: len(app.state.held) == 2, "the new request")
    app.state.release.set()
    (reply,) = await side.replies(1)
    assert targets(reply) == [7] and body(reply) == b"answer for new"
    await side.assert_quiet()  # neither the old answer nor a 504
    lost = [r for r in caplog.records if "Mongrel2 went away" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert "dropped 1 requests in progress" in lost[0].getMessage()


async def test_pipelined_answers_and_credit_windows_of_a_lost_mongrel2_are_forgotten(
    over_tcp: Callable[[Brubeck], Awaitable[Mongrel2Side]], caplog: pytest.LogCaptureFixture
) -> None:
    app = held_app()
    side = await over_tcp(app)
    await side.push.send(message(b"/hold/old", 5, DOWNLOAD_CREDITS=b"102400"))
    await side.push.send(message(b"/now", 5))  # pipelined: waits for the one before
    await until(lambda: app.state.held and app._order.queues.get(b"5"), "the pipelined request")
    assert app._windows
    await lose_mongrel2(app, side)
    assert app._order.queues == {} and app._windows == {}
    await side.push.send(message(b"/now", 5))  # a new client: nothing to wait for
    (reply,) = await side.replies(1)
    assert targets(reply) == [5] and body(reply) == b"now"
    old = app.state.held[0]
    caplog.clear()
    caplog.set_level(logging.INFO, "brubeck.app")
    app.respond(old, Response("stale"))
    app.send_to(old, b"stale")
    await side.assert_quiet()
    assert [r.getMessage() for r in caplog.records] == [
        f"not sending to {old!r}: its Mongrel2 went away"
    ]


async def test_a_release_skips_requests_of_a_lost_mongrel2(
    over_tcp: Callable[[Brubeck], Awaitable[Mongrel2Side]],
) -> None:
    app = Brubeck()
    room = WaitingRoom(app)
    parked: list[Request] = []

    class Wait(WebMessageHandler):
        async def get(self) -> Response:
            parked.append(self.request)
            return await room.wait(self.request)

    @app.add_route(r"^/release$")
    def release(application: Brubeck, request: Request) -> str:
        return f"released {room.release(Response('news'))}"

    app.add_route_rule(r"^/wait$", Wait)
    side = await over_tcp(app)
    await side.push.send(message(b"/wait", 5))
    await until(lambda: len(room) == 1, "the old request")
    await lose_mongrel2(app, side)
    await side.push.send(message(b"/wait", 7))
    await until(lambda: len(parked) == 2, "the new request")
    await side.push.send(message(b"/release", 9))
    news, released = await side.replies(2)
    assert targets(news) == [7] and body(news) == b"news"
    assert targets(released) == [9] and body(released) == b"released 1"
    assert app.deliver([parked[0]], Response("late")) == 0
    await side.assert_quiet()


async def test_websockets_of_a_lost_mongrel2_are_closed_without_a_word(
    over_tcp: Callable[[Brubeck], Awaitable[Mongrel2Side]],
) -> None:
    closed: list[int] = []
    told: list[int] = []

    class Chat(WebSocketHandler):
        def open(self) -> None:
            self.join("all")

        def on_message(self, message: str | bytes) -> None:
            pass

        def on_close(self, code: int, reason: str) -> None:
            closed.append(code)
            told.append(self.broadcast("someone left", "all"))  # the other is still open

    app = Brubeck(handler_tuples=[(r"^/ws/echo$", Chat)])
    side = await over_tcp(app)
    for conn_id in (5, 6):
        await side.push.send(fixtures.with_conn_id(fixtures.WEBSOCKET_HANDSHAKE, conn_id))
    accepted = await side.replies(2)
    assert sorted(i for reply in accepted for i in targets(reply)) == [5, 6]
    await lose_mongrel2(app, side)
    assert closed == [1006, 1006] and told == [0, 0] and len(app.websockets) == 0
    assert app.websockets.members("all") == frozenset()
    await side.assert_quiet()
