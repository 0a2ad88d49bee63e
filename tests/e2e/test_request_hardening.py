"""Request-side hardening through a real Mongrel2: what it passes on undecoded, the app refuses.

Mongrel2 hands the path over percent-encoded (``/admin%0A``); the app decodes it, and an
encoded control character must not reach a route whose ``$`` would match before it.
"""

from __future__ import annotations

import subprocess

import pytest

from brubeck import Brubeck, WebMessageHandler


class Admin(WebMessageHandler):
    def get(self):
        return "the admin page"


class Files(WebMessageHandler):
    def get(self, name):
        return f"file {name!r}"


@pytest.fixture(scope="module")
def site(serve_module):
    app = Brubeck(handler_tuples=[(r"^/admin$", Admin), (r"^/files/(?P<name>.+)$", Files)])
    return serve_module(app)


def curl(url: str) -> tuple[int, str]:
    done = subprocess.run(
        ["curl", "-s", "--path-as-is", "-w", "\n%{http_code}", url],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_an_encoded_newline_in_the_path_is_a_400(site):
    assert curl(f"{site.url}/admin") == (200, "the admin page")
    for path in ("/admin%0A", "/admin%0d%0a", "/files/abc%0A", "/files/a%00b"):
        code, body = curl(f"{site.url}{path}")
        assert code == 400, (path, code, body)
        assert "control character" in body
    assert curl(f"{site.url}/files/a%20b") == (200, "file 'a b'")
