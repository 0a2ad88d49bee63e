"""The request side and routing under adversarial input, through ``handle_message``.

Each test sends the bytes Mongrel2 would send (tnetstring headers) straight to the app's hot
path and reads what the app answers. Those marked "Was a bug" failed before their fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tnetstring

from brubeck import HTTPError, JSONMessageHandler, WebMessageHandler
from brubeck.app import Brubeck
from brubeck.request import Request
from tests import fixtures


def _message(
    method: bytes,
    path: bytes,
    query: bytes | None = None,
    headers: dict[bytes, Any] | None = None,
    body: bytes = b"",
    conn_id: int = 1,
    scheme: bytes = b"http",
) -> bytes:
    uri = path + (b"?" + query if query is not None else b"")
    fields: dict[bytes, Any] = {
        b"host": b"example.test",
        b"x-forwarded-for": b"127.0.0.1",
    }
    if body:
        fields[b"content-length"] = b"%d" % len(body)
    fields.update(headers or {})
    fields.update(
        {
            b"METHOD": method,
            b"VERSION": b"HTTP/1.1",
            b"PATH": path,
            b"URI": uri,
            b"PATTERN": b"/",
            b"URL_SCHEME": scheme,
            b"REMOTE_ADDR": b"127.0.0.1",
        }
    )
    if query is not None:
        fields[b"QUERY"] = query
    return b"S %d %s %s%s" % (conn_id, path, tnetstring.dumps(fields), tnetstring.dumps(body))


class _Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ")[3])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()


def _ask(app: Brubeck, method: bytes | str, path: bytes | str, **kw: Any) -> _Answer:
    """One request through the hot path; exactly one answer is expected."""
    wire = fixtures.RecordingConnection()
    app.msg_conn = wire  # type: ignore[assignment]
    if isinstance(method, str):
        method = method.encode()
    if isinstance(path, str):
        path = path.encode()
    app.handle_message(_message(method, path, **kw))
    answers = [sent for sent in wire.sent if sent]
    assert len(answers) == 1, wire.sent
    return _Answer(answers[0])


def _echo_app(pattern: str, name: str | None = None) -> Brubeck:
    """An app whose one function route answers with the repr of its groups."""
    app = Brubeck()

    @app.add_route(pattern, name=name)
    def echo(application: Brubeck, request: Request, *args: Any, **kwargs: Any) -> str:
        return repr((args, kwargs))

    return app


# Routing: $ and the percent-decoded path


def test_dollar_route_does_not_answer_a_path_with_an_encoded_trailing_newline() -> None:
    """Was a bug: ``$`` also matches before a final newline, so /admin%0A reached ^/admin$.
    An encoded control character in the path is now a 400, whatever the routes."""
    app = _echo_app(r"^/admin$")
    assert _ask(app, "GET", "/admin").status == 200
    for path in ("/admin%0A", "/admin%0D", "/admin%00", "/adm%09in", "/admin%7F"):
        assert _ask(app, "GET", path).status == 400, path
    assert _ask(app, "GET", "/admin%20").status == 404  # a space is not a control character


def test_route_group_does_not_silently_lose_an_encoded_trailing_newline() -> None:
    """Was a bug: /files/abc%0A reached the handler as name='abc': the newline was dropped."""
    app = _echo_app(r"^/files/(?P<name>.+)$")
    answer = _ask(app, "GET", "/files/abc%0A")
    assert answer.body != repr(((), {"name": "abc"})).encode()


def test_reverse_url_value_with_a_trailing_newline_round_trips_or_is_refused() -> None:
    """Was a bug: reverse_url accepted 'a\\n' for (.+)$, but the request for it passes 'a'."""
    app = _echo_app(r"^/n/(?P<x>.+)$", name="n")
    try:
        url = app.reverse_url("n", x="a\n")
    except ValueError:
        return
    assert _ask(app, "GET", url).body == repr(((), {"x": "a\n"})).encode()


# Routing: reverse_url and the literal parts of a pattern


@pytest.mark.parametrize(
    "pattern",
    [
        r"^/what\?/(?P<id>\d+)$",  # an escaped ?: a raw one starts the query string
        r"^/a\#b/(?P<id>\d+)$",  # a raw # starts a fragment, never sent
        r"^/my page/(?P<id>\d+)$",  # a space is not allowed in a request target
        "^/café/(?P<id>\\d+)$",  # non-ASCII: not allowed in a URL (or a Location header)
        r"^/100%41/(?P<id>\d+)$",  # a literal %41: sent as is, it decodes to "A"
    ],
)
def test_reverse_url_percent_encodes_the_literal_parts_of_a_pattern(pattern: str) -> None:
    """Was a bug: only group values were encoded; literals went out raw, giving a URL that
    does not lead back to the route (or a ValueError for a valid route)."""
    app = _echo_app(pattern, name="r")
    url = app.reverse_url("r", id=7)
    assert url.isascii()
    assert not set(url) & set(" ?#"), url
    # What a client sends for that URL is what Mongrel2 passes on: the path, undecoded.
    assert _ask(app, "GET", url).body == repr(((), {"id": "7"})).encode()


def test_reverse_url_values_are_encoded_and_round_trip() -> None:
    """A value with / ? # % and non-ASCII is encoded and reaches the route intact."""
    app = _echo_app(r"^/f/(?P<name>.+)$", name="f")
    value = "a/b?c#d%e é"
    url = app.reverse_url("f", name=value)
    assert url.isascii()
    assert _ask(app, "GET", url).body == repr(((), {"name": value})).encode()


