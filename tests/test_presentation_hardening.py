"""Hardening of what the app shows: templates, access-log lines and error pages.

Templates must stay inside their directory and escape what they are given; log lines must
stay one line whatever a client sends; error pages must not leak what debug mode would show.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from brubeck import Brubeck, HTTPError, JSONMessageHandler, WebMessageHandler
from brubeck.access import AccessRecord
from brubeck.logs import JSONFormatter, PlainFormatter, log_handler
from brubeck.templating import Jinja2Rendering, MakoRendering, load_jinja2_env, load_mako_env
from brubeck.testing import TestClient

pytest.importorskip("jinja2")
pytest.importorskip("mako")

SECRET = "TOP-SECRET-OUTSIDE"


def controls(text: str) -> list[str]:
    """The control characters (C0, DEL and C1) in ``text``."""
    return [c for c in text if unicodedata.category(c) == "Cc"]


# Templates


class JinjaByName(Jinja2Rendering, WebMessageHandler):
    def get(self) -> Any:
        return self.render_template(self.get_argument("t"), value=self.get_argument("v", ""))


class MakoByName(MakoRendering, WebMessageHandler):
    def get(self) -> Any:
        return self.render_template(self.get_argument("t"), value=self.get_argument("v", ""))


ENGINES = {
    "jinja2": (JinjaByName, load_jinja2_env, "{{ value }}"),
    "mako": (MakoByName, load_mako_env, "${value}"),
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A template directory ``tpl`` with a secret file next to it and one under it."""
    (tmp_path / "secret.html").write_text(SECRET)
    (tmp_path / "tpl" / "sub").mkdir(parents=True)
    return tmp_path


def template_app(engine: str, root: Path, **settings: Any) -> Brubeck:
    handler, loader, _ = ENGINES[engine]
    return Brubeck(
        handler_tuples=[(r"^/$", handler)],
        template_loader=loader(str(root / "tpl")),
        **settings,
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "name", ["../secret.html", "sub/../../secret.html", "/../secret.html", "./../secret.html"]
)
async def test_template_names_cannot_climb_out_of_the_directory(
    engine: str, name: str, site: Path
) -> None:
    """A name with ``..`` that leads above the template directory is refused (a 500)."""
    async with TestClient(template_app(engine, site)) as client:
        response = await client.get("/", params={"t": name})
    assert response.status_code == 500
    assert SECRET not in response.text


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_absolute_name_is_looked_up_inside_the_directory(engine: str, site: Path) -> None:
    """``/x.html`` means the directory's ``x.html``, and a real absolute path is not read."""
    _, _, placeholder = ENGINES[engine]
    (site / "tpl" / "x.html").write_text(f"in:{placeholder}")
    async with TestClient(template_app(engine, site)) as client:
        inside = await client.get("/", params={"t": "/x.html", "v": "1"})
        outside = await client.get("/", params={"t": str(site / "secret.html")})
    assert (inside.status_code, inside.text) == (200, "in:1")
    assert outside.status_code == 500 and SECRET not in outside.text


@pytest.mark.parametrize(
    ("engine", "filename"),
    [
        ("jinja2", "p.html"),
        ("jinja2", "p.htm"),
        ("jinja2", "p.xml"),
        ("jinja2", "P.HTML"),
        ("mako", "p.html"),
        ("mako", "p.mako"),
        ("mako", "p.txt"),
    ],
)
async def test_values_are_escaped_in_text_and_attributes(
    engine: str, filename: str, site: Path
) -> None:
    """Markup and quotes in a value cannot open a tag or leave an attribute."""
    _, _, placeholder = ENGINES[engine]
    (site / "tpl" / filename).write_text(f'<a title="{placeholder}">{placeholder}</a>')
    attack = '"\' onmouseover=alert(1) x="<script>alert(2)</script>&'
    async with TestClient(template_app(engine, site)) as client:
        response = await client.get("/", params={"t": filename, "v": attack})
    assert response.status_code == 200
    for raw in ("<script", '"', "'", '&"'):
        assert response.text.count(raw) == (2 if raw == '"' else 0), (raw, response.text)
    assert response.text.startswith('<a title="') and "&lt;script&gt;" in response.text


