"""templating.py: Jinja2 and Mako templates rendered by handlers, HTML escaped by default."""

from __future__ import annotations

import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.templating import Jinja2Rendering, MakoRendering, load_jinja2_env, load_mako_env
from brubeck.testing import TestClient


class JinjaPage(Jinja2Rendering, WebMessageHandler):
    def get(self):
        return self.render_template("hello.html", name=self.get_argument("name"))


class MakoPage(MakoRendering, WebMessageHandler):
    def get(self):
        return self.render_template("hello.mako", _status_code=201, name=self.get_argument("name"))


async def test_jinja2_renders_and_escapes(tmp_path):
    (tmp_path / "hello.html").write_text("<p>Hi {{ name }} from {{ handler.request.path }}</p>")
    app = Brubeck(
        handler_tuples=[(r"^/$", JinjaPage)], template_loader=load_jinja2_env(str(tmp_path))
    )
    async with TestClient(app) as client:
        response = await client.get("/", params={"name": "<b>Ann</b>"})
    assert response.status_code == 200
    assert response.text == "<p>Hi &lt;b&gt;Ann&lt;/b&gt; from /</p>"


async def test_mako_renders_and_escapes(tmp_path):
    (tmp_path / "hello.mako").write_text("<p>Hi ${name}</p>")
    app = Brubeck(handler_tuples=[(r"^/$", MakoPage)], template_loader=load_mako_env(str(tmp_path)))
    async with TestClient(app) as client:
        response = await client.get("/", params={"name": "<i>Bo</i>"})
    assert (response.status_code, response.text) == (201, "<p>Hi &lt;i&gt;Bo&lt;/i&gt;</p>")


async def test_missing_loader_or_template_is_a_500_with_a_log(tmp_path, caplog):
    async with TestClient(Brubeck(handler_tuples=[(r"^/$", JinjaPage)])) as client:
        assert (await client.get("/", params={"name": "x"})).status_code == 500
    assert "template_loader" in caplog.text
    app = Brubeck(
        handler_tuples=[(r"^/$", JinjaPage)], template_loader=load_jinja2_env(str(tmp_path))
    )
    async with TestClient(app) as client:
        assert (await client.get("/", params={"name": "x"})).status_code == 500
    assert "hello.html" in caplog.text


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "jinja2", None)
    with pytest.raises(ImportError, match=r"brubeck\[jinja2\]"):
        load_jinja2_env(".")