# Routing: building an app


def test_bytes_route_pattern_is_refused_when_the_app_is_built() -> None:
    """Was a bug: a bytes pattern compiled fine, then every request reaching it was a 500,
    also the ones for the routes after it."""

    class Page(WebMessageHandler):
        def get(self) -> str:
            return "page"

    try:
        app = Brubeck(handler_tuples=[(rb"^/old$", Page), (r"^/ok$", Page)])
    except (TypeError, ValueError):
        return
    assert _ask(app, "GET", "/ok").status == 200


@pytest.mark.parametrize("init_kwargs", ["title", ["title"], {1: "title"}])
def test_handler_tuple_whose_init_kwargs_are_not_a_dict_of_names_is_refused(
    init_kwargs: Any,
) -> None:
    """Was a bug: docs/routing.md: anything else raises when the app is built; these were a 500
    on every request instead."""

    class Page(WebMessageHandler):
        def get(self) -> str:
            return "page"

    with pytest.raises((TypeError, ValueError)):
        Brubeck(handler_tuples=[(r"^/p$", Page, init_kwargs)])


def test_405_allow_header_names_only_methods_the_path_accepts() -> None:
    """Was a bug: a class route narrowed with method= to a verb the class lacks answers 405 with an
    Allow the route itself refuses (POST says 'GET, HEAD'; GET says 'POST')."""

    class Reader(WebMessageHandler):
        def get(self) -> str:
            return "read"

    app = Brubeck()
    with pytest.raises(ValueError, match="Reader answers none of POST"):
        app.add_route_rule(r"^/r$", Reader, method=["POST"])

    class ReadWrite(Reader):
        def put(self) -> str:
            return "written"

    app.add_route_rule(r"^/r$", ReadWrite, method=["GET", "POST"])  # POST: the class has none
    refused = _ask(app, "PUT", "/r")
    assert refused.status == 405
    assert refused.headers["allow"] == "GET, HEAD"
    for method in refused.headers["allow"].split(", "):
        assert _ask(app, method, "/r").status != 405, method
    assert _ask(app, "POST", "/r").headers["allow"] == "GET, HEAD"


# Routing: 404, 405, methods


def test_unknown_and_lower_case_methods_are_405_with_the_sorted_allow_list() -> None:
    """PROPFIND and 'get' are not routed; Allow lists every matching route's methods."""

    class Reader(WebMessageHandler):
        def get(self) -> str:
            return "read"

    app = Brubeck(handler_tuples=[(r"^/x$", Reader)])

    @app.add_route(r"^/x$", method="delete")
    def remove(application: Brubeck, request: Request) -> str:
        return "gone"

    for method in ("PROPFIND", "get", "OPTIONS"):
        answer = _ask(app, method, "/x")
        assert answer.status == 405, method
        assert answer.headers["allow"] == "DELETE, GET, HEAD"
    assert _ask(app, "DELETE", "/x").body == b"gone"


