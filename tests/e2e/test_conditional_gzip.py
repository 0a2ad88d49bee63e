"""Conditional GET and gzip through a real Mongrel2, with real HTTP clients (httpx, curl).

Mongrel2 forwards the handler's bytes untouched, so these check what a client and a cache see:
a 304 with no body on a connection that stays usable, a gzip body that a client inflates to the
original, and validators that survive the trip.
"""

import gzip
import json
import runpy
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from brubeck import Brubeck, JSONMessageHandler, Response, WebMessageHandler
from brubeck.conditional import body_etag
from brubeck.waiting import WaitingRoom

ITEMS = [{"id": n, "name": f"item number {n}"} for n in range(200)]
MODIFIED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


class ItemsHandler(JSONMessageHandler):
    """A JSON list far above the compression threshold; its ETag is computed by the app."""

    def get(self):
        return {"items": ITEMS}


class ArticleHandler(WebMessageHandler):
    """Sets its own validators, and skips building the page when the client is current."""

    def get(self):
        self.set_header("ETag", '"article-v3"')
        self.set_header("Last-Modified", MODIFIED)
        self.set_header("Cache-Control", "max-age=0, must-revalidate")
        if self.request.is_fresh('"article-v3"', MODIFIED):
            self.application.state.skipped += 1
            return self.render(304)
        return "<p>" + "a long article " * 200 + "</p>"


class DatedHandler(WebMessageHandler):
    def get(self):
        self.set_header("Last-Modified", MODIFIED)
        return "dated page"


class PictureHandler(WebMessageHandler):
    def get(self):
        self.set_header("Content-Type", "image/png")
        return b"\x89PNG" + bytes(4000)


@pytest.fixture(scope="module")
def site(serve_module):
    app = Brubeck(
        handler_tuples=[
            (r"^/items$", ItemsHandler),
            (r"^/article$", ArticleHandler),
            (r"^/dated$", DatedHandler),
            (r"^/picture$", PictureHandler),
        ],
        etag=True,
        compress_response=True,
    )
    app.state.skipped = 0
    m2 = serve_module(app)
    return m2, app


