"""templating.py, second pass: template helpers and error reports (each was a bug)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.templating import Jinja2Rendering, MakoRendering, load_jinja2_env, load_mako_env
from brubeck.testing import TestClient

pytest.importorskip("jinja2")
pytest.importorskip("mako")


class JinjaPage(Jinja2Rendering, WebMessageHandler):
    def get(self) -> Any:
        return self.render_template("page", value=self.get_argument("v", "<b>"))


class MakoPage(MakoRendering, WebMessageHandler):
    def get(self) -> Any:
        return self.render_template("page", value=self.get_argument("v", "<b>"))


ENGINES = {"jinja2": (JinjaPage, load_jinja2_env), "mako": (MakoPage, load_mako_env)}
EXPR = {"jinja2": "{{ %s }}", "mako": "${%s}"}


def app_for(engine: str, root: Path, text: str, **settings: Any) -> Brubeck:
    (root / "page").write_text(text)
    handler, loader = ENGINES[engine]
    return Brubeck(
        handler_tuples=[(r"^/$", handler)], template_loader=loader(str(root)), **settings
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("call", ["handler.xsrf_form_html()", "xsrf_form_html()"])
async def test_xsrf_form_html_is_markup_in_an_escaping_template(
    engine: str, call: str, tmp_path: Path
) -> None:
    """Was a bug. ``{{ handler.xsrf_form_html() }}`` came out escaped (``&lt;input …``) in
    both engines, since both escape by default: the form had no token and every POST was a
    403. It must render the ``<input>`` while other values stay escaped; ``xsrf_form_html``
    is also a template global."""
    text = f"<form>{EXPR[engine] % call}</form>{EXPR[engine] % 'value'}"
    async with TestClient(app_for(engine, tmp_path, text, xsrf_cookies=True)) as client:
        response = await client.get("/")
        assert "_xsrf" in client.cookies
    assert response.status_code == 200, response.text
    assert response.text.startswith('<form><input type="hidden" name="_xsrf" value="')
    assert response.text.endswith("></form>&lt;b&gt;")


@pytest.mark.parametrize("engine", ENGINES)
async def test_static_url_is_a_template_global(engine: str, tmp_path: Path) -> None:
    """Was a bug (docs promised template helpers, only ``handler.static_url`` worked).
    ``static_url("app.css")`` gives the versioned URL, escaped like any value."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "app.css").write_text("p{}")
    text = EXPR[engine] % 'static_url("app.css")'
    async with TestClient(app_for(engine, tmp_path, text, static_path=str(static))) as client:
        response = await client.get("/")
    assert response.status_code == 200, response.text
    assert response.text.startswith("/static/app.css?v=")


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_context_value_wins_over_a_template_global(engine: str, tmp_path: Path) -> None:
    """A handler passing its own ``static_url`` keeps it."""

    class Page(ENGINES[engine][0]):  # type: ignore[misc,valid-type]
        def get(self) -> Any:
            return self.render_template("page", static_url=lambda name: "mine:" + name)

    (tmp_path / "page").write_text(EXPR[engine] % 'static_url("a")')
    app = Brubeck(
        handler_tuples=[(r"^/$", Page)], template_loader=ENGINES[engine][1](str(tmp_path))
    )
    async with TestClient(app) as client:
        assert (await client.get("/")).text == "mine:a"


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_error_while_rendering_is_logged_with_the_template_and_line(
    engine: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Was a bug for Mako. An exception raised by template code was logged at a line of
    Mako's generated module (``File "page_mako", line 21``), naming neither the template's
    path nor its line. The log must name both; the page stays a plain 500."""
    text = "line one\nline two\n" + EXPR[engine] % "1 // 0" + "\n"
    async with TestClient(app_for(engine, tmp_path, text)) as client:
        response = await client.get("/")
    assert response.status_code == 500 and "page" not in response.text
    assert "ZeroDivisionError" in caplog.text
    assert "page" in caplog.text and "line 3" in caplog.text, caplog.text
