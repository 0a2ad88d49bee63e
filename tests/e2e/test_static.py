"""Static files through a real Mongrel2, with real HTTP clients (curl, httpx).

A page renders ``static_url`` links; a browser-like client follows them and must get the bytes
with the year-long Cache-Control, revalidate with a 304, resume with a range, never reach a
hidden file or a name out of the root, follow a directory's 301, and download a large file
whole (streamed through Mongrel2).
"""

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from brubeck import Brubeck, StaticFileHandler, WebMessageHandler

YEAR = "public, max-age=31536000, immutable"
CSS = ("body { color: #333; margin: 0 auto; }\n" * 100).encode()
BIG_SIZE = 2 * 1024 * 1024
SECRET = b"API_KEY=do-not-publish\n"
OUTSIDE = b"outside the root\n"
INDEX = b"<h1>guide</h1>\n"


class Page(WebMessageHandler):
    def get(self):
        return (
            f'<link rel="stylesheet" href="{self.static_url("css/site.css")}">'
            f'<a href="{self.static_url("big.bin")}">download</a>'
        )


class CatchAll(WebMessageHandler):
    def get(self, rest):
        return f"catch-all: {rest}"


@pytest.fixture(scope="module")
def site(serve_module, tmp_path_factory):
    base = tmp_path_factory.mktemp("static")
    root = base / "static"
    (root / "css").mkdir(parents=True)
    (root / "css" / "site.css").write_bytes(CSS)
    big = os.urandom(BIG_SIZE)
    (root / "big.bin").write_bytes(big)
    (root / ".env").write_bytes(SECRET)
    (root / "guide").mkdir()
    (root / "guide" / "index.html").write_bytes(INDEX)
    (base / "outside.txt").write_bytes(OUTSIDE)
    app = Brubeck(
        handler_tuples=[
            (r"^/$", Page),
            (
                r"^/docs/(.*)$",
                StaticFileHandler,
                {"root": root, "default_filename": "index.html"},
            ),
            (r"^/(.*)$", CatchAll),  # must not hide the static route
        ],
        static_path=root,
    )
    return serve_module(app), root, big


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (names lower-cased) and body of the last response curl received."""
    with tempfile.TemporaryDirectory() as scratch:
        dumped = Path(scratch) / "head"
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "-D", str(dumped), *args],
            capture_output=True,
            timeout=30,
            check=True,
        )
        heads = dumped.read_bytes().strip().split(b"\r\n\r\n")
    lines = heads[-1].decode("latin-1").split("\r\n")  # after -L, the last one
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, done.stdout


def links(m2) -> list[str]:
    status, _, page = curl(f"{m2.url}/")
    assert status == 200
    return re.findall(r'href="([^"]+)"', page.decode())


def test_the_page_links_versioned_urls_that_are_cached_for_a_year(site):
    m2, _, big = site
    css, download = links(m2)
    assert css == f"/static/css/site.css?v={sha256(CSS)[:16]}"
    assert download == f"/static/big.bin?v={sha256(big)[:16]}"
    with httpx.Client(base_url=m2.url, timeout=10) as client:
        r = client.get(css)
        stale = client.get("/static/css/site.css?v=0123456789abcdef")
        bare = client.get("/static/css/site.css")
    assert (r.status_code, r.content) == (200, CSS)
    assert r.headers["cache-control"] == YEAR
    assert r.headers["content-type"] == "text/css; charset=utf-8"
    assert (stale.status_code, stale.content) == (200, CSS)
    assert stale.headers["cache-control"] == "no-cache"
    assert (bare.status_code, bare.content) == (200, CSS)
    assert "cache-control" not in bare.headers


def test_a_304_with_if_none_match_keeps_the_year(site):
    m2, _, _ = site
    css = links(m2)[0]
    with httpx.Client(base_url=m2.url, timeout=10) as client:
        first = client.get(css)
        fresh = client.get(css, headers={"If-None-Match": first.headers["etag"]})
        after = client.get("/static/css/site.css")  # the connection is still good
    assert fresh.status_code == 304
    assert fresh.content == b""
    assert fresh.headers["etag"] == first.headers["etag"]
    assert fresh.headers["cache-control"] == YEAR
    assert (after.status_code, after.content) == (200, CSS)


def test_a_range_of_the_large_file_is_a_206(site, tmp_path):
    m2, _, big = site
    download = links(m2)[1]
    out = tmp_path / "tail.bin"
    status, headers, _ = curl("-r", "1000000-", "-o", str(out), m2.url + download)
    assert status == 206
    assert headers["content-range"] == f"bytes 1000000-{BIG_SIZE - 1}/{BIG_SIZE}"
    assert headers["cache-control"] == YEAR
    assert out.read_bytes() == big[1000000:]


def test_the_large_file_arrives_whole(site, tmp_path):
    m2, _, big = site
    download = links(m2)[1]
    out = tmp_path / "big.bin"
    status, headers, _ = curl("-o", str(out), m2.url + download)
    assert status == 200
    assert headers["content-length"] == str(BIG_SIZE)
    assert headers["cache-control"] == YEAR
    assert sha256(out.read_bytes()) == sha256(big)


def test_head_has_the_headers_and_no_body(site, raw_http):
    m2, _, _ = site
    download = links(m2)[1]
    status, headers, _ = curl("-I", m2.url + download)
    assert status == 200
    assert headers["content-length"] == str(BIG_SIZE)
    assert headers["cache-control"] == YEAR
    assert headers["accept-ranges"] == "bytes"
    # On the wire: nothing follows the head, so the next answer parses right after it.
    conn = raw_http(m2, timeout=10)
    conn.request("HEAD", download)
    head = conn.read_response(head_request=True)
    assert head.status == 200
    assert head.header("Content-Length") == str(BIG_SIZE)
    conn.request("GET", "/static/css/site.css")
    after = conn.read_response()
    assert (after.status, after.body) == (200, CSS)


@pytest.mark.parametrize(
    "target",
    [
        "/static/.env",
        "/static/%2Eenv",
        "/static/../outside.txt",
        "/static/%2E%2E/outside.txt",
        "/static/css/../../outside.txt",
        "/docs/../outside.txt",
    ],
)
def test_hidden_files_and_names_out_of_the_root_are_404s(site, target):
    m2, _, _ = site
    status, _, body = curl("--path-as-is", m2.url + target)
    assert status == 404
    assert SECRET not in body
    assert OUTSIDE not in body


def test_a_directory_is_redirected_to_its_slash(site):
    m2, _, _ = site
    status, headers, _ = curl(f"{m2.url}/docs/guide?lang=en")
    assert status == 301
    assert headers["location"] == "/docs/guide/?lang=en"
    status, _, body = curl("-L", f"{m2.url}/docs/guide?lang=en")
    assert (status, body) == (200, INDEX)


def test_the_catch_all_still_answers_other_paths(site):
    m2, _, _ = site
    status, _, body = curl(f"{m2.url}/elsewhere")
    assert (status, body) == (200, b"catch-all: elsewhere")
