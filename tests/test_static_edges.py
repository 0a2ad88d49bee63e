"""Edge cases of brubeck/static.py: a file replaced while its version is checked, and the
URLs ``static_url`` builds (no Mongrel2: ``TestClient``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from brubeck import Brubeck, StaticFileHandler
from brubeck import handlers as handlers_module
from brubeck.files import INLINE_LIMIT
from brubeck.static import IMMUTABLE
from brubeck.testing import TestClient

OLD = b"old content\n"
NEW = b"NEW CONTENT, and longer than the old one\n"
OLD_BIG = b"o" * (2 * INLINE_LIMIT + 5)  # streamed
NEW_BIG = b"n" * (2 * INLINE_LIMIT + 7)


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "app.css").write_bytes(OLD)
    (root / "big.bin").write_bytes(OLD_BIG)
    (root / "sub" / "index.html").write_bytes(OLD)
    (root / "sub" / "page.txt").write_bytes(NEW)
    return root


def make_app(root: Path) -> Brubeck:
    return Brubeck(
        handler_tuples=[
            (r"^/site/(.*)$", StaticFileHandler, {"root": root, "default_filename": "index.html"})
        ],
        static_path=root,
    )


def replace_on_open(monkeypatch: Any, path: Path, data: bytes) -> list[str]:
    """Rename a new file over ``path`` (as a deploy does) just before ``send_file`` opens."""
    opened: list[str] = []
    real_open = handlers_module.open_file

    def open_file(name: Any, root: Any) -> Any:
        if not opened:
            replacement = path.with_name(path.name + ".new")
            replacement.write_bytes(data)
            os.replace(replacement, path)
        opened.append(os.fspath(name))
        return real_open(name, root)

    monkeypatch.setattr(handlers_module, "open_file", open_file)
    return opened


@pytest.mark.parametrize("remembered", [False, True])
@pytest.mark.parametrize(
    ("url", "name", "old", "new"),
    [
        ("/static/app.css", "app.css", OLD, NEW),
        ("/static/big.bin", "big.bin", OLD_BIG, NEW_BIG),
        ("/site/sub/", "sub/index.html", OLD, NEW),
    ],
)
async def test_a_file_replaced_after_its_version_check_never_gets_the_year(
    root: Path, monkeypatch: Any, remembered: bool, url: str, name: str, old: bytes, new: bytes
) -> None:
    """Was a bug. The version was checked on one open of the file and the file sent from
    another: a file renamed into place in between went out with the year-long Cache-Control
    under the old version. What goes out with ``immutable`` must be the content checked."""
    app = make_app(root)
    if remembered:  # the version static_url computed while a page rendered
        assert app.static_url(name).endswith(f"?v={version_of(old)}")
    replace_on_open(monkeypatch, root / name, new)
    async with TestClient(app) as client:
        r = await client.get(f"{url}?v={version_of(old)}")
    assert r.status_code == 200
    if r.headers.get("cache-control") == IMMUTABLE:
        assert r.content == old
    else:
        assert r.content == new
        assert r.headers["cache-control"] == "no-cache"


async def test_head_304_and_range_with_a_version_keep_the_year(root: Path) -> None:
    app = make_app(root)
    url = app.static_url("app.css")
    async with TestClient(app) as client:
        whole = await client.get(url)
        head = await client.head(url)
        fresh = await client.get(url, headers={"If-None-Match": whole.headers["etag"]})
        part = await client.get(url, headers={"Range": "bytes=0-2"})
        stale = await client.get("/static/app.css?v=0123456789abcdef")
    assert (whole.status_code, whole.content) == (200, OLD)
    assert whole.headers["content-type"].startswith("text/css")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(OLD))
    assert fresh.status_code == 304
    assert (part.status_code, part.content) == (206, OLD[:3])
    for r in (whole, head, fresh, part):
        assert r.headers["cache-control"] == IMMUTABLE
        assert r.headers["etag"] == whole.headers["etag"]
    assert (stale.status_code, stale.content) == (200, OLD)
    assert stale.headers["cache-control"] == "no-cache"


async def test_a_version_on_a_missing_file_or_a_directory_is_a_404(root: Path) -> None:
    async with TestClient(make_app(root)) as client:
        missing = await client.get(f"/static/missing.css?v={version_of(OLD)}")
        directory = await client.get(f"/static/sub/?v={version_of(OLD)}")
    assert missing.status_code == directory.status_code == 404
    assert IMMUTABLE not in (
        missing.headers.get("cache-control"),
        directory.headers.get("cache-control"),
    )


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("sub/../app.css", "/static/app.css"),
        ("./app.css", "/static/app.css"),
        ("sub//page.txt", "/static/sub/page.txt"),
        ("../root/app.css", None),  # inside the root only through its own name: the URL is not
    ],
)
async def test_static_url_of_a_name_with_dot_parts_is_the_url_a_browser_requests(
    root: Path, name: str, url: str | None
) -> None:
    """Was a bug. ``static_url`` kept ``..`` and ``.`` parts in the URL, which a browser
    removes before it asks (RFC 3986 §5.2.4): ``../root/app.css`` became
    ``/static/../root/app.css``, that is ``/root/app.css``, out of the prefix. The URL must be
    the normalized name, and a name whose ``..`` climbs above the prefix a ValueError."""
    app = make_app(root)
    if url is None:
        with pytest.raises(ValueError, match="leads out"):
            app.static_url(name)
        return
    content = (root / url.removeprefix("/static/")).read_bytes()
    assert app.static_url(name) == f"{url}?v={version_of(content)}"
    assert app.static_url(name, include_version=False) == url
    async with TestClient(app) as client:
        r = await client.get(app.static_url(name))
    assert (r.status_code, r.content) == (200, content)
    assert r.headers["cache-control"] == IMMUTABLE