def _curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and raw body as curl received them (``--compressed`` inflates)."""
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-D", "-", *args],
        capture_output=True,
        timeout=20,
        check=True,
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def test_curl_compressed_gets_the_json_back_and_revalidates_with_its_etag(site):
    m2, _ = site
    status, headers, body = _curl("--compressed", f"{m2.url}/items")
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert json.loads(body) == {"items": ITEMS}
    etag = headers["etag"]
    status, headers, body = _curl("--compressed", "-H", f"If-None-Match: {etag}", f"{m2.url}/items")
    assert (status, body) == (304, b"")
    assert headers["etag"] == etag
    assert "content-type" not in headers and "content-length" not in headers


def test_gzip_bytes_on_the_wire_are_the_json_and_smaller(site, raw_http):
    m2, _ = site
    conn = raw_http(m2)
    conn.request("GET", "/items", [("Accept-Encoding", "gzip")])
    zipped = conn.read_response()
    conn.request("GET", "/items")
    plain = conn.read_response()
    assert zipped.header("Content-Encoding") == "gzip"
    assert plain.header("Content-Encoding") is None
    assert gzip.decompress(zipped.body) == plain.body
    assert len(zipped.body) < len(plain.body) / 4
    # Each representation has its own tag: a cache must not swap one for the other.
    assert plain.header("ETag") == body_etag(plain.body)
    assert zipped.header("ETag") == body_etag(zipped.body) != plain.header("ETag")


def test_a_304_leaves_the_keep_alive_connection_usable(site, raw_http):
    m2, _ = site
    conn = raw_http(m2)
    conn.request("GET", "/items")
    first = conn.read_response()
    # Pipelined: a 304 with no body, then a 200, on one connection, in order.
    conn.request("GET", "/items", [("If-None-Match", first.header("ETag"))])
    conn.request("GET", "/dated")
    revalidated, after = conn.read_response(), conn.read_response()
    assert revalidated.status == 304
    assert revalidated.header("Content-Length") is None
    assert (after.status, after.body) == (200, b"dated page")


def test_handler_skips_the_work_when_the_client_is_current(site):
    m2, app = site
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        page = client.get("/article")
        assert page.status_code == 200
        assert page.headers["content-encoding"] == "gzip"  # httpx asked for it and inflated it
        assert page.text.startswith("<p>a long article")
        # The handler's strong tag turned weak on the gzip body: same content, other bytes.
        assert page.headers["etag"] == 'W/"article-v3"'
        before = app.state.skipped
        again = client.get("/article", headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["cache-control"] == "max-age=0, must-revalidate"
        assert again.headers["vary"] == "Accept-Encoding"  # as on the 200
        assert app.state.skipped == before + 1


def test_if_modified_since_through_mongrel2(site):
    m2, _ = site
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        page = client.get("/dated")
        assert page.headers["last-modified"] == "Wed, 04 Mar 2026 05:06:07 GMT"
        same = client.get("/dated", headers={"If-Modified-Since": page.headers["last-modified"]})
        older = client.get("/dated", headers={"If-Modified-Since": "Tue, 03 Mar 2026 00:00:00 GMT"})
        junk = client.get("/dated", headers={"If-Modified-Since": "yesterday"})
    assert same.status_code == 304
    assert (older.status_code, older.text) == (200, "dated page")
    assert (junk.status_code, junk.text) == (200, "dated page")


def test_post_and_binary_bodies_are_left_alone(site):
    m2, _ = site
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        picture = client.get("/picture", headers={"Accept-Encoding": "gzip"})
        tag = client.get("/items").headers["etag"]
        posted = client.post("/items", headers={"If-None-Match": tag}, content=b"x")
    assert "content-encoding" not in picture.headers
    assert "vary" not in picture.headers
    assert len(picture.content) == 4004
    assert posted.status_code == 405  # answered as usual, never a 304


def test_the_caching_example(serve):
    path = Path(__file__).resolve().parents[2] / "examples" / "caching" / "app.py"
    m2 = serve(runpy.run_path(str(path))["app"])
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        notes = client.get("/notes")
        assert notes.headers["content-encoding"] == "gzip"
        assert len(notes.json()["notes"]) == 20
        listed = client.get("/notes", headers={"If-None-Match": notes.headers["etag"]})
        assert listed.status_code == 304
        note = client.get("/notes/3")
        assert note.json()["version"] == 1
        tag, modified = note.headers["etag"], note.headers["last-modified"]
        assert client.get("/notes/3", headers={"If-None-Match": tag}).status_code == 304
        assert client.get("/notes/3", headers={"If-Modified-Since": modified}).status_code == 304
        assert client.put("/notes/3", data={"text": "changed"}).json()["version"] == 2
        # An edit made from the version-1 copy would overwrite version 2: refused, unchanged.
        stale = client.put("/notes/3", data={"text": "lost?"}, headers={"If-Match": tag})
        assert stale.status_code == 412
        current = client.put(
            "/notes/3", data={"text": "changed"}, headers={"If-Match": '"note-3-v2"'}
        )
        assert (current.status_code, current.headers["etag"]) == (200, '"note-3-v3"')
        # The edit changed the version: the old tag no longer matches, and the new body comes.
        after = client.get("/notes/3", headers={"If-None-Match": tag})
        assert (after.status_code, after.json()["text"]) == (200, "changed")
        changed = client.get("/notes", headers={"If-None-Match": notes.headers["etag"]})
        assert changed.status_code == 200
        assert client.get("/notes/99").status_code == 404


def test_one_release_to_many_clients_through_mongrel2(serve):
    """A WaitingRoom release: gzip clients get one gzip body, the others the JSON as it is."""
    app = Brubeck(compress_response=True)
    room = WaitingRoom(app)

    class Wait(WebMessageHandler):
        async def get(self):
            return await room.wait(self.request, timeout=10)

    class Release(WebMessageHandler):
        def post(self):
            return str(room.release(Response({"items": ITEMS})))

    app.add_route_rule(r"^/wait$", Wait)
    app.add_route_rule(r"^/release$", Release)
    m2 = serve(app)
    results: dict[int, tuple[dict, bytes]] = {}

    def wait(n: int) -> None:
        headers = {"Accept-Encoding": "gzip" if n % 2 else "identity"}
        with (
            httpx.Client(base_url=m2.url, timeout=10) as client,
            client.stream("GET", "/wait", headers=headers) as response,
        ):
            results[n] = (dict(response.headers), b"".join(response.iter_raw()))

    threads = [threading.Thread(target=wait, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(room) < 6:
        assert time.monotonic() < deadline, "the clients did not all wait"
        time.sleep(0.01)
    assert httpx.post(f"{m2.url}/release", timeout=5).text == "6"
    for thread in threads:
        thread.join(10)
    assert sorted(results) == list(range(6))
    for n, (headers, raw) in results.items():
        assert headers["vary"] == "Accept-Encoding"
        body = gzip.decompress(raw) if n % 2 else raw
        assert headers.get("content-encoding") == ("gzip" if n % 2 else None)
        assert json.loads(body) == {"items": ITEMS}
