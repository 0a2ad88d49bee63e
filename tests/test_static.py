"""static.py: ``StaticFileHandler``, the ``static_path`` route, ``static_url`` and the content
versions behind ``?v=`` (no Mongrel2: ``TestClient``).

Each test names the rule it guards; most would fail under one specific mutation of
brubeck/static.py (a check dropped, a branch swapped, a cache key shortened).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import re
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import brubeck
from brubeck import Brubeck, StaticFileHandler, WebMessageHandler
from brubeck import static as static_module
from brubeck.conditional import http_date
from brubeck.files import INLINE_LIMIT, file_etag
from brubeck.routing import Route, Router
from brubeck.static import IMMUTABLE, StaticFiles, StaticVersions
from brubeck.testing import TestClient

SMALL = b"hello static\n"
TEXT = ("body { color: #333; margin: 0 auto; }\n" * 100).encode()  # gzip-worthy
BIG = os.urandom(3 * INLINE_LIMIT + 123)  # streamed in pieces
SECRET = b"API_KEY=do-not-publish\n"
OUTSIDE = b"outside the root\n"
INDEX = b"<h1>index</h1>\n"
SUB_INDEX = b"<h1>sub index</h1>\n"
GZIP = {"Accept-Encoding": "gzip"}
YEAR = "public, max-age=31536000, immutable"
STALE = "0123456789abcdef"


def version_of(data: bytes) -> str:
    """A version as the rules define it, computed here and not by the library."""
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A static root with plain, hidden, nested and odd names, and links in and out."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(SMALL)
    (root / "style.css").write_bytes(TEXT)
    (root / "big.bin").write_bytes(BIG)
    (root / "index.html").write_bytes(INDEX)
    (root / ".env").write_bytes(SECRET)
    (root / "...").write_bytes(SECRET)
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(SUB_INDEX)
    (root / "sub" / "page.txt").write_bytes(SMALL)
    (root / "sub" / ".git").mkdir()
    (root / "sub" / ".git" / "config").write_bytes(SECRET)
    (root / ".hidden-dir").mkdir()
    (root / ".hidden-dir" / "index.html").write_bytes(SECRET)
    (root / ".well-known").mkdir()
    (root / ".well-known" / "security.txt").write_bytes(b"Contact: me\n")
    (root / "my dir").mkdir()
    (root / "my dir" / "index.html").write_bytes(SUB_INDEX)
    (root / "100%").mkdir()
    (root / "100%" / "index.html").write_bytes(SUB_INDEX)
    (root / "empty").mkdir()
    (root / "a b#c?&d.txt").write_bytes(SMALL)
    (root / "café.txt").write_bytes(SMALL)
    (tmp_path / "outside.txt").write_bytes(OUTSIDE)
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "index.html").write_bytes(OUTSIDE)
    (root / "link-out.txt").symlink_to(tmp_path / "outside.txt")
    (root / "dir-link-out").symlink_to(tmp_path / "outside-dir")
    (root / "link-in.txt").symlink_to(root / "hello.txt")
    (root / "dir-link-in").symlink_to(root / "sub")
    (root / "loop").symlink_to(root / "loop")
    return root


class Assets(StaticFileHandler):
    """Configured by class attributes, as a subclass would be."""

    default_filename = "index.html"
    cache_control = "public, max-age=60"


class Rootless(StaticFileHandler):
    pass


def make_app(root: Path, **settings: Any) -> Brubeck:
    Assets.root = root
    return Brubeck(
        handler_tuples=[
            (r"^/assets/(.*)$", StaticFileHandler, {"root": root}),
            (r"^/named/(?P<path>.*)$", StaticFileHandler, {"root": str(root)}),
            (r"^/site/(.*)$", StaticFileHandler, {"root": root, "default_filename": "index.html"}),
            (r"^/cached/(.*)$", StaticFileHandler, {"root": root, "cache_control": "max-age=60"}),
            (r"^/dotfiles/(.*)$", StaticFileHandler, {"root": root, "serve_hidden": True}),
            (r"^/class/(.*)$", Assets),
            (r"^/rootless/(.*)$", Rootless),
        ],
        **settings,
    )


def make_static_app(root: Path, **settings: Any) -> Brubeck:
    """An app with ``static_path``, a page that links a file, and a catch-all of its own."""

    class Page(WebMessageHandler):
        def get(self) -> str:
            return f'<link href="{self.static_url("style.css")}">'

    class CatchAll(WebMessageHandler):
        def get(self, rest: str) -> str:
            return f"catch-all: {rest}"

        def post(self, rest: str) -> str:
            return "posted"

    return Brubeck(
        handler_tuples=[(r"^/page$", Page), (r"^/(.*)$", CatchAll)],
        static_path=root,
        **settings,
    )


def count_hashes(monkeypatch: Any) -> list[str]:
    """Every SHA-256 static.py starts, as the name of the thread that started it."""
    started: list[str] = []

    def sha256(*args: Any) -> Any:
        started.append(threading.current_thread().name)
        return hashlib.sha256(*args)

    monkeypatch.setattr(static_module, "hashlib", SimpleNamespace(sha256=sha256))
    return started


def touch(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


# The package


def test_static_file_handler_is_exported_from_brubeck() -> None:
    assert brubeck.StaticFileHandler is StaticFileHandler
    assert "StaticFileHandler" in brubeck.__all__


def test_immutable_is_a_year_and_immutable() -> None:
    assert IMMUTABLE == YEAR


# StaticFileHandler: serving


@pytest.mark.parametrize("prefix", ["/assets/", "/named/"])
async def test_get_serves_the_file_with_validators(tree: Path, prefix: str) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get(prefix + "hello.txt")
        nested = await client.get(prefix + "sub/page.txt")
    assert (r.status_code, r.content) == (200, SMALL)
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["etag"] == file_etag(os.stat(tree / "hello.txt"))
    assert r.headers["last-modified"] == http_date(os.stat(tree / "hello.txt").st_mtime)
    assert r.headers["accept-ranges"] == "bytes"
    assert "cache-control" not in r.headers  # no v, no cache_control: nothing
    assert (nested.status_code, nested.content) == (200, SMALL)


async def test_head_has_the_headers_and_no_body(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        small = await client.head(f"/assets/hello.txt?v={version_of(SMALL)}")
        big = await client.head("/assets/big.bin")
    assert (small.status_code, small.content) == (200, b"")
    assert small.headers["content-length"] == str(len(SMALL))
    assert small.headers["cache-control"] == YEAR
    assert small.headers["etag"] == file_etag(os.stat(tree / "hello.txt"))
    assert (big.status_code, big.content) == (200, b"")
    assert big.headers["content-length"] == str(len(BIG))


async def test_post_is_a_405_that_allows_get_and_head(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.post("/assets/hello.txt", data=b"x")
    assert r.status_code == 405
    assert sorted(m.strip() for m in r.headers["allow"].split(",")) == ["GET", "HEAD"]
    assert StaticFileHandler.allowed_methods() == ["GET", "HEAD"]


async def test_if_none_match_and_if_modified_since_are_304s(tree: Path) -> None:
    status = os.stat(tree / "hello.txt")
    async with TestClient(make_app(tree)) as client:
        by_tag = await client.get("/assets/hello.txt", headers={"If-None-Match": file_etag(status)})
        by_date = await client.get(
            "/assets/hello.txt", headers={"If-Modified-Since": http_date(status.st_mtime)}
        )
        versioned = await client.get(
            f"/assets/hello.txt?v={version_of(SMALL)}",
            headers={"If-None-Match": file_etag(status)},
        )
        stale_tag = await client.get("/assets/hello.txt", headers={"If-None-Match": '"other"'})
    assert (by_tag.status_code, by_tag.content) == (304, b"")
    assert by_tag.headers["etag"] == file_etag(status)
    assert (by_date.status_code, by_date.content) == (304, b"")
    # The 304 of a versioned URL says it may be kept for a year, as its 200 did.
    assert versioned.status_code == 304
    assert versioned.headers["cache-control"] == YEAR
    assert (stale_tag.status_code, stale_tag.content) == (200, SMALL)


async def test_one_range_is_a_206_and_a_range_past_the_end_a_416(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        part = await client.get("/assets/hello.txt", headers={"Range": "bytes=6-11"})
        big = await client.get(
            f"/assets/big.bin?v={version_of(BIG)}", headers={"Range": "bytes=-1000"}
        )
        past = await client.get("/assets/hello.txt", headers={"Range": "bytes=1000-"})
    assert (part.status_code, part.content) == (206, SMALL[6:12])
    assert part.headers["content-range"] == f"bytes 6-11/{len(SMALL)}"
    assert (big.status_code, big.content) == (206, BIG[-1000:])
    assert big.headers["cache-control"] == YEAR
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(SMALL)}"


async def test_a_large_file_is_streamed_whole_with_its_version(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get(f"/assets/big.bin?v={version_of(BIG)}")
        after = await client.get("/assets/hello.txt")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(BIG))
    assert r.headers["cache-control"] == YEAR
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(BIG).hexdigest()
    assert (after.status_code, after.content) == (200, SMALL)


async def test_a_file_reached_through_a_link_inside_the_root_is_served(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        file_link = await client.get(f"/assets/link-in.txt?v={version_of(SMALL)}")
        dir_link = await client.get("/assets/dir-link-in/page.txt")
    assert (file_link.status_code, file_link.content) == (200, SMALL)
    assert file_link.headers["cache-control"] == YEAR
    assert (dir_link.status_code, dir_link.content) == (200, SMALL)


async def test_percent_encoded_and_non_ascii_names_are_served(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        odd = await client.get("/assets/a%20b%23c%3F%26d.txt")
        accented = await client.get("/assets/caf%C3%A9.txt")
    assert (odd.status_code, odd.content) == (200, SMALL)
    assert (accented.status_code, accented.content) == (200, SMALL)


async def test_dot_parts_that_stay_inside_are_not_hidden(tree: Path) -> None:
    """``.`` and ``..`` are not hidden names: only the root decides about them."""
    async with TestClient(make_app(tree)) as client:
        here = await client.get("/assets/./hello.txt")
        back = await client.get("/assets/sub/../hello.txt")
    assert (here.status_code, here.content) == (200, SMALL)
    assert (back.status_code, back.content) == (200, SMALL)


async def test_a_missing_file_a_directory_and_an_empty_name_are_404s(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        for path in ["/assets/missing.txt", "/assets/sub", "/assets/sub/", "/assets/", "/named/"]:
            r = await client.get(path)
            assert r.status_code == 404, path


# StaticFileHandler: hidden names


@pytest.mark.parametrize(
    "name",
    [
        ".env",
        "%2Eenv",  # the route sees the decoded path
        "sub/.git/config",
        "sub/.git/",
        ".hidden-dir/index.html",
        "...",
        "sub/./.git/config",
    ],
)
@pytest.mark.parametrize("prefix", ["/assets/", "/site/", "/class/"])
async def test_a_hidden_name_is_a_404(tree: Path, name: str, prefix: str) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get(prefix + name)
        versioned = await client.get(f"{prefix}{name}?v={version_of(SECRET)}")
    assert r.status_code == 404
    assert SECRET not in r.content
    assert versioned.status_code == 404
    assert SECRET not in versioned.content


async def test_a_hidden_directory_is_a_404_and_not_a_redirect(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get("/site/.hidden-dir")
    assert r.status_code == 404
    assert "location" not in r.headers


async def test_serve_hidden_serves_hidden_names(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        env = await client.get("/dotfiles/.env")
        known = await client.get("/dotfiles/.well-known/security.txt")
        nested = await client.get("/dotfiles/sub/.git/config")
        escape = await client.get("/dotfiles/../outside.txt")
    assert (env.status_code, env.content) == (200, SECRET)
    assert (known.status_code, known.content) == (200, b"Contact: me\n")
    assert (nested.status_code, nested.content) == (200, SECRET)
    assert escape.status_code == 404  # serve_hidden does not open the way out


# StaticFileHandler: names that lead out of the root


LEADING_OUT = [
    "../outside.txt",
    "%2E%2E/outside.txt",
    "..%2Foutside.txt",
    "sub/../../outside.txt",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    str(Path("/etc/passwd")),
    "link-out.txt",
    "dir-link-out/index.html",
    "loop",
    "loop/x",
]


@pytest.mark.parametrize("name", LEADING_OUT)
@pytest.mark.parametrize("prefix", ["/assets/", "/named/", "/site/", "/dotfiles/"])
async def test_a_name_that_leads_out_is_a_404(tree: Path, name: str, prefix: str) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get(prefix + name)
        versioned = await client.get(f"{prefix}{name}?v={version_of(OUTSIDE)}")
    for response in (r, versioned):
        assert response.status_code == 404
        assert OUTSIDE not in response.content
        assert b"root:" not in response.content
        assert "location" not in response.headers


@pytest.mark.parametrize("prefix", ["/assets/", "/named/", "/site/", "/dotfiles/"])
async def test_a_name_with_an_encoded_nul_is_a_400(tree: Path, prefix: str) -> None:
    """The app refuses a control character in the decoded path before any route runs."""
    async with TestClient(make_app(tree)) as client:
        r = await client.get(prefix + "hello.txt%00.png")
    assert r.status_code == 400
    assert SMALL not in r.content and "location" not in r.headers


async def test_a_directory_link_out_is_a_404_and_not_a_redirect(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get("/site/dir-link-out")
        slash = await client.get("/site/dir-link-out/")
    assert r.status_code == 404 and "location" not in r.headers
    assert slash.status_code == 404 and OUTSIDE not in slash.content


async def test_a_named_pipe_is_a_404_at_once(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    async with TestClient(make_app(tree)) as client:
        async with asyncio.timeout(3):
            plain = await client.get("/assets/pipe")
            versioned = await client.get(f"/assets/pipe?v={STALE}")
    assert plain.status_code == 404
    assert versioned.status_code == 404


# StaticFileHandler: default_filename and the directory redirect


async def test_default_filename_serves_the_index_of_a_slashed_directory(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        top = await client.get("/site/")
        sub = await client.get("/site/sub/")
        file = await client.get("/site/sub/page.txt")
        empty = await client.get("/site/empty/")
        versioned = await client.get(f"/site/sub/?v={version_of(SUB_INDEX)}")
        by_class = await client.get("/class/sub/")
    assert (top.status_code, top.content) == (200, INDEX)
    assert top.headers["content-type"].startswith("text/html")
    assert (sub.status_code, sub.content) == (200, SUB_INDEX)
    assert (file.status_code, file.content) == (200, SMALL)  # a file is no directory
    assert empty.status_code == 404  # no index in it
    # The version is the index file's: the name the default completes.
    assert (versioned.status_code, versioned.headers["cache-control"]) == (200, YEAR)
    assert (by_class.status_code, by_class.content) == (200, SUB_INDEX)


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/site/sub", "/site/sub/"),
        ("/site/sub?x=1&y=%20z", "/site/sub/?x=1&y=%20z"),
        ("/site/my%20dir", "/site/my%20dir/"),
        ("/site/100%25", "/site/100%25/"),
        ("/site/dir-link-in", "/site/dir-link-in/"),
        ("/site/sub/../empty", "/site/sub/../empty/"),
        ("/class/sub", "/class/sub/"),
    ],
)
async def test_a_directory_without_its_slash_is_a_301_to_the_slashed_url(
    tree: Path, target: str, location: str
) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get(target)
        followed = await client.get(location)
    assert r.status_code == 301
    assert r.get_all("location") == [location]
    assert followed.status_code in (200, 404)  # the redirect lands on the directory itself
    if "empty" not in location:
        assert followed.status_code == 200


@pytest.mark.parametrize("target", ["//evil.example", "/%2Fevil.example", "///evil.example"])
async def test_a_directory_redirect_never_leads_to_another_host(
    tmp_path: Path, target: str
) -> None:
    """A site served from ``/`` whose root has a directory named like a host: the 301 must
    stay on this site. ``Location: //evil.example/`` is protocol-relative, so a browser would
    go to the host ``evil.example`` (an open redirect; checked through Mongrel2 too)."""
    (tmp_path / "evil.example").mkdir()
    (tmp_path / "evil.example" / "index.html").write_bytes(INDEX)
    app = Brubeck(
        handler_tuples=[
            (r"^/(.*)$", StaticFileHandler, {"root": tmp_path, "default_filename": "index.html"})
        ]
    )
    async with TestClient(app) as client:
        r = await client.get(target)
    location = r.headers.get("location", "")
    assert not location.startswith("//"), (r.status_code, location)
    assert not location.startswith("/\\"), (r.status_code, location)


async def test_without_default_filename_a_directory_is_a_404_and_not_a_redirect(
    tree: Path,
) -> None:
    async with TestClient(make_app(tree)) as client:
        bare = await client.get("/assets/sub")
        slashed = await client.get("/assets/sub/")
    for r in (bare, slashed):
        assert r.status_code == 404
        assert "location" not in r.headers


# StaticFileHandler: Cache-Control and v


async def test_the_current_version_is_cached_for_a_year(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get(f"/assets/hello.txt?v={version_of(SMALL)}")
        named = await client.get(f"/named/style.css?v={version_of(TEXT)}")
    assert (r.status_code, r.content) == (200, SMALL)
    assert r.get_all("cache-control") == [YEAR]
    assert named.get_all("cache-control") == [YEAR]


@pytest.mark.parametrize(
    "version",
    [
        STALE,
        version_of(TEXT),  # another file's version
        version_of(SMALL)[:15],  # a prefix of the right one
        version_of(SMALL).upper(),
        hashlib.sha256(SMALL).hexdigest(),  # the whole digest is not the version
        "",
    ],
)
async def test_another_version_gets_the_current_file_with_no_cache(
    tree: Path, version: str
) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get(f"/assets/hello.txt?v={version}")
    assert (r.status_code, r.content) == (200, SMALL)
    assert r.get_all("cache-control") == ["no-cache"]


async def test_the_handler_cache_control_applies_only_without_v(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        plain = await client.get("/cached/hello.txt")
        current = await client.get(f"/cached/hello.txt?v={version_of(SMALL)}")
        stale = await client.get(f"/cached/hello.txt?v={STALE}")
        by_class = await client.get("/class/hello.txt")
        by_class_304 = await client.get(
            "/class/hello.txt", headers={"If-None-Match": plain.headers["etag"]}
        )
    assert plain.get_all("cache-control") == ["max-age=60"]
    assert current.get_all("cache-control") == [YEAR]
    assert stale.get_all("cache-control") == ["no-cache"]
    assert by_class.get_all("cache-control") == ["public, max-age=60"]
    assert by_class_304.status_code == 304
    assert by_class_304.get_all("cache-control") == ["public, max-age=60"]


async def test_a_changed_file_turns_its_old_version_stale(tree: Path) -> None:
    path = tree / "hello.txt"
    async with TestClient(make_app(tree)) as client:
        before = await client.get(f"/assets/hello.txt?v={version_of(SMALL)}")
        path.write_bytes(b"new content, longer than before\n")
        old = await client.get(f"/assets/hello.txt?v={version_of(SMALL)}")
        new = await client.get(f"/assets/hello.txt?v={version_of(path.read_bytes())}")
    assert before.headers["cache-control"] == YEAR
    assert old.headers["cache-control"] == "no-cache"
    assert old.content == path.read_bytes()
    assert new.headers["cache-control"] == YEAR


async def test_a_version_for_a_missing_file_is_a_plain_404(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        r = await client.get(f"/assets/missing.txt?v={STALE}")
    assert r.status_code == 404
    assert r.headers.get("cache-control") != YEAR


# StaticFileHandler: its configuration


async def test_without_a_root_the_app_logs_the_error_and_answers_500(
    tree: Path, caplog: Any
) -> None:
    with caplog.at_level(logging.ERROR):
        async with TestClient(make_app(tree)) as client:
            r = await client.get("/rootless/hello.txt")
    assert r.status_code == 500
    assert SMALL not in r.content
    failures = [rec for rec in caplog.records if rec.levelno >= logging.ERROR and rec.exc_info]
    assert failures, caplog.records
    exc = failures[0].exc_info[1]
    assert isinstance(exc, RuntimeError)
    assert "Rootless needs a root" in str(exc)
    assert '"root"' in str(exc)


async def test_init_kwargs_do_not_leak_into_the_class(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        await client.get("/dotfiles/.env")
        await client.get("/site/")
    assert StaticFileHandler.root is None
    assert StaticFileHandler.default_filename is None
    assert StaticFileHandler.cache_control is None
    assert StaticFileHandler.serve_hidden is False


async def test_the_name_is_the_group_called_path_even_after_an_unnamed_group(
    tree: Path,
) -> None:
    """The rule says: the group named ``path`` first, whatever comes before it."""
    app = Brubeck(handler_tuples=[(r"^/(en|fr)/(?P<path>.*)$", StaticFileHandler, {"root": tree})])
    async with TestClient(app) as client:
        r = await client.get("/en/hello.txt")
    assert (r.status_code, r.content) == (200, SMALL)


async def test_without_a_path_group_or_an_unnamed_one_the_first_named_group_is_the_name(
    tree: Path,
) -> None:
    app = Brubeck(handler_tuples=[(r"^/files/(?P<name>.*)$", StaticFileHandler, {"root": tree})])
    async with TestClient(app) as client:
        r = await client.get("/files/hello.txt")
    assert (r.status_code, r.content) == (200, SMALL)


async def test_with_two_unnamed_groups_the_first_is_the_name(tree: Path) -> None:
    app = Brubeck(handler_tuples=[(r"^/two/([^/]+)/(.*)$", StaticFileHandler, {"root": tree})])
    async with TestClient(app) as client:
        r = await client.get("/two/hello.txt/ignored")
    assert (r.status_code, r.content) == (200, SMALL)


async def test_a_group_that_did_not_match_counts_as_empty(tree: Path) -> None:
    """docs/http.md: with ``r"^/guide(/.*)?$"``, ``/guide`` and ``/guide/`` name the directory
    itself: the first is redirected to the second, which serves the index."""
    app = Brubeck(
        handler_tuples=[
            (r"^/guide(/.*)?$", StaticFileHandler, {"root": tree, "default_filename": "index.html"})
        ]
    )
    async with TestClient(app) as client:
        bare = await client.get("/guide?x=1")
        slashed = await client.get("/guide/")
        page = await client.get("/guide/sub/page.txt")
        hidden = await client.get("/guide/.env")
    assert bare.status_code == 301
    assert bare.get_all("location") == ["/guide/?x=1"]
    assert (slashed.status_code, slashed.content) == (200, INDEX)
    assert (page.status_code, page.content) == (200, SMALL)
    assert hidden.status_code == 404


async def test_leading_slashes_of_the_name_are_dropped(tree: Path) -> None:
    """docs/http.md: "leading slashes are dropped" (``/guide/page.txt`` with group ``/…``)."""
    app = Brubeck(handler_tuples=[(r"^/guide(/.*)?$", StaticFileHandler, {"root": tree})])
    async with TestClient(app) as client:
        r = await client.get("/guide/hello.txt")
    assert (r.status_code, r.content) == (200, SMALL)


# gzip


async def test_a_versioned_text_file_is_gzipped_and_keeps_its_year(tree: Path) -> None:
    url = f"/assets/style.css?v={version_of(TEXT)}"
    async with TestClient(make_app(tree, compress_response=True)) as client:
        zipped = await client.get(url, headers=GZIP)
        plain = await client.get(url)
        fresh = await client.get(url, headers={**GZIP, "If-None-Match": zipped.headers["etag"]})
    assert zipped.status_code == 200
    assert zipped.get_all("content-encoding") == ["gzip"]
    assert gzip.decompress(zipped.content) == TEXT
    assert zipped.get_all("cache-control") == [YEAR]
    assert zipped.headers["etag"].startswith("W/")
    assert (plain.status_code, plain.content) == (200, TEXT)
    assert plain.get_all("cache-control") == [YEAR]
    assert (fresh.status_code, fresh.content) == (304, b"")
    assert fresh.get_all("cache-control") == [YEAR]


async def test_a_stale_version_is_gzipped_with_no_cache(tree: Path) -> None:
    async with TestClient(make_app(tree, compress_response=True)) as client:
        r = await client.get(f"/assets/style.css?v={STALE}", headers=GZIP)
    assert r.get_all("content-encoding") == ["gzip"]
    assert gzip.decompress(r.content) == TEXT
    assert r.get_all("cache-control") == ["no-cache"]


# The static_path setting and its route


async def test_static_path_serves_under_the_default_prefix_before_a_catch_all(
    tree: Path,
) -> None:
    app = make_static_app(tree)
    async with TestClient(app) as client:
        r = await client.get("/static/hello.txt")
        nested = await client.get("/static/sub/page.txt")
        hidden = await client.get("/static/.env")
        out = await client.get("/static/../outside.txt")
        other = await client.get("/elsewhere")
        posted = await client.post("/static/hello.txt", data=b"x")
    assert (r.status_code, r.content) == (200, SMALL)
    assert (nested.status_code, nested.content) == (200, SMALL)
    assert hidden.status_code == 404 and SECRET not in hidden.content
    assert out.status_code == 404 and OUTSIDE not in out.content
    assert (other.status_code, other.text) == (200, "catch-all: elsewhere")
    # The static route answers the path; the catch-all after it takes the POST.
    assert posted.status_code in (200, 405)


def test_the_static_route_is_the_first_and_serves_the_setting() -> None:
    app = make_static_app(Path("somewhere"))
    first = app.router.routes[0]
    assert first.target is StaticFileHandler
    assert first.init_kwargs == {"root": Path("somewhere")}
    assert first.regex.match("/static/a/b.css").groupdict() == {"path": "a/b.css"}
    assert first.regex.match("/static/").groupdict() == {"path": ""}
    assert first.regex.match("/staticx/a.css") is None
    assert first.regex.match("/x/static/a.css") is None
    assert len(app.router.routes) == 3
    assert [r.pattern for r in app.router.routes[1:]] == [r"^/page$", r"^/(.*)$"]


def test_without_static_path_there_is_no_static_route() -> None:
    class Page(WebMessageHandler):
        def get(self, path: str) -> str:
            return path

    app = Brubeck(handler_tuples=[(r"^/(.*)$", Page)])
    assert app.static_files is None
    assert [r.target for r in app.router.routes] == [Page]
    assert isinstance(app.static_versions, StaticVersions)


async def test_a_custom_prefix_is_served_and_the_default_one_is_not(tree: Path) -> None:
    app = make_static_app(tree, static_url_prefix="/a.b/v1/")
    async with TestClient(app) as client:
        r = await client.get("/a.b/v1/hello.txt")
        dotted = await client.get("/aXb/v1/hello.txt")  # the prefix is no regex
        default = await client.get("/static/hello.txt")
    assert (r.status_code, r.content) == (200, SMALL)
    assert dotted.text == "catch-all: aXb/v1/hello.txt"
    assert default.text == "catch-all: static/hello.txt"
    assert app.static_url("hello.txt") == f"/a.b/v1/hello.txt?v={version_of(SMALL)}"


@pytest.mark.parametrize("prefix", ["static/", "/static", "static", "", "/static/x", 7, None])
def test_a_prefix_must_start_and_end_with_a_slash(prefix: Any) -> None:
    with pytest.raises(ValueError, match="static_url_prefix"):
        Brubeck(static_path="static", static_url_prefix=prefix)
    with pytest.raises(ValueError, match="static_url_prefix"):
        StaticFiles("static", prefix)


def test_the_prefix_is_not_checked_without_static_path() -> None:
    Brubeck(static_url_prefix="oops")  # nothing to serve, nothing to check


@pytest.mark.parametrize("prefix", ["/", "/static/", "/a/b/"])
def test_good_prefixes_are_accepted(prefix: str) -> None:
    app = Brubeck(static_path="static", static_url_prefix=prefix)
    assert app.static_files is not None
    assert app.static_files.prefix == prefix


def test_the_app_shares_its_versions_with_its_static_files() -> None:
    app = Brubeck(static_path="static")
    assert app.static_files is not None
    assert app.static_files.versions is app.static_versions
    assert app.static_files.root == "static"
    assert app.static_files.prefix == "/static/"


async def test_static_path_with_gzip_and_a_versioned_url(tree: Path) -> None:
    app = make_static_app(tree, compress_response=True)
    async with TestClient(app) as client:
        page = await client.get("/page")
        url = page.text.split('"')[1]
        r = await client.get(url, headers=GZIP)
    assert url == f"/static/style.css?v={version_of(TEXT)}"
    assert r.get_all("content-encoding") == ["gzip"]
    assert gzip.decompress(r.content) == TEXT
    assert r.get_all("cache-control") == [YEAR]


# Router.add_route(first=True)


class Page(WebMessageHandler):
    def get(self, *args: Any) -> str:
        return "page"


def test_add_route_first_puts_the_route_before_the_others() -> None:
    router = Router()
    a = router.add_route(Route(r"^/(.*)$", Page))
    b = router.add_route(Route(r"^/x$", Page, name="x"), first=True)
    c = router.add_route(Route(r"^/y$", Page))
    assert router.routes == [b, a, c]
    assert router.match("GET", "/x")[0] is b
    assert router.match("GET", "/y")[0] is a  # appended routes still come after
    assert router.reverse("x") == "/x"


def test_add_route_first_clears_the_match_cache() -> None:
    router = Router()
    catch_all = router.add_route(Route(r"^/(.*)$", Page))
    found = router.match("GET", "/x")
    assert found[0] is catch_all
    router.remember("GET", b"/x", found[:3])
    special = router.add_route(Route(r"^/x$", Page), first=True)
    assert router.cache == {}
    assert router.match("GET", "/x")[0] is special


def test_add_route_first_still_refuses_a_duplicate_name() -> None:
    router = Router()
    router.add_route(Route(r"^/a$", StaticFileHandler, name="n"))
    with pytest.raises(ValueError, match="exists already"):
        router.add_route(Route(r"^/b$", StaticFileHandler, name="n"), first=True)
    assert len(router.routes) == 1


# static_url


async def test_static_url_is_prefix_name_and_content_version(tree: Path) -> None:
    app = make_static_app(tree)
    assert app.static_url("hello.txt") == f"/static/hello.txt?v={version_of(SMALL)}"
    assert app.static_url("sub/page.txt") == f"/static/sub/page.txt?v={version_of(SMALL)}"
    assert app.static_url("style.css", include_version=False) == "/static/style.css"
    async with TestClient(app) as client:
        page = await client.get("/page")
    assert page.text == f'<link href="/static/style.css?v={version_of(TEXT)}">'


async def test_static_url_percent_encodes_the_name_and_the_url_serves_it(tree: Path) -> None:
    app = make_static_app(tree)
    odd = app.static_url("a b#c?&d.txt")
    accented = app.static_url("café.txt")
    assert odd == f"/static/a%20b%23c%3F%26d.txt?v={version_of(SMALL)}"
    assert accented == f"/static/caf%C3%A9.txt?v={version_of(SMALL)}"
    async with TestClient(app) as client:
        for url in (odd, accented):
            r = await client.get(url)
            assert (r.status_code, r.content) == (200, SMALL), url
            assert r.headers["cache-control"] == YEAR, url


async def test_every_url_static_url_gives_is_cached_for_a_year(tree: Path) -> None:
    app = make_static_app(tree)
    names = ["hello.txt", "style.css", "big.bin", "sub/page.txt", "link-in.txt"]
    async with TestClient(app) as client:
        for name in names:
            r = await client.get(app.static_url(name))
            assert r.status_code == 200, name
            assert r.content == (tree / name).read_bytes(), name
            assert r.headers["cache-control"] == YEAR, name


@pytest.mark.parametrize(
    "name",
    [
        "../outside.txt",
        "sub/../../outside.txt",
        "/etc/passwd",
        "link-out.txt",
        "dir-link-out/index.html",
        "loop",
        "a\0b",
    ],
)
def test_static_url_of_a_name_that_leads_out_is_a_value_error(tree: Path, name: str) -> None:
    app = make_static_app(tree)
    with pytest.raises(ValueError, match="leads out"):
        app.static_url(name)
    with pytest.raises(ValueError, match="leads out"):
        app.static_url(name, include_version=False)


@pytest.mark.parametrize("name", ["missing.css", "sub", "empty/"])
def test_static_url_of_a_missing_file_has_no_version_and_warns(
    tree: Path, name: str, caplog: Any
) -> None:
    app = make_static_app(tree)
    with caplog.at_level(logging.WARNING, logger="brubeck.static"):
        url = app.static_url(name)
    assert url == "/static/" + name
    warnings = [r for r in caplog.records if r.name == "brubeck.static"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert repr(name) in warnings[0].getMessage()


def test_static_url_without_a_version_neither_hashes_nor_warns(
    tree: Path, monkeypatch: Any, caplog: Any
) -> None:
    hashes = count_hashes(monkeypatch)
    app = make_static_app(tree)
    with caplog.at_level(logging.WARNING, logger="brubeck.static"):
        assert app.static_url("hello.txt", include_version=False) == "/static/hello.txt"
        assert app.static_url("missing.css", include_version=False) == "/static/missing.css"
    assert hashes == []
    assert [r for r in caplog.records if r.name == "brubeck.static"] == []


def test_static_url_of_a_named_pipe_returns_at_once_without_a_version(tree: Path) -> None:
    fifo = tree / "pipe"
    os.mkfifo(fifo)
    app = make_static_app(tree)
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(app.static_url("pipe")), daemon=True)
    worker.start()
    worker.join(3)
    if worker.is_alive():  # blocked opening the pipe: give it a writer so the thread can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(3)
        pytest.fail("static_url blocked on a named pipe")
    assert result == ["/static/pipe"]


def test_static_url_needs_static_path(tree: Path) -> None:
    app = Brubeck()
    with pytest.raises(RuntimeError, match="static_path"):
        app.static_url("hello.txt")


async def test_handler_static_url_is_the_apps(tree: Path) -> None:
    class Links(WebMessageHandler):
        def get(self) -> str:
            return " ".join(
                [
                    self.static_url("hello.txt"),
                    self.static_url("style.css", include_version=False),
                    self.static_url("style.css", False),
                ]
            )

    class Broken(WebMessageHandler):
        def get(self) -> str:
            return self.static_url("hello.txt")

    app = Brubeck(handler_tuples=[(r"^/$", Links)], static_path=tree)
    bare = Brubeck(handler_tuples=[(r"^/$", Broken)])
    async with TestClient(app) as client:
        r = await client.get("/")
    assert r.text == f"/static/hello.txt?v={version_of(SMALL)} /static/style.css /static/style.css"
    async with TestClient(bare) as client:
        broken = await client.get("/")
    assert broken.status_code == 500  # RuntimeError: no static_path


def test_static_url_follows_a_changed_file(tree: Path) -> None:
    app = make_static_app(tree)
    path = tree / "hello.txt"
    first = app.static_url("hello.txt")
    path.write_bytes(b"longer content than before\n")
    second = app.static_url("hello.txt")
    assert first == f"/static/hello.txt?v={version_of(SMALL)}"
    assert second == f"/static/hello.txt?v={version_of(path.read_bytes())}"


def test_static_url_goes_back_to_a_versioned_url_once_the_file_exists(tree: Path) -> None:
    app = make_static_app(tree)
    assert app.static_url("later.css") == "/static/later.css"
    (tree / "later.css").write_bytes(TEXT)
    assert app.static_url("later.css") == f"/static/later.css?v={version_of(TEXT)}"


# StaticVersions


def test_version_is_the_first_16_hex_digits_of_the_sha256(tree: Path) -> None:
    versions = StaticVersions()
    assert versions.version(tree / "hello.txt") == version_of(SMALL)
    assert versions.version(tree / "big.bin") == version_of(BIG)
    (tree / "zero").write_bytes(b"")
    assert versions.version(tree / "zero") == version_of(b"")


def test_version_of_what_is_not_a_regular_file_is_none(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    versions = StaticVersions()
    assert versions.version(tree / "missing") is None
    assert versions.version(tree / "sub") is None
    assert versions.version(tree / "pipe") is None
    assert versions.known(tree / "missing") is None
    assert versions.known(tree / "pipe") is None


def test_version_is_none_when_the_read_fails(tree: Path, monkeypatch: Any) -> None:
    class Failing:
        def __enter__(self) -> Failing:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def read(self, size: int) -> bytes:
            raise OSError("I/O error")

    status = os.stat(tree / "hello.txt")
    monkeypatch.setattr(static_module, "open_file", lambda path, root: (Failing(), status))
    versions = StaticVersions()
    assert versions.version(tree / "hello.txt") is None
    assert versions.known(tree / "hello.txt") is None  # a failure is not remembered


def test_a_file_is_hashed_once_per_content_version(tree: Path, monkeypatch: Any) -> None:
    hashes = count_hashes(monkeypatch)
    versions = StaticVersions()
    path = tree / "hello.txt"
    assert versions.known(path) is None
    assert hashes == []  # known() never hashes
    first = versions.version(path)
    assert versions.version(path) == first
    assert versions.version(path) == first
    assert versions.known(path) == first
    assert len(hashes) == 1
    path.write_bytes(b"changed, and longer\n")
    assert versions.known(path) is None
    second = versions.version(path)
    assert second == version_of(b"changed, and longer\n") != first
    assert versions.version(path) == second
    assert versions.known(path) == second
    assert len(hashes) == 2


def test_known_is_none_once_the_file_is_gone(tree: Path) -> None:
    versions = StaticVersions()
    path = tree / "hello.txt"
    versions.version(path)
    path.unlink()
    assert versions.known(path) is None
    assert versions.version(path) is None


def test_a_new_size_is_a_new_version_even_at_the_same_mtime(tree: Path) -> None:
    path = tree / "hello.txt"
    mtime = os.stat(path).st_mtime_ns
    versions = StaticVersions()
    versions.version(path)
    path.write_bytes(b"hello static, longer\n")
    touch(path, mtime)
    assert versions.known(path) is None
    assert versions.version(path) == version_of(b"hello static, longer\n")


def test_a_new_mtime_is_a_new_version_even_at_the_same_size(tree: Path) -> None:
    path = tree / "hello.txt"
    mtime = os.stat(path).st_mtime_ns
    versions = StaticVersions()
    versions.version(path)
    same_size = b"HELLO STATIC\n"
    assert len(same_size) == len(SMALL)
    path.write_bytes(same_size)
    touch(path, mtime)  # same size, same mtime, same inode: the change time tells them apart
    assert versions.known(path) is None
    assert versions.version(path) == version_of(same_size)
    touch(path, mtime + 1)  # one nanosecond later
    assert versions.known(path) is None
    assert versions.version(path) == version_of(same_size)


def test_a_new_inode_is_a_new_version_even_at_the_same_size_and_mtime(tree: Path) -> None:
    path = tree / "hello.txt"
    before = os.stat(path)
    versions = StaticVersions()
    versions.version(path)
    same_size = b"HELLO STATIC\n"
    replacement = tree / "replacement.tmp"
    replacement.write_bytes(same_size)
    touch(replacement, before.st_mtime_ns)
    os.replace(replacement, path)  # a deploy that renames files into place
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino
    assert versions.known(path) is None
    assert versions.version(path) == version_of(same_size)


def test_versions_are_remembered_per_file(tree: Path, monkeypatch: Any) -> None:
    hashes = count_hashes(monkeypatch)
    versions = StaticVersions()
    assert versions.version(tree / "hello.txt") == version_of(SMALL)
    assert versions.version(tree / "sub" / "page.txt") == version_of(SMALL)
    assert versions.version(tree / "style.css") == version_of(TEXT)
    assert versions.known(tree / "big.bin") is None
    assert len(hashes) == 3
    for name in ("hello.txt", "sub/page.txt", "style.css"):
        versions.version(tree / name)
    assert len(hashes) == 3


async def test_the_handler_reuses_the_version_static_url_computed(
    tree: Path, monkeypatch: Any
) -> None:
    """A remembered, unchanged version is read on the spot: no hash, and no thread either."""
    hashes = count_hashes(monkeypatch)
    app = make_static_app(tree)
    url = app.static_url("style.css")
    assert len(hashes) == 1
    lookups: list[Path] = []
    real_version = app.static_versions.version

    def version(path: Path) -> str | None:
        lookups.append(path)
        return real_version(path)

    monkeypatch.setattr(app.static_versions, "version", version)
    async with TestClient(app) as client:
        for _ in range(3):
            r = await client.get(url)
            assert r.headers["cache-control"] == YEAR
        stale = await client.get(f"/static/style.css?v={STALE}")
    assert stale.headers["cache-control"] == "no-cache"
    assert len(hashes) == 1
    assert lookups == []  # known() answered every time


async def test_the_handler_hashes_off_the_event_loop_and_once(tree: Path, monkeypatch: Any) -> None:
    hashes = count_hashes(monkeypatch)
    loop_thread = threading.current_thread().name
    async with TestClient(make_app(tree)) as client:
        for _ in range(3):
            r = await client.get(f"/assets/big.bin?v={version_of(BIG)}")
            assert r.headers["cache-control"] == YEAR
        plain = await client.get("/assets/big.bin")
    assert plain.status_code == 200
    assert len(hashes) == 1  # no v: no hash
    assert hashes[0] != loop_thread


async def test_the_handler_sees_a_changed_file_and_hashes_it_again(
    tree: Path, monkeypatch: Any
) -> None:
    hashes = count_hashes(monkeypatch)
    path = tree / "hello.txt"
    async with TestClient(make_app(tree)) as client:
        await client.get(f"/assets/hello.txt?v={version_of(SMALL)}")
        touch(path, os.stat(path).st_mtime_ns + 1_000_000)
        same = await client.get(f"/assets/hello.txt?v={version_of(SMALL)}")
    assert same.headers["cache-control"] == YEAR  # touched, not changed: the same content
    assert len(hashes) == 2


# StaticFiles


def test_static_files_pattern_escapes_the_prefix() -> None:
    files = StaticFiles("static", "/a.b+c/")
    regex = re.compile(files.pattern)
    assert regex.match("/a.b+c/x.css").group("path") == "x.css"
    assert regex.match("/aXbbc/x.css") is None
    assert regex.match("/a.b+c") is None


def test_static_files_from_settings() -> None:
    assert StaticFiles.from_settings({}) is None
    assert StaticFiles.from_settings({"static_url_prefix": "/s/"}) is None
    files = StaticFiles.from_settings({"static_path": "here"})
    assert files is not None
    assert (files.root, files.prefix) == ("here", "/static/")
    shared = StaticVersions()
    files = StaticFiles.from_settings({"static_path": "here", "static_url_prefix": "/s/"}, shared)
    assert files is not None
    assert (files.prefix, files.versions) == ("/s/", shared)
    assert files.versions is shared
    assert isinstance(StaticFiles("here").versions, StaticVersions)


def test_static_files_url_directly(tree: Path) -> None:
    files = StaticFiles(tree, "/assets/")
    assert files.url("hello.txt") == f"/assets/hello.txt?v={version_of(SMALL)}"
    assert files.url("hello.txt", include_version=False) == "/assets/hello.txt"
    assert files.versions.known(tree / "hello.txt") == version_of(SMALL)
    with pytest.raises(ValueError, match="leads out"):
        files.url("../outside.txt")