@pytest.mark.parametrize("engine", ENGINES)
async def test_template_syntax_in_a_value_is_not_evaluated(engine: str, site: Path) -> None:
    """A value is data: ``{{ 7*7 }}`` or ``${7*7}`` in it comes back as written."""
    _, _, placeholder = ENGINES[engine]
    (site / "tpl" / "p.html").write_text(placeholder)
    value = "{{ 7*7 }}${7*7}<%text>"
    async with TestClient(template_app(engine, site)) as client:
        response = await client.get("/", params={"t": "p.html", "v": value})
    assert "49" not in response.text
    assert response.text == "{{ 7*7 }}${7*7}&lt;%text&gt;"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("problem", ["missing", "syntax"])
async def test_a_broken_template_leaks_nothing_without_debug(
    engine: str, problem: str, site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing template or a syntax error: a plain 500; the log, not the page, names it."""
    name = "broken-7f3e.html"
    if problem == "syntax":
        (site / "tpl" / name).write_text("{% if %}" if engine == "jinja2" else "% if:\n")
    async with TestClient(template_app(engine, site)) as client:
        response = await client.get("/", params={"t": name})
    assert response.status_code == 500
    assert "broken-7f3e" not in response.text and "Traceback" not in response.text
    assert "broken-7f3e" in caplog.text


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_debug_page_escapes_a_template_error(engine: str, site: Path) -> None:
    """With debug, a template name holding markup shows in the traceback escaped."""
    name = "<script>alert(1)</script>.html"
    async with TestClient(template_app(engine, site, debug=True)) as client:
        response = await client.get("/", params={"t": name})
    assert response.status_code == 500
    assert "<pre>Traceback" in response.text
    assert "<script>" not in response.text and "&lt;script&gt;" in response.text


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_edited_template_is_read_again(engine: str, site: Path) -> None:
    """Both loaders check the file's time: a changed template is used at the next request."""
    _, _, placeholder = ENGINES[engine]
    page = site / "tpl" / "p.html"
    page.write_text(f"one {placeholder}")
    async with TestClient(template_app(engine, site)) as client:
        first = await client.get("/", params={"t": "p.html", "v": "a"})
        page.write_text(f"two {placeholder}")
        later = page.stat().st_mtime + 5
        os.utime(page, (later, later))
        second = await client.get("/", params={"t": "p.html", "v": "b"})
    assert (first.text, second.text) == ("one a", "two b")


# Access log and log formats


@pytest.fixture
def output() -> Iterator[Callable[..., io.StringIO]]:
    """``output(json_logs=...)``: Brubeck's handler on the ``brubeck`` logger, into a buffer."""
    logger = logging.getLogger("brubeck")
    added: list[logging.Handler] = []

    def attach(*, json_logs: bool = False) -> io.StringIO:
        stream = io.StringIO()
        handler = log_handler(json_logs=json_logs, stream=stream)
        logger.addHandler(handler)
        added.append(handler)
        return stream

    saved = logger.level
    logger.setLevel(logging.INFO)
    yield attach
    for handler in added:
        logger.removeHandler(handler)
    logger.setLevel(saved)


class Fine(WebMessageHandler):
    def get(self) -> str:
        return "fine"


class Broken(WebMessageHandler):
    def get(self) -> str:
        raise RuntimeError("broken")


HOSTILE_IDS = [
    'ok\r\n2026-01-01 00:00:00,000 INFO brubeck.access[1]: 10.0.0.1 "GET /admin" 200',
    "\x1b[2J\x1b[31mred",
    "has space",
    "a" * 129,
    "caf\xe9",
    "tab\there",
]


@pytest.mark.parametrize("json_logs", [False, True])
async def test_a_hostile_request_id_cannot_shape_the_access_line(
    json_logs: bool, output: Callable[..., io.StringIO]
) -> None:
    """CR/LF, ANSI escapes, spaces or a huge X-Request-Id: replaced, never copied."""
    stream = output(json_logs=json_logs)
    app = Brubeck(handler_tuples=[(r"^/$", Fine)], access_log=True, request_id_header=True)
    echoed = []
    async with TestClient(app) as client:
        for value in HOSTILE_IDS:
            response = await client.get("/", headers={"X-Request-Id": value})
            echoed.append(response.headers["x-request-id"])
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(HOSTILE_IDS)
    for line, value, sent_back in zip(lines, HOSTILE_IDS, echoed, strict=True):
        assert controls(line) == [] and value not in line
        assert sent_back != value and sent_back in line
    if json_logs:
        assert all(json.loads(line)["path"] == "/" for line in lines)


async def test_headers_and_the_query_stay_out_of_the_access_line(
    output: Callable[..., io.StringIO],
) -> None:
    """User-Agent, Referer and the query string (it may hold secrets) are not logged."""
    stream = output()
    app = Brubeck(handler_tuples=[(r"^/$", Fine)], access_log=True)
    async with TestClient(app) as client:
        await client.get(
            "/?token=s3cr3t",
            headers={"User-Agent": "ua\r\nEVIL-UA", "Referer": "\x1b[31mEVIL-REF"},
        )
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert "s3cr3t" not in text and "EVIL" not in text and controls(text.rstrip("\n")) == []


def access_record(**changes: Any) -> AccessRecord:
    fields = {
        "remote_addr": "127.0.0.1",
        "method": "GET",
        "path": "/",
        "status": 200,
        "bytes": 4,
        "duration_ms": 0.5,
        "request_id": "r-1",
    }
    fields.update(changes)
    return AccessRecord(tuple(fields.values()))


def test_a_json_access_line_escapes_every_field() -> None:
    """Quotes, backslashes, CR/LF and ESC in fields: still one line, read back unchanged."""
    nasty = '/a"b\\c\r\n{"level": "error"}\x1b[31m\x00\u2028'
    line = JSONFormatter().format(access_record(path=nasty, method='G"ET\n'))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line
    record = json.loads(line)
    assert (record["path"], record["method"], record["level"]) == (nasty, 'G"ET\n', "info")


def test_a_json_message_line_escapes_the_message_and_traceback() -> None:
    """A message or exception text with newlines stays inside one JSON line."""
    try:
        raise ValueError("line one\nline two\x1b[0m")
    except ValueError:
        record = logging.LogRecord(
            "brubeck.handlers", logging.ERROR, __file__, 1, "bad\n%s", ("x\r\ny",), None
        )
        record.exc_info = sys.exc_info()
    line = JSONFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "bad\nx\r\ny"
    assert "ValueError: line one\nline two\x1b[0m" in parsed["exc_info"]


async def test_the_error_line_shows_a_hostile_path_escaped(
    output: Callable[..., io.StringIO],
) -> None:
    """The ``uncaught exception`` line quotes the raw path with ``repr``: no raw ESC."""
    stream = output()
    app = Brubeck(handler_tuples=[(r"^/.*$", Broken)])
    async with TestClient(app) as client:
        # raw, as no client would send it (get() would percent-encode it: a 400)
        await client.send_raw(client.build_message("GET", "/x\x1b[2Jy", conn_id=900))
        assert (await client.receive(900)).startswith(b"HTTP/1.1 500 ")
    first = stream.getvalue().splitlines()[0]
    assert "uncaught exception in Broken" in first
    assert "\x1b" not in first and "\\x1b[2J" in first
    assert re.search(r" request_id=[0-9a-f]{8}-\d+$", first), first


def test_the_plain_access_line_is_the_documented_one() -> None:
    """``time INFO brubeck.access[pid]: addr "METHOD path" status bytes ms id``."""
    line = PlainFormatter().format(access_record(status="-", bytes="-"))
    head, _, rest = line.partition(": ")
    assert head.endswith(f" INFO brubeck.access[{os.getpid()}]")
    assert rest == '127.0.0.1 "GET /" - - 0.50ms r-1'


# Error pages


def function_boom(app: Brubeck, request: Any) -> None:
    raise ValueError("fn-secret <b>bold</b>")


async def async_function_boom(app: Brubeck, request: Any) -> None:
    await asyncio.sleep(0)
    raise ValueError("fn-secret <b>bold</b>")


class WebBoom(WebMessageHandler):
    def get(self) -> None:
        raise ValueError("cls-secret <script>alert(1)</script>")


class AsyncWebBoom(WebMessageHandler):
    async def get(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("cls-secret <script>alert(1)</script>")


class JsonBoom(JSONMessageHandler):
    def get(self) -> None:
        self.add_to_payload("partial", "cls-secret")
        raise ValueError("cls-secret")


def error_app(**settings: Any) -> Brubeck:
    routes = [
        (r"^/fn$", function_boom),
        (r"^/afn$", async_function_boom),
        (r"^/web$", WebBoom),
        (r"^/aweb$", AsyncWebBoom),
        (r"^/json$", JsonBoom),
    ]
    return Brubeck(handler_tuples=routes, **settings)


@pytest.mark.parametrize("path", ["/fn", "/afn", "/web", "/aweb", "/json"])
@pytest.mark.parametrize("error_handler", [WebMessageHandler, JSONMessageHandler])
async def test_without_debug_no_exception_text_reaches_the_client(
    path: str, error_handler: type, caplog: pytest.LogCaptureFixture
) -> None:
    """Debug off: a 500 names neither the exception nor its text (the log does)."""
    async with TestClient(error_app(error_handler=error_handler)) as client:
        response = await client.get(path)
    assert response.status_code == 500
    for leak in ("secret", "ValueError", "Traceback", "alert"):
        assert leak not in response.text, (leak, response.text)
    assert "secret" in caplog.text


@pytest.mark.parametrize("path", ["/fn", "/afn"])
@pytest.mark.parametrize("error_handler", [WebMessageHandler, JSONMessageHandler])
async def test_function_routes_show_the_escaped_traceback_only_with_debug(
    path: str, error_handler: type, caplog: pytest.LogCaptureFixture
) -> None:
    """Code and docs disagreed (docs said: no traceback for function routes, even with debug).
    The docs now say what the code does, as for classes: with debug the traceback is shown,
    escaped; the debug-off test above checks nothing leaks without it."""
    async with TestClient(error_app(debug=True, error_handler=error_handler)) as client:
        response = await client.get(path)
    assert response.status_code == 500
    assert "fn-secret" in response.text
    if error_handler is JSONMessageHandler:  # JSON: a list of lines, no markup to escape
        assert response.json()["error"]["traceback"]
    else:
        assert "<pre>Traceback" in response.text and "<b>bold</b>" not in response.text


@pytest.mark.parametrize("path", ["/web", "/aweb"])
async def test_the_debug_traceback_is_escaped(path: str, caplog: pytest.LogCaptureFixture) -> None:
    """Debug on: the traceback is shown, its markup escaped, for sync and async verbs."""
    async with TestClient(error_app(debug=True)) as client:
        response = await client.get(path)
    assert response.status_code == 500
    assert "<pre>Traceback" in response.text
    assert "ValueError: cls-secret &lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "<script>" not in response.text


async def test_the_404_page_escapes_the_path_it_echoes() -> None:
    """The default 404 repeats the decoded path: escaped, so a crafted link is no XSS."""
    async with TestClient(Brubeck(handler_tuples=[(r"^/$", Fine)])) as client:
        response = await client.get("/%3Cscript%3Ealert(1)%3C/script%3E")
    assert response.status_code == 404
    assert "<script>" not in response.text and "&lt;script&gt;alert(1)" in response.text


class RaisesWithType(WebMessageHandler):
    def get(self) -> None:
        raise HTTPError(415, "send JSON", {"Content-Type": "text/plain", "Accept-Post": "a/b"})


def raises_with_type(app: Brubeck, request: Any) -> None:
    raise HTTPError(415, "send JSON", {"Content-Type": "text/plain", "Accept-Post": "a/b"})


@pytest.mark.parametrize("path", ["/cls", "/fn"])
async def test_an_http_error_content_type_is_sent_once(path: str) -> None:
    """Was a bug. HTTPError(headers={"Content-Type": ...}) added a second Content-Type."""
    routes = [(r"^/cls$", RaisesWithType), (r"^/fn$", raises_with_type)]
    async with TestClient(Brubeck(handler_tuples=routes)) as client:
        response = await client.get(path)
    assert response.status_code == 415
    assert response.get_all("accept-post") == ["a/b"]
    assert response.get_all("content-type") == ["text/plain"]


class PayloadThenError(JSONMessageHandler):
    def get(self) -> None:
        self.add_to_payload("balance", 1000)
        raise HTTPError(403, "not yours")

    def write_error(self, status_code: int, exc_info: Any = None, message: Any = None) -> None:
        self.add_to_payload("error", message)


class PayloadThenSilentError(JSONMessageHandler):
    def get(self) -> None:
        self.add_to_payload("balance", 1000)
        raise HTTPError(403, "not yours")

    def write_error(self, status_code: int, exc_info: Any = None, message: Any = None) -> None:
        pass


@pytest.mark.parametrize("handler", [PayloadThenError, PayloadThenSilentError])
async def test_send_error_drops_the_json_payload_built_before_the_error(handler: type) -> None:
    """Was a bug. send_error cleared the body but kept add_to_payload's data for write_error."""
    async with TestClient(Brubeck(handler_tuples=[(r"^/$", handler)])) as client:
        response = await client.get("/")
    assert response.status_code == 403
    assert "balance" not in response.text


@pytest.mark.parametrize("path", ["/web", "/json", "/fn", "/nowhere"])
async def test_error_pages_for_head_have_no_body(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """HEAD gets the status and headers of the error page, no body."""
    async with TestClient(error_app(debug=True)) as client:
        response = await client.head(path)
    assert response.status_code in (404, 500)
    assert response.content == b""


class WriteErrorFails(WebMessageHandler):
    def get(self) -> None:
        self.set_header("X-Partial", "1")
        raise HTTPError(418, "teapot", {"X-From-Error": "1"})

    def write_error(self, status_code: int, exc_info: Any = None, message: Any = None) -> None:
        self.write("half a page ")
        raise RuntimeError("write_error-secret <b>")


@pytest.mark.parametrize("debug", [False, True])
async def test_a_failing_write_error_leaks_neither_its_text_nor_half_a_page(
    debug: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A bare text/plain 500, whatever debug says; the failure is in the log."""
    app = Brubeck(handler_tuples=[(r"^/$", WriteErrorFails)], debug=debug)
    async with TestClient(app) as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (500, "500 Internal Server Error\n")
    assert response.headers["content-type"] == "text/plain"
    assert "x-partial" not in response.headers and "x-from-error" not in response.headers
    assert "write_error-secret" in caplog.text


class CustomHeaders(WebMessageHandler):
    def get(self) -> None:
        self.set_status(200, "Everything Fine")
        self.set_header("X-Before", "dropped")
        raise HTTPError(503, "back <soon> & then", {"Retry-After": "60"})


async def test_an_http_error_page_has_its_headers_its_reason_and_an_escaped_message() -> None:
    """Headers of the HTTPError are added, earlier ones and an earlier reason are dropped."""
    async with TestClient(Brubeck(handler_tuples=[(r"^/$", CustomHeaders)])) as client:
        response = await client.get("/")
    assert (response.status_code, response.reason) == (503, "Service Unavailable")
    assert response.headers["retry-after"] == "60" and "x-before" not in response.headers
    assert "<p>back &lt;soon&gt; &amp; then</p>" in response.text


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("page.html.j2", True),
        ("page.jinja", True),
        ("page.xhtml", True),
        ("page.htm", True),
        ("notes.txt", False),
    ],
)
def test_jinja2_escapes_every_template_but_plain_text_ones(
    tmp_path: Path, name: str, escaped: bool
) -> None:
    """``render_template`` sends text/html whatever the name: a ``.j2`` or ``.jinja`` page must
    not render a value's markup (it did: only .html, .htm and .xml were escaped)."""
    from brubeck.templating import load_jinja2_env

    (tmp_path / name).write_text("{{ value }}")
    out = load_jinja2_env(str(tmp_path)).get_template(name).render(value="<script>x</script>")
    assert (out == "&lt;script&gt;x&lt;/script&gt;") is escaped
    assert (out == "<script>x</script>") is not escaped