def test_not_an_http_method_is_dropped_not_routed() -> None:
    """Mongrel2's JSON and XML socket messages are never handed to a route."""
    app = _echo_app(r"^/")
    wire = fixtures.RecordingConnection()
    app.msg_conn = wire  # type: ignore[assignment]
    app.handle_message(_message(b"JSON", b"/x"))
    app.handle_message(_message(b"XML", b"/x"))
    assert wire.sent == []


def test_head_runs_get_and_sends_its_headers_without_the_body() -> None:
    """HEAD on a GET-only class: prepare, get, on_finish run; Content-Length is the GET's."""
    calls: list[str] = []

    class Page(WebMessageHandler):
        def prepare(self) -> None:
            calls.append("prepare")

        def get(self) -> str:
            calls.append("get")
            self.set_header("X-Page", "1")
            return "twelve bytes"

        def on_finish(self) -> None:
            calls.append("on_finish")

    app = Brubeck(handler_tuples=[(r"^/p$", Page)])
    answer = _ask(app, "HEAD", "/p")
    assert (answer.status, answer.body) == (200, b"")
    assert answer.headers["content-length"] == "12"
    assert answer.headers["x-page"] == "1"
    assert calls == ["prepare", "get", "on_finish"]


def test_http_error_in_prepare_skips_the_verb_keeps_its_headers_and_runs_on_finish() -> None:
    """prepare's HTTPError is the answer, with its headers; on_finish still runs."""
    calls: list[str] = []

    class Guarded(JSONMessageHandler):
        def prepare(self) -> None:
            raise HTTPError(401, "who are you?", {"WWW-Authenticate": 'Basic realm="x"'})

        def get(self) -> str:
            calls.append("get")
            return "secret"

        def on_finish(self) -> None:
            calls.append("on_finish")

    app = Brubeck(handler_tuples=[(r"^/g$", Guarded)])
    answer = _ask(app, "GET", "/g")
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="x"'
    assert b'"message":"who are you?"' in answer.body
    assert calls == ["on_finish"]


def test_custom_error_handler_renders_404_and_405_and_keeps_allow() -> None:
    """The app's error_handler renders routing errors; the 405 keeps its Allow header."""

    class Plain(WebMessageHandler):
        def write_error(
            self, status_code: int, exc_info: Any = None, message: str | None = None
        ) -> None:
            self.set_header("Content-Type", "text/plain")
            self.write(f"plain {status_code}")

    app = _echo_app(r"^/only-get$")
    app.error_handler = Plain
    missing = _ask(app, "GET", "/nowhere")
    assert (missing.status, missing.body) == (404, b"plain 404")
    refused = _ask(app, "POST", "/only-get")
    assert (refused.status, refused.body) == (405, b"plain 405")
    assert refused.headers["allow"] == "GET, HEAD"


# The route cache, keyed by (method, raw path)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/p/a%2Fb", "/p/a/b"),  # %2F decodes to /: both are one path
        ("/p/caf%C3%A9", "/p/café"),  # encoded and raw UTF-8
        ("/p/x/", "/p/x"),  # a trailing slash is another path
    ],
)
def test_route_cache_answers_each_raw_path_as_a_fresh_match_would(first: str, second: str) -> None:
    """Asked twice each (the second answer comes from the cache), in either order, every raw
    path gets the answer a cold router gives it."""
    pattern = r"^/p/(?P<rest>[^/]+)$"

    def cold(path: str) -> tuple[int, bytes]:
        answer = _ask(_echo_app(pattern), "GET", path)
        return answer.status, answer.body

    expected = {first: cold(first), second: cold(second)}
    app = _echo_app(pattern)
    for path in (first, second, second, first, first):
        answer = _ask(app, "GET", path)
        assert (answer.status, answer.body) == expected[path], path


def test_route_cache_is_not_poisoned_by_a_query_string() -> None:
    """The query is not part of the path: /s?x and /s?y share a cache entry and an answer."""

    class Search(WebMessageHandler):
        def get(self) -> str:
            return self.get_argument("q", "-")

    app = Brubeck(handler_tuples=[(r"^/s$", Search)])
    assert _ask(app, "GET", "/s", query=b"q=one").body == b"one"
    assert _ask(app, "GET", "/s", query=b"q=two").body == b"two"
    assert _ask(app, "GET", "/s").body == b"-"


