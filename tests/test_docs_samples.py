"""What a new user copies from docs/*.md and README.md: links, samples and stated facts.

Each test checks one thing the prose says against what the code does; none needs Mongrel2.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from brubeck import Brubeck, HTTPError, Response, WebMessageHandler
from brubeck.mongrel2 import Mongrel2Config
from brubeck.testing import TestClient

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md", *sorted(ROOT.glob("examples/*/README.md"))]


def _without_code(text: str) -> str:
    """The text with fenced code blocks blanked out (line count kept)."""
    return re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)


def _anchors(page: Path) -> set[str]:
    slugify = pytest.importorskip("markdown.extensions.toc").slugify
    text = _without_code(page.read_text())
    return {slugify(m.group(1).strip(), "-") for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def _python_block(page: Path, marker: str) -> str:
    """The fenced python block of ``page`` that contains ``marker``."""
    for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M):
        if marker in block:
            return block
    raise AssertionError(f"no python block with {marker!r} in {page.name}")


def test_links_between_pages_lead_to_existing_files_and_headings():
    """Was a bug. docs/services.md:72 links `#services-majordomo-request-reply`, but the heading
    "Services (Majordomo request/reply)" has the anchor `#services-majordomo-requestreply`
    (mkdocs' slug drops the `/`), so the link goes nowhere. `mkdocs build --strict` only
    reports it at INFO level, so scripts/test.sh does not catch it either.
    """
    broken = []
    for page in PAGES:
        text = _without_code(page.read_text())
        for match in re.finditer(r"\]\(([^)\s]+)\)", text):
            link = match.group(1)
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            line = text.count("\n", 0, match.start()) + 1
            where = f"{page.relative_to(ROOT)}:{line}: {link}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{where} (no such heading)")
    assert broken == []


def test_deployment_doc_states_the_upload_mode_the_config_really_has():
    """Was a bug. docs/deployment.md:338-342 says Mongrel2Config's default
    `upload.temp_store_mode` is "0666" (and advises passing "0600" when it matters), but the
    config Brubeck writes says "0600": a handler running as another user than the run
    directory's owner (the systemd example) cannot read upload files.
    """
    text = (DOCS / "deployment.md").read_text()
    stated = re.search(r'Default settings:.*?`upload\.temp_store_mode = "(\d+)"`', text, re.S)
    assert stated is not None, "deployment.md no longer states the default mode"
    rendered = Mongrel2Config("tcp://127.0.0.1:1", "tcp://127.0.0.1:2").render()
    actual = re.search(r'"upload\.temp_store_mode": "(\d+)"', rendered)
    assert actual is not None
    assert stated.group(1) == actual.group(1)


def test_api_doc_gives_the_status_range_that_response_and_httperror_accept():
    """Was a bug. docs/api.md:124 (`HTTPError`: "status must be 100 to 999", with an en dash)
    and :183 (`Response`: "Refuses a status outside 100 to 999") say a 1xx is accepted, but
    both refuse anything below 200 with a ValueError (as docs/http.md says: 1xx are interim
    responses). Both lines should say 200 to 999.
    """
    for make in (lambda: Response(status=100), lambda: HTTPError(150)):
        with pytest.raises(ValueError, match=r"200\.\.999"):
            make()
    text = (DOCS / "api.md").read_text()
    assert "100\u2013999" not in text


def test_http_doc_does_not_warn_that_set_status_leaves_the_reason_unchecked():
    """Was a bug. docs/http.md ("Header safety") warns "`set_status(code, status_msg)` does not
    check `status_msg` yet: never put client input into it", but set_status refuses CR, LF, NUL
    in the reason (ValueError, so a 500) like every other header text: the warning is stale.
    """

    class Reason(WebMessageHandler):
        def get(self):
            self.set_status(200, self.get_argument("m"))
            return "x"

    app = Brubeck(handler_tuples=[(r"^/$", Reason)])
    with TestClient(app) as client:
        answer = client.get("/", params={"m": "OK\r\nSet-Cookie: evil=1"})
    assert answer.status_code == 500
    assert b"evil" not in answer.raw
    assert "does not check `status_msg` yet" not in (DOCS / "http.md").read_text()


def test_http_static_files_sample_runs_as_written(tmp_path, monkeypatch):
    """Was a bug. The first sample under docs/http.md "Static files" builds the app
    with `handler_tuples=[(r"^/$", Home)]` before `class Home` is defined, so copied as it
    is (imports added) it stops with NameError: name 'Home' is not defined. Define `Home`
    first.
    """
    (tmp_path / "static" / "css").mkdir(parents=True)
    (tmp_path / "static" / "css" / "app.css").write_text("body {}\n")
    monkeypatch.chdir(tmp_path)
    sample = _python_block(DOCS / "http.md", 'static_path="static"')
    namespace: dict = {}
    exec("from brubeck import Brubeck, WebMessageHandler\n", namespace)
    exec(compile(sample, "docs/http.md", "exec"), namespace)
    app = namespace["app"]
    app.msg_conn = None
    with TestClient(app) as client:
        page = client.get("/")
    assert re.search(r'href="/static/css/app\.css\?v=[0-9a-f]{16}"', page.text)


def test_requests_doc_says_what_is_read_from_a_spooled_body():
    """Was a bug. docs/requests.md:121-125 says a body over `limits.content_length` "reaches
    the handler with an empty body" and that inline bodies are "the only bodies `form`,
    `files` and `json` read"; lines 145-146 say the body limits "do not apply" to spooled bodies.
    In fact `request.body` is read from Mongrel2's file on first use (docs/http.md, "Uploads"), so
    `form`, `files` and `json` read spooled bodies too, up to `max_body_size`, with a 413
    beyond it (brubeck/request.py:423-431; shown through Mongrel2 in
    tests/e2e/test_examples_docs.py).
    """
    text = (DOCS / "requests.md").read_text()
    assert "the only bodies `form`, `files` and `json` read" not in text
    assert "these\nlimits do not apply to them" not in text


def test_example_curl_lines_that_climb_out_keep_their_dots():
    """Was a bug. examples/downloads/app.py's docstring shows
    `curl -b jar -i http://127.0.0.1:6767/files/../app.py   # 404: names stay inside`, but
    curl removes `..` segments itself and sends `GET /app.py`: the 404 comes from no route
    matching, and the handler's check that names stay inside SHARED is never tried. Add
    `--path-as-is`, as examples/assets/app.py does.
    """
    missing = []
    for app in sorted((ROOT / "examples").glob("*/app.py")):
        for number, line in enumerate(app.read_text().splitlines(), 1):
            if line.lstrip().startswith("curl ") and "/../" in line and "--path-as-is" not in line:
                missing.append(f"{app.relative_to(ROOT)}:{number}: {line.strip()}")
    assert missing == []
