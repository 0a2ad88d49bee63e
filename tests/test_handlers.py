"""handlers.py: the handler API, driven through a real app by the test client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from brubeck import (
    Brubeck,
    HTTPError,
    JSONMessageHandler,
    MessageHandler,
    Response,
    WebMessageHandler,
    render,
)
from brubeck.testing import TestClient, TestResponse


async def call(
    handler: type[MessageHandler],
    method: str = "GET",
    path: str = "/",
    *,
    pattern: str = r"^/$",
    init: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    **request: Any,
) -> TestResponse:
    """Serve ``handler`` at ``pattern`` and answer one request."""
    route = (pattern, handler, init) if init is not None else (pattern, handler)
    app = Brubeck(handler_tuples=[route], settings=settings)
    async with TestClient(app) as client:
        return await client.request(method, path, **request)


def assert_no_injection(response: TestResponse) -> None:
    head = response.raw.partition(b"\r\n\r\n")[0]
    assert b"evil" not in head
    assert response.get_all("Set-Cookie") == []


class DemoHandler(WebMessageHandler):
    """The original Brubeck demo."""

    def get(self) -> Response:
        name = self.get_argument("name", "dude")
        self.set_body(f"Take five, {name}!")
        return self.render()


# Verbs and what they return


async def test_demo_handler() -> None:
    response = await call(DemoHandler)
    assert response.status_code == 200
    assert response.reason == "OK"
    assert response.text == "Take five, dude!"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-length"] == str(len(response.content))
    assert not response.closed


async def test_demo_handler_reads_the_query() -> None:
    response = await call(DemoHandler, params={"name": "Brubeck"})
    assert response.text == "Take five, Brubeck!"


async def test_async_verb() -> None:
    class Slow(WebMessageHandler):
        async def get(self) -> str:
            await asyncio.sleep(0.001)
            return "awaited"

    response = await call(Slow)
    assert (response.status_code, response.text) == (200, "awaited")


@pytest.mark.parametrize(
    ("result", "content_type", "content"),
    [
        ("héllo", "text/html; charset=utf-8", "héllo".encode()),
        (b"\x00raw", "text/html; charset=utf-8", b"\x00raw"),
        ({"a": 1}, "application/json", b'{"a":1}'),
        ([1, "two"], "application/json", b'[1,"two"]'),
    ],
)
async def test_verb_return_values(result: Any, content_type: str, content: bytes) -> None:
    class Returns(WebMessageHandler):
        def get(self) -> Any:
            return result

    response = await call(Returns)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == content


async def test_verb_returning_none_sends_what_was_written() -> None:
    class Writes(WebMessageHandler):
        def post(self) -> None:
            self.write("a")
            self.write(b"b")
            self.set_status(201)

    response = await call(Writes, "POST")
    assert (response.status_code, response.content) == (201, b"ab")


async def test_verb_returning_a_response() -> None:
    class Direct(WebMessageHandler):
        def get(self) -> Response:
            return Response(b"teapot", 418, {"X-Kind": "tea"}, content_type="text/plain")

    response = await call(Direct)
    assert (response.status_code, response.reason, response.text) == (418, "I'm a Teapot", "teapot")
    assert response.headers["x-kind"] == "tea"


async def test_json_handler_payload() -> None:
    class Api(JSONMessageHandler):
        def get(self) -> Response:
            self.add_to_payload("message", "hi")
            self.add_to_payload("items", [1, 2])
            return self.render(status_code=202)

    response = await call(Api)
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": "hi", "items": [1, 2]}


async def test_write_after_render_is_a_500() -> None:
    class Writes(WebMessageHandler):
        def get(self) -> None:
            self.write({"ok": True})
            self.render()
            self.write("too late")

    response = await call(Writes)
    assert response.status_code == 500


async def test_write_of_a_dict_sets_the_json_type() -> None:
    class Writes(WebMessageHandler):
        def get(self) -> None:
            self.write({"ok": True})

    response = await call(Writes)
    assert (response.headers["content-type"], response.json()) == ("application/json", {"ok": True})


async def test_set_body_with_headers_and_status() -> None:
    class Body(WebMessageHandler):
        def get(self) -> Response:
            self.set_body({"a": 1}, headers={"X-A": "1"}, status_code=203)
            return self.render()

    response = await call(Body)
    assert response.status_code == 203
    assert response.headers["x-a"] == "1"
    assert response.json() == {"a": 1}


async def test_head_runs_get_and_drops_the_body() -> None:
    response = await call(DemoHandler, "HEAD")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len("Take five, dude!"))


async def test_head_method_of_its_own_wins() -> None:
    class Heads(WebMessageHandler):
        def get(self) -> str:
            return "from get"

        def head(self) -> Response:
            self.set_header("X-From", "head")
            return self.render()

    response = await call(Heads, "HEAD")
    assert response.headers["x-from"] == "head"


async def test_verb_not_defined_is_a_405_with_allow() -> None:
    class GetOnly(WebMessageHandler):
        def get(self) -> str:
            return "x"

    response = await call(GetOnly, "POST")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_handler_routed_for_more_methods_than_it_has_answers_405() -> None:
    class GetOnly(WebMessageHandler):
        def get(self) -> str:
            return "x"

    app = Brubeck()
    app.add_route_rule("^/$", GetOnly, method=["GET", "DELETE"])
    async with TestClient(app) as client:
        response = await client.delete("/")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


# Headers, status, redirects


async def test_set_add_clear_and_get_header() -> None:
    class Headers(WebMessageHandler):
        def get(self) -> str:
            self.set_header("X-One", "first")
            self.set_header("x-one", "replaced")
            self.add_header("Set-Cookie", "a=1")
            self.add_header("Set-Cookie", "b=2")
            self.set_header("X-Gone", "soon")
            self.clear_header("X-GONE")
            self.set_header("X-Int", 42)
            self.set_header("Content-Type", "text/plain")
            assert self.get_header("X-ONE") == "replaced"
            assert self.get_header("set-cookie") == "b=2"
            assert self.get_header("x-gone") is None
            assert self.get_header("x-gone", "d") == "d"
            assert self.get_header("content-type") == "text/plain"
            return "ok"

    response = await call(Headers)
    assert response.status_code == 200
    assert response.get_all("X-One") == ["replaced"]
    assert response.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert response.get_all("X-Gone") == []
    assert response.headers["x-int"] == "42"
    assert response.get_all("Content-Type") == ["text/plain"]


async def test_clear_content_type_falls_back_to_the_class_default() -> None:
    class Cleared(JSONMessageHandler):
        def get(self) -> str:
            self.set_header("Content-Type", "text/plain")
            self.clear_header("content-type")
            return "[]"

    response = await call(Cleared)
    assert response.get_all("Content-Type") == ["application/json"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [({}, 302), ({"permanent": True}, 301), ({"status": 303}, 303), ({"status": 307}, 307)],
)
async def test_redirect(kwargs: dict[str, Any], status: int) -> None:
    class Moves(WebMessageHandler):
        def get(self) -> Response:
            self.write("dropped")
            return self.redirect("/elsewhere?x=1", **kwargs)

    response = await call(Moves)
    assert response.status_code == status
    assert response.headers["location"] == "/elsewhere?x=1"
    assert response.content == b""


async def test_redirect_with_a_non_3xx_status_is_a_500() -> None:
    class Bad(WebMessageHandler):
        def get(self) -> Response:
            return self.redirect("/x", status=200)

    assert (await call(Bad)).status_code == 500


async def test_set_status_with_a_custom_reason() -> None:
    class Custom(WebMessageHandler):
        def get(self) -> str:
            self.set_status(299, "Fine Enough")
            assert self.status_code == 299
            return "x"

    response = await call(Custom)
    assert (response.status_code, response.reason) == (299, "Fine Enough")


@pytest.mark.parametrize("status", [99, 1000, "200"])
async def test_set_status_refuses_bad_codes(status: Any) -> None:
    class Bad(WebMessageHandler):
        def get(self) -> str:
            self.set_status(status)
            return "x"

    assert (await call(Bad)).status_code == 500


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Evil", "a\r\nSet-Cookie: evil=1"),
        ("X-Evil", "a\nevil: 1"),
        ("X-Evil", "a\0evil"),
        ("X-Evil\r\nSet-Cookie", "evil=1"),
    ],
)
async def test_header_with_cr_lf_is_a_500_without_injection(name: str, value: str) -> None:
    class Injects(WebMessageHandler):
        def get(self) -> str:
            self.set_header(name, value)
            return "x"

    response = await call(Injects)
    assert response.status_code == 500
    assert_no_injection(response)


async def test_http_error_header_with_cr_lf_is_a_500_without_injection() -> None:
    class Injects(WebMessageHandler):
        def get(self) -> None:
            raise HTTPError(503, headers={"Retry-After": "5\r\nSet-Cookie: evil=1"})

    response = await call(Injects)
    assert response.status_code == 500
    assert_no_injection(response)


async def test_non_latin1_header_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    class Emoji(WebMessageHandler):
        def get(self) -> str:
            self.set_header("X-Emoji", "😀")
            return "x"

    response = await call(Emoji)
    assert response.status_code == 500
    assert "not Latin-1" in caplog.text


# Arguments and cookies


async def test_get_argument_and_get_arguments() -> None:
    class Args(WebMessageHandler):
        def post(self) -> dict[str, Any]:
            return {
                "one": self.get_argument("one"),
                "last": self.get_argument("many"),
                "many": self.get_arguments("many"),
                "raw": self.get_argument("pad", strip=False),
                "stripped": self.get_argument("pad"),
                "raw_list": self.get_arguments("pad", strip=False),
                "default": self.get_argument("missing", None),
                "none": self.get_arguments("missing"),
            }

    response = await call(Args, "POST", "/?one=1&many=a&many=b", data={"many": "c", "pad": " p "})
    assert response.json() == {
        "one": "1",
        "last": "c",
        "many": ["a", "b", "c"],
        "raw": " p ",
        "stripped": "p",
        "raw_list": [" p "],
        "default": None,
        "none": [],
    }


async def test_required_argument_missing_is_a_400_naming_it() -> None:
    class Needs(WebMessageHandler):
        def get(self) -> str:
            return self.get_argument("user_id")

    response = await call(Needs)
    assert response.status_code == 400
    assert "missing argument &#x27;user_id&#x27;" in response.text


async def test_non_utf8_query_is_a_400() -> None:
    response = await call(DemoHandler, path="/?name=%ff")
    assert response.status_code == 400
    assert "query string" in response.text


async def test_get_cookie() -> None:
    class Cookies(WebMessageHandler):
        def get(self) -> dict[str, Any]:
            return {"a": self.get_cookie("a"), "missing": self.get_cookie("zz", "d")}

    response = await call(Cookies, headers={"cookie": ["a=1; b=2", "c=3"]})
    assert response.json() == {"a": "1", "missing": "d"}


async def test_request_and_message_are_the_same_and_settings_are_the_apps() -> None:
    class Looks(WebMessageHandler):
        def get(self) -> dict[str, Any]:
            assert self.request is self.message
            return {"path": self.request.path, "flag": self.settings["flag"]}

    response = await call(Looks, path="/a%20b", pattern="^/a b$", settings={"flag": "on"})
    assert response.json() == {"path": "/a b", "flag": "on"}


# Hooks


async def test_initialize_receives_the_route_init_kwargs() -> None:
    class Greets(WebMessageHandler):
        def initialize(self, greeting: str, punctuation: str = ".") -> None:
            self.greeting = greeting + punctuation

        def get(self) -> str:
            return self.greeting

    response = await call(Greets, init={"greeting": "hello", "punctuation": "!"})
    assert response.text == "hello!"


async def test_default_initialize_sets_attributes() -> None:
    class Plain(WebMessageHandler):
        db: str

        def get(self) -> str:
            return self.db

    assert (await call(Plain, init={"db": "sqlite"})).text == "sqlite"


class SyncPrepare(WebMessageHandler):
    def prepare(self) -> None:
        self.steps = ["prepare"]

    async def get(self) -> list[str]:
        return [*self.steps, "get"]


class AsyncPrepare(SyncPrepare):
    async def prepare(self) -> None:
        await asyncio.sleep(0)
        self.steps = ["prepare"]


@pytest.mark.parametrize("handler", [SyncPrepare, AsyncPrepare])
async def test_prepare_runs_before_the_verb(handler: type[MessageHandler]) -> None:
    assert (await call(handler)).json() == ["prepare", "get"]


class SyncLogin(WebMessageHandler):
    def prepare(self) -> None:
        self.redirect("/login")

    def get(self) -> str:
        raise AssertionError("the verb must not run")


class AsyncLogin(SyncLogin):
    async def prepare(self) -> None:
        await asyncio.sleep(0)
        self.redirect("/login")


@pytest.mark.parametrize("handler", [SyncLogin, AsyncLogin])
async def test_prepare_that_finishes_skips_the_verb(handler: type[MessageHandler]) -> None:
    response = await call(handler)
    assert (response.status_code, response.headers["location"]) == (302, "/login")


class SyncFinish(WebMessageHandler):
    finished: asyncio.Event

    def get(self) -> str:
        return "done"

    def on_finish(self) -> None:
        self.finished.set()


class AsyncFinish(SyncFinish):
    async def on_finish(self) -> None:
        await asyncio.sleep(0)
        self.finished.set()


class AsyncVerbSyncFinish(SyncFinish):
    async def get(self) -> str:
        return "done"


class AsyncVerbAsyncFinish(AsyncFinish):
    async def get(self) -> str:
        return "done"


@pytest.mark.parametrize(
    "handler", [SyncFinish, AsyncFinish, AsyncVerbSyncFinish, AsyncVerbAsyncFinish]
)
async def test_on_finish_runs_after_the_response(handler: type[MessageHandler]) -> None:
    finished = asyncio.Event()
    app = Brubeck(handler_tuples=[("^/$", handler, {"finished": finished})])
    async with TestClient(app) as client:
        assert (await client.get("/")).text == "done"
        await asyncio.wait_for(finished.wait(), 2)


async def test_on_finish_failure_is_logged_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Fails(WebMessageHandler):
        def get(self) -> str:
            return "ok"

        def on_finish(self) -> None:
            raise RuntimeError("cleanup broke")

    app = Brubeck(handler_tuples=[("^/$", Fails)])
    async with TestClient(app) as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/")).status_code == 200
    assert "Fails.on_finish failed" in caplog.text
    assert "cleanup broke" in caplog.text


# Errors


@pytest.mark.parametrize("where", ["prepare", "verb", "async_prepare", "async_verb"])
async def test_http_error_anywhere_becomes_that_status(where: str) -> None:
    def fail() -> None:
        raise HTTPError(404, "no such <thing>", {"X-Why": "gone"})

    class Fails(WebMessageHandler):
        def prepare(self) -> Any:
            if where == "prepare":
                fail()
            return self._later() if where == "async_prepare" else None

        async def _later(self) -> None:
            fail()

        def get(self) -> Any:
            if where == "verb":
                fail()
            return self._later() if where == "async_verb" else "not reached"

    response = await call(Fails)
    assert response.status_code == 404
    assert response.headers["x-why"] == "gone"
    assert "<h1>404 Not Found</h1>" in response.text
    assert "no such &lt;thing&gt;" in response.text


async def test_http_error_keeps_set_cookie_but_drops_other_headers() -> None:
    class Fails(WebMessageHandler):
        def get(self) -> None:
            self.add_header("Set-Cookie", "session=1")
            self.set_header("X-Partial", "1")
            self.write("partial body")
            raise HTTPError(403)

    response = await call(Fails)
    assert response.status_code == 403
    assert response.get_all("Set-Cookie") == ["session=1"]
    assert "x-partial" not in response.headers
    assert "partial body" not in response.text


async def test_http_error_in_an_unknown_range() -> None:
    class Fails(WebMessageHandler):
        def get(self) -> None:
            raise HTTPError(599)

    response = await call(Fails)
    assert (response.status_code, response.reason) == (599, "Unknown")


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_exception_is_a_logged_500_and_the_next_request_works(
    asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    class Breaks(WebMessageHandler):
        def get(self) -> Any:
            if self.get_argument("ok", None):
                return "fine"
            if asynchronous:
                return self._boom()
            raise ZeroDivisionError("secret detail")

        async def _boom(self) -> None:
            raise ZeroDivisionError("secret detail")

    app = Brubeck(handler_tuples=[("^/$", Breaks)])
    async with TestClient(app) as client:
        failed = await client.get("/")
        assert (await client.get("/?ok=1")).text == "fine"
    assert failed.status_code == 500
    assert "Internal Server Error" in failed.text
    assert "secret detail" not in failed.text
    assert "Traceback" not in failed.text
    record = next(r for r in caplog.records if "uncaught exception in Breaks" in r.getMessage())
    assert record.levelno == logging.ERROR
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError
    assert "ZeroDivisionError: secret detail" in caplog.text


async def test_debug_shows_the_traceback() -> None:
    class Breaks(WebMessageHandler):
        def get(self) -> None:
            raise KeyError("where-it-broke")

    response = await call(Breaks, settings={"debug": True})
    assert response.status_code == 500
    assert "<pre>Traceback" in response.text
    assert "KeyError: &#x27;where-it-broke&#x27;" in response.text


async def test_json_handler_errors_are_json() -> None:
    class Api(JSONMessageHandler):
        def get(self) -> None:
            self.add_to_payload("partial", True)
            raise HTTPError(409, "already there")

        def post(self) -> None:
            raise ValueError("bug")

    app = Brubeck(handler_tuples=[("^/$", Api)], debug=True)
    async with TestClient(app) as client:
        conflict = await client.get("/")
        crash = await client.post("/")
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/json"
    assert conflict.json() == {
        "error": {"status": 409, "reason": "Conflict", "message": "already there"}
    }
    assert crash.status_code == 500
    error = crash.json()["error"]
    assert (error["status"], error["reason"]) == (500, "Internal Server Error")
    assert "ValueError: bug" in "".join(error["traceback"])


async def test_custom_write_error() -> None:
    class Custom(WebMessageHandler):
        def get(self) -> None:
            raise HTTPError(418, "short and stout")

        def write_error(self, status_code: int, exc_info: Any = None, message: Any = None) -> None:
            self.set_header("Content-Type", "text/plain")
            self.write(f"custom {status_code}: {message}")

    response = await call(Custom)
    assert (response.status_code, response.text) == (418, "custom 418: short and stout")
    assert response.headers["content-type"] == "text/plain"


async def test_failing_write_error_still_answers_a_bare_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Worse(WebMessageHandler):
        def get(self) -> None:
            raise RuntimeError("first")

        def write_error(self, status_code: int, exc_info: Any = None, message: Any = None) -> None:
            raise RuntimeError("second")

    response = await call(Worse)
    assert response.status_code == 500
    assert response.text == "500 Internal Server Error\n"
    assert "write_error of Worse failed" in caplog.text


async def test_send_error_from_a_verb() -> None:
    class Sends(WebMessageHandler):
        def get(self) -> Response:
            return self.send_error(451, "legal said no")

    response = await call(Sends)
    assert response.status_code == 451
    assert "legal said no" in response.text


def test_allowed_methods() -> None:
    class Verbs(MessageHandler):
        def get(self) -> None: ...

        def put(self) -> None: ...

        trace = "not callable"

    assert Verbs.allowed_methods() == ["GET", "PUT", "HEAD"]
    assert MessageHandler.allowed_methods() == []


def test_render_function_for_function_routes() -> None:
    response = render("body", 201, "Made", {"X-A": "1"})
    assert (response.status, response.reason, response.body) == (201, "Made", b"body")
    assert response.headers == [("X-A", "1")]
