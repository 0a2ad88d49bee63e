"""examples/assets through a real Mongrel2, driven the way its docstring says: curl."""

import re
import runpy
import subprocess
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assets" / "app.py"


@pytest.fixture
def m2(serve):
    return serve(runpy.run_path(str(EXAMPLE))["app"])


def _curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (names lower-cased) and body of one request."""
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-D", "-", *args],
        capture_output=True,
        timeout=30,
        check=True,
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(lines[0].split()[1]), headers, body


def test_the_page_links_versioned_urls_that_are_cached_for_a_year(m2):
    status, _, page = _curl(f"{m2.url}/")
    assert status == 200
    links = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.decode())
    assert len(links) == 2
    for link, name in zip(links, ["css/site.css", "js/site.js"], strict=True):
        assert re.fullmatch(rf"/static/{name}\?v=[0-9a-f]{{16}}", link)
        status, headers, body = _curl(m2.url + link)
        assert status == 200
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert body == (EXAMPLE.parent / "static" / name).read_bytes()
        # An old page's version: the current file, revalidated next time.
        status, headers, _ = _curl(m2.url + link.split("?")[0] + "?v=0123456789abcdef")
        assert (status, headers["cache-control"]) == (200, "no-cache")
        # No version: no Cache-Control; the ETag makes the next visit a 304.
        status, headers, _ = _curl(m2.url + link.split("?")[0])
        assert status == 200 and "cache-control" not in headers
        status, _, body = _curl("-H", f"If-None-Match: {headers['etag']}", m2.url + link)
        assert (status, body) == (304, b"")


def test_the_guide_redirects_to_its_index_and_names_stay_inside(m2):
    status, headers, _ = _curl(f"{m2.url}/guide")
    assert (status, headers["location"]) == (301, "/guide/")
    status, headers, body = _curl(m2.url + headers["location"])
    assert status == 200 and headers["cache-control"] == "no-cache"
    assert body == (EXAMPLE.parent / "guide" / "index.html").read_bytes()
    for path in ["/static/../app.py", "/guide/../app.py", "/static/css/../../app.py"]:
        status, _, body = _curl("--path-as-is", m2.url + path)
        assert status == 404, path
        assert b"Brubeck" not in body