def test_route_cache_does_not_hide_a_route_added_later_for_another_method() -> None:
    """A cached GET does not answer a POST; a POST route added later is found."""
    app = _echo_app(r"^/c$")
    assert _ask(app, "GET", "/c").status == 200
    assert _ask(app, "POST", "/c").status == 405

    @app.add_route(r"^/c$", method="POST")
    def create(application: Brubeck, request: Request) -> str:
        return "created"

    assert _ask(app, "POST", "/c").body == b"created"
    assert _ask(app, "GET", "/c").status == 200


def test_cached_invalid_utf8_path_is_still_a_400() -> None:
    """A path that is not UTF-8 once decoded is a 400 every time, never cached as a match."""
    app = _echo_app(r"^/")
    for _ in range(2):
        assert _ask(app, "GET", "/a%C3").status == 400
        assert _ask(app, "GET", b"/a\xff").status == 400


# Arguments


class _Args(WebMessageHandler):
    def get(self) -> dict[str, Any]:
        return {
            "arguments": self.request.arguments,
            "last": self.get_argument("a", None),
            "raw": self.get_argument("a", None, strip=False),
            "all": self.get_arguments("a"),
        }

    post = get


def test_repeated_blank_plus_and_percent_encoded_query_arguments() -> None:
    """Repeated keys keep every value in order, blanks are kept, + is a space, %2B a +."""
    app = Brubeck(handler_tuples=[(r"^/a$", _Args)])
    answer = _ask(app, "GET", "/a", query=b"a=1&a=+x%2By+&flag&b=&a=%C3%A9")
    data = json.loads(answer.body)
    assert data["arguments"] == {"a": ["1", " x+y ", "é"], "flag": [""], "b": [""]}
    assert (data["last"], data["all"]) == ("é", ["1", "x+y", "é"])


@pytest.mark.parametrize("query", [b"a=%FF", b"a=\xff", b"%C3=1", b"a=%ED%A0%80"])
def test_invalid_utf8_in_the_query_is_a_400(query: bytes) -> None:
    """Raw or percent-encoded, a byte that is not UTF-8 (or a surrogate) is a 400."""
    app = Brubeck(handler_tuples=[(r"^/a$", _Args)])
    answer = _ask(app, "GET", "/a", query=query)
    assert answer.status == 400
    assert b"not valid UTF-8" in answer.body


def test_form_values_come_after_the_query_ones_and_the_last_wins() -> None:
    """A name in both the query and the form: query values first, get_argument the form's."""
    app = Brubeck(handler_tuples=[(r"^/a$", _Args)])
    answer = _ask(
        app,
        "POST",
        "/a",
        query=b"a=q",
        headers={b"content-type": b"Application/X-WWW-Form-Urlencoded; charset=utf-8"},
        body=b"a=f1&a=f2",
    )
    assert answer.status == 200
    assert b'"all":["q","f1","f2"]' in answer.body


def test_query_argument_on_a_spooled_upload_over_max_body_size_is_not_a_413(
    tmp_path: Path,
) -> None:
    """Was a bug: get_argument read the whole spooled file (Request.arguments -> self.body) to
    look for form fields, so a query argument on a large octet-stream upload was a 413."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "upload.A").write_bytes(b"x" * 100)

    class Upload(WebMessageHandler):
        def put(self) -> str:
            return f"{self.get_argument('name')}: {self.request.upload.size} bytes"

    app = Brubeck(
        handler_tuples=[(r"^/up$", Upload)], mongrel2_run_dir=str(tmp_path), max_body_size=10
    )
    spooled = {
        b"content-type": b"application/octet-stream",
        b"content-length": b"100",
        b"x-mongrel2-upload-start": b"/tmp/upload.A",
        b"x-mongrel2-upload-done": b"/tmp/upload.A",
    }
    answer = _ask(app, "PUT", "/up", query=b"name=disk.img", headers=spooled)
    assert (answer.status, answer.body) == (200, b"disk.img: 100 bytes")


def test_json_body_edge_cases_are_400s() -> None:
    """Empty, truncated, too deep and too long an integer are 400s naming the problem."""

    class Echo(WebMessageHandler):
        def post(self) -> Any:
            return {"got": self.request.json}

    app = Brubeck(handler_tuples=[(r"^/j$", Echo)])
    headers = {b"content-type": b"application/json"}
    for body in (b"", b'{"a": ', b"[" * 5000 + b"]" * 5000, b"1" * 5000):
        if not body:
            answer = _ask(app, "POST", "/j", headers={**headers, b"content-length": b"0"})
        else:
            answer = _ask(app, "POST", "/j", headers=headers, body=body)
        assert answer.status == 400, body[:20]
        assert b"JSON body" in answer.body


# Headers, Host, URL, cookies


class _Facts(WebMessageHandler):
    def get(self) -> dict[str, Any]:
        request = self.request
        return {
            "host": request.host,
            "url": request.url,
            "scheme": request.scheme,
            "remote": request.remote_addr,
            "cookies": request.cookies,
            "accept": request.headers.getlist("accept"),
            "first": request.headers.first("accept"),
            "method_header": "method" in request.headers,
        }


def test_repeated_headers_host_url_and_scheme_come_from_mongrel2() -> None:
    """Repeated headers are lists; url uses URL_SCHEME and the URI; Mongrel2 keys are not
    client headers; X-Forwarded-* does not change the scheme or the client address."""
    app = Brubeck(handler_tuples=[(r"^/f$", _Facts)])
    answer = _ask(
        app,
        "GET",
        "/f",
        query=b"x=1",
        headers={
            b"accept": [b"text/html", b"*/*"],
            b"x-forwarded-proto": b"https",
            b"x-forwarded-host": b"evil.test",
            b"method": b"spoofed",
        },
    )
    data = json.loads(answer.body)
    assert data["host"] == "example.test"
    assert data["url"] == "http://example.test/f?x=1"
    assert data["scheme"] == "http"
    assert data["remote"] == "127.0.0.1"
    assert (data["accept"], data["first"]) == (["text/html", "*/*"], "text/html")


def test_cookie_parsing_edge_cases() -> None:
    """Several Cookie headers merge, the first value of a name wins, quotes are removed,
    pairs without a name or an = are skipped, and an = inside a value is kept."""
    app = Brubeck(handler_tuples=[(r"^/f$", _Facts)])
    answer = _ask(
        app,
        "GET",
        "/f",
        headers={b"cookie": [b'a=1; b="two"; =x; flag; c=d=e', b"a=3; z=\xe9"]},
    )
    assert json.loads(answer.body)["cookies"] == {"a": "1", "b": "two", "c": "d=e", "z": "é"}


def test_a_spooled_url_encoded_form_is_still_read_for_its_fields(tmp_path: Path) -> None:
    """The other side of the fix above: a form Mongrel2 spooled to a file still gives its
    fields, and one over max_body_size is still a 413."""
    (tmp_path / "tmp").mkdir()

    class Form(WebMessageHandler):
        def post(self) -> str:
            return f"{self.get_argument('q')} {self.get_argument('a')} {self.get_argument('b')}"

    spooled = {
        b"content-type": b"application/x-www-form-urlencoded",
        b"content-length": b"9",
        b"x-mongrel2-upload-start": b"/tmp/upload.F",
        b"x-mongrel2-upload-done": b"/tmp/upload.F",
    }
    for limit, expected in ((100, (200, b"0 1 two")), (5, (413, None))):
        (tmp_path / "tmp" / "upload.F").write_bytes(b"a=1&b=two")  # the app removes it
        app = Brubeck(
            handler_tuples=[(r"^/f$", Form)], mongrel2_run_dir=str(tmp_path), max_body_size=limit
        )
        answer = _ask(app, "POST", "/f", query=b"q=0", headers=spooled)
        assert answer.status == expected[0]
        if expected[1] is not None:
            assert answer.body == expected[1]


def test_reverse_url_refuses_a_value_with_a_control_character() -> None:
    app = _echo_app(r"^/n/(?P<x>.+)$", name="n")
    for value in ("a\n", "a\x00b", "\r"):
        with pytest.raises(ValueError, match="do not match"):
            app.reverse_url("n", x=value)
    assert app.reverse_url("n", x="a b") == "/n/a%20b"


def test_reverse_url_keeps_the_characters_a_path_segment_may_hold() -> None:
    app = _echo_app(r"^/a:b@c!\$&'\(\)\*\+,;=/(?P<id>\d+)$", name="sub")
    url = app.reverse_url("sub", id=3)
    assert url == "/a:b@c!$&'()*+,;=/3"
    assert _ask(app, "GET", url).body == repr(((), {"id": "3"})).encode()


# Found alongside the bugs above, fixed with them


@pytest.mark.parametrize(
    "body",
    [
        b"NaN",
        b"[Infinity]",
        b'{"a": -Infinity}',
        b"1e999",
        b"[-1E+400]",
        b"1" * 400 + b".0",
        b"1" + b"0" * 250 + b"e99",  # 251 digits and a two-digit exponent: still infinity
    ],
)
def test_json_that_is_not_json_numbers_is_a_400(body: bytes) -> None:
    """ujson reads NaN and Infinity, and turns an overflowing number into infinity: none is
    JSON (RFC 8259), and no encoder sends them back, so the handler would fail later."""

    class Echo(WebMessageHandler):
        def post(self) -> Any:
            return {"got": self.request.json}

    app = Brubeck(handler_tuples=[(r"^/j$", Echo)])
    answer = _ask(app, "POST", "/j", headers={b"content-type": b"application/json"}, body=body)
    assert answer.status == 400
    assert b"NaN, Infinity or a number too large" in answer.body


def test_json_with_large_finite_numbers_and_the_word_nan_is_read() -> None:
    class Echo(WebMessageHandler):
        def post(self) -> Any:
            return {"got": self.request.json}

    app = Brubeck(handler_tuples=[(r"^/j$", Echo)])
    body = b'{"big": 1e308, "tiny": 1e-999, "s": "NaN and Infinity", "n": 1000}'
    answer = _ask(app, "POST", "/j", headers={b"content-type": b"application/json"}, body=body)
    assert answer.status == 200
    assert json.loads(answer.body)["got"] == {
        "big": 1e308,
        "tiny": 0.0,
        "s": "NaN and Infinity",
        "n": 1000,
    }


def test_a_group_named_like_the_handlers_own_arguments_is_refused_at_build() -> None:
    """A group called ``self`` (a class) or like a function's first two parameters made every
    matching request a TypeError, a 500."""

    class Page(WebMessageHandler):
        def get(self, **kwargs: str) -> str:
            return "page"

    def page(app: Brubeck, req: Request, **kwargs: str) -> str:
        return "page"

    with pytest.raises(ValueError, match="the group name self is taken"):
        Brubeck(handler_tuples=[(r"^/(?P<self>\w+)$", Page)])
    for group in ("app", "req"):
        with pytest.raises(ValueError, match=f"the group name {group} is taken by page"):
            Brubeck(handler_tuples=[(rf"^/(?P<{group}>\w+)$", page)])
    app = Brubeck(handler_tuples=[(r"^/(?P<message>\w+)$", page)])  # not page's own names
    assert _ask(app, "GET", "/x").status == 200
    assert app.router.routes[-1].pattern == r"^/(?P<message>\w+)$"


def test_a_refused_route_is_not_left_in_the_router() -> None:
    def page(application: Brubeck, message: Request, **kwargs: str) -> str:
        return "page"

    app = Brubeck()
    with pytest.raises(ValueError):
        app.add_route_rule(r"^/(?P<message>\w+)$", page, name="bad")
    assert app.router.routes == []
    app.add_route_rule(r"^/(?P<slug>\w+)$", page, name="bad")  # the name is still free


def test_an_empty_method_list_is_refused() -> None:
    app = Brubeck()
    with pytest.raises(ValueError, match="names no method"):
        app.add_route_rule(r"^/x$", lambda application, message: "x", method=[])


def test_reverse_url_refuses_values_that_have_no_group() -> None:
    app = _echo_app(r"^/v/(\d+)$", name="v")
    assert app.reverse_url("v", 5) == "/v/5"
    with pytest.raises(ValueError, match="has no group for 6"):
        app.reverse_url("v", 5, 6)
    with pytest.raises(ValueError, match="has no group for page"):
        app.reverse_url("v", 5, page=2)


def test_the_xsrf_cookie_is_secure_over_https() -> None:
    class Form(WebMessageHandler):
        def get(self) -> str:
            return self.xsrf_form_html()

    app = Brubeck(handler_tuples=[(r"^/f$", Form)])
    over_https = _ask(app, "GET", "/f", scheme=b"https").headers["set-cookie"]
    over_http = _ask(app, "GET", "/f").headers["set-cookie"]
    assert over_https.startswith("_xsrf=") and "; Secure" in over_https
    assert over_http.startswith("_xsrf=") and "Secure" not in over_http
