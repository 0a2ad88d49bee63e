"""files.py and ``send_file``: validators, 304/412, one byte range (206/416), names kept inside
a root, and large files streamed with their Content-Length (no Mongrel2: ``TestClient``)."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import tnetstring

from brubeck import Brubeck, HTTPError, WebMessageHandler
from brubeck import files as files_module
from brubeck import handlers as handlers_module
from brubeck.conditional import http_date
from brubeck.files import (
    INLINE_LIMIT,
    FilePlan,
    byte_range,
    content_disposition,
    file_etag,
    guess_type,
    open_file,
    plan_file,
)
from brubeck.testing import TestClient, TestResponse
from tests import fixtures

SMALL = b"hello file\n"
BIG = os.urandom(1_500_000)  # above INLINE_LIMIT: streamed in pieces
TEXT = ("All work and no play makes Jack a dull boy.\n" * 120).encode()  # gzip-worthy
OUTSIDE = b"secret outside the root\n"
GZIP = {"Accept-Encoding": "gzip"}

#: A fixed modification time with nanoseconds, for exact validators in the pure tests.
MTIME_NS = 1_700_000_000_123_456_789
MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"
EARLIER = "Tue, 14 Nov 2023 22:13:19 GMT"
LATER = "Wed, 15 Nov 2023 22:13:20 GMT"


def test_the_big_file_is_above_the_inline_limit() -> None:
    assert len(BIG) > 4 * INLINE_LIMIT
    assert len(SMALL) < INLINE_LIMIT and len(TEXT) < INLINE_LIMIT


# byte_range


@pytest.mark.parametrize(
    ("field", "size", "expected"),
    [
        pytest.param("bytes=0-0", 10, (0, 1), id="first-byte"),
        pytest.param("bytes=2-4", 10, (2, 5), id="middle"),
        pytest.param("bytes=5-", 10, (5, 10), id="open-ended"),
        pytest.param("bytes=-3", 10, (7, 10), id="suffix"),
        pytest.param("bytes=-30", 10, (0, 10), id="suffix-longer-than-file"),
        pytest.param("bytes=3-100", 10, (3, 10), id="last-past-end-clamped"),
        pytest.param("bytes=9-9", 10, (9, 10), id="last-byte"),
        pytest.param("bytes=0-", 1, (0, 1), id="whole-one-byte-file"),
        pytest.param("BYTES = 2 - 4", 10, (2, 5), id="upper-case-and-spaces"),
        pytest.param("  Bytes=2-4  ", 10, (2, 5), id="mixed-case-padded"),
        pytest.param("bytes=02-004", 10, (2, 5), id="leading-zeros"),
        pytest.param("bytes=5-2", 10, None, id="last-before-first"),
        pytest.param("items=0-1", 10, None, id="other-unit"),
        pytest.param("garbage", 10, None, id="garbage"),
        pytest.param("bytes=a-b", 10, None, id="not-numbers"),
        pytest.param("bytes=1-2-3", 10, None, id="two-dashes"),
        pytest.param("bytes=", 10, None, id="empty-spec"),
        pytest.param("bytes=-", 10, None, id="dash-only"),
        pytest.param("bytes=0-1,3-4", 10, None, id="several-ranges"),
        pytest.param("bytes=0-1,", 10, None, id="trailing-comma"),
        pytest.param("bytes=0-", 0, None, id="empty-file"),
        pytest.param("bytes=-3", 0, None, id="suffix-of-empty-file"),
        pytest.param(None, 10, None, id="no-field"),
    ],
)
def test_byte_range(field: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(field, size) == expected


@pytest.mark.parametrize(
    ("field", "size"),
    [
        pytest.param("bytes=10-", 10, id="start-at-size"),
        pytest.param("bytes=10-20", 10, id="start-at-size-with-last"),
        pytest.param("bytes=11-", 10, id="start-past-size"),
        pytest.param("bytes=1000000-2000000", 10, id="far-past"),
        pytest.param("bytes=1-", 1, id="one-byte-file"),
        pytest.param("bytes=-0", 10, id="empty-suffix"),
    ],
)
def test_byte_range_unsatisfiable_is_a_416_naming_the_size(field: str, size: int) -> None:
    with pytest.raises(HTTPError) as caught:
        byte_range(field, size)
    assert caught.value.status == 416
    assert caught.value.headers == {"Content-Range": f"bytes */{size}"}


# file_etag, plan_file


@pytest.fixture
def stamped(tmp_path: Path) -> os.stat_result:
    """A 10-byte file with a known modification time (nanoseconds included)."""
    path = tmp_path / "stamped.txt"
    path.write_bytes(b"0123456789")
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return os.stat(path)


def tag_of(status: os.stat_result) -> str:
    return f'"{status.st_size:x}-{status.st_mtime_ns:x}"'


def test_file_etag_is_strong_and_made_of_size_and_nanoseconds(
    stamped: os.stat_result, tmp_path: Path
) -> None:
    assert file_etag(stamped) == f'"a-{MTIME_NS:x}"'
    assert http_date(stamped.st_mtime) == MODIFIED
    path = tmp_path / "stamped.txt"
    os.utime(path, ns=(MTIME_NS + 1, MTIME_NS + 1))  # one nanosecond later: another tag
    assert file_etag(os.stat(path)) == f'"a-{MTIME_NS + 1:x}"'
    path.write_bytes(b"01234567890")
    os.utime(path, ns=(MTIME_NS, MTIME_NS))  # same time, other size: another tag
    assert file_etag(os.stat(path)) == f'"b-{MTIME_NS:x}"'


def plan(status: os.stat_result, method: str = "GET", **headers: str) -> FilePlan:
    raw = {name.replace("_", "-").encode(): value.encode() for name, value in headers.items()}
    return plan_file(raw, method, status, "text/plain")


def test_plan_without_conditions_is_the_whole_file(stamped: os.stat_result) -> None:
    result = plan(stamped)
    assert (result.status, result.start, result.stop, result.length) == (200, 0, 10, 10)
    assert result.headers == [
        ("ETag", tag_of(stamped)),
        ("Last-Modified", MODIFIED),
        ("Accept-Ranges", "bytes"),
        ("Content-Type", "text/plain"),
    ]


def test_plan_one_range_is_a_206_with_content_range(stamped: os.stat_result) -> None:
    result = plan(stamped, range="bytes=2-4")
    assert (result.status, result.start, result.stop, result.length) == (206, 2, 5, 3)
    assert result.headers[-1] == ("Content-Range", "bytes 2-4/10")
    assert ("ETag", tag_of(stamped)) in result.headers


def test_plan_if_match_mismatch_is_a_412_even_with_a_range(stamped: os.stat_result) -> None:
    with pytest.raises(HTTPError) as caught:
        plan(stamped, if_match='"other"', range="bytes=0-1")
    assert caught.value.status == 412


def test_plan_if_match_is_checked_before_if_none_match(stamped: os.stat_result) -> None:
    with pytest.raises(HTTPError) as caught:
        plan(stamped, if_match='"other"', if_none_match=tag_of(stamped))
    assert caught.value.status == 412


def test_plan_if_match_with_the_current_tag_goes_ahead(stamped: os.stat_result) -> None:
    assert plan(stamped, if_match=tag_of(stamped), range="bytes=0-1").status == 206
    assert plan(stamped, if_match="*").status == 200
    with pytest.raises(HTTPError):  # If-Match compares strongly: a weak tag never matches
        plan(stamped, if_match=f"W/{tag_of(stamped)}")


def test_plan_if_unmodified_since(stamped: os.stat_result) -> None:
    with pytest.raises(HTTPError) as caught:
        plan(stamped, if_unmodified_since=EARLIER, range="bytes=0-1")
    assert caught.value.status == 412
    assert plan(stamped, if_unmodified_since=MODIFIED).status == 200  # sub-seconds ignored
    assert plan(stamped, if_unmodified_since=LATER).status == 200
    assert plan(stamped, if_unmodified_since="not a date").status == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_plan_if_none_match_is_a_304_with_validators_and_no_type(
    stamped: os.stat_result, method: str
) -> None:
    result = plan(stamped, method, if_none_match=tag_of(stamped), range="bytes=0-1")
    assert (result.status, result.start, result.stop) == (304, 0, 0)
    assert result.headers == [
        ("ETag", tag_of(stamped)),
        ("Last-Modified", MODIFIED),
        ("Accept-Ranges", "bytes"),
    ]


def test_plan_if_none_match_weak_comparison_and_lists(stamped: os.stat_result) -> None:
    assert plan(stamped, if_none_match=f"W/{tag_of(stamped)}").status == 304
    assert plan(stamped, if_none_match=f'"x", {tag_of(stamped)}').status == 304
    assert plan(stamped, if_none_match="*").status == 304
    assert plan(stamped, if_none_match='"x"').status == 200


def test_plan_if_modified_since(stamped: os.stat_result) -> None:
    assert plan(stamped, if_modified_since=MODIFIED).status == 304
    assert plan(stamped, "HEAD", if_modified_since=LATER).status == 304
    assert plan(stamped, if_modified_since=EARLIER).status == 200
    assert plan(stamped, if_modified_since="yesterday").status == 200
    # If-None-Match wins: a tag that does not match means the body, whatever the date says.
    assert plan(stamped, if_none_match='"x"', if_modified_since=MODIFIED).status == 200


def test_plan_post_is_never_a_304(stamped: os.stat_result) -> None:
    # A matching If-None-Match on another method is a 412 (RFC 9110 §13.2.2, step 3) ...
    with pytest.raises(HTTPError) as caught:
        plan(stamped, "POST", if_none_match=tag_of(stamped))
    assert caught.value.status == 412
    # ... and If-Modified-Since does not count for it at all.
    assert plan(stamped, "POST", if_modified_since=MODIFIED).status == 200
    assert plan(stamped, "POST", if_none_match='"another"').status == 200


@pytest.mark.parametrize("method", ["HEAD", "POST"])
def test_plan_range_counts_only_for_get(stamped: os.stat_result, method: str) -> None:
    result = plan(stamped, method, range="bytes=2-4")
    assert (result.status, result.start, result.stop) == (200, 0, 10)
    assert all(name != "Content-Range" for name, _ in result.headers)
    # Nor does a range past the end: no 416 for a method without ranges.
    assert plan(stamped, method, range="bytes=50-").status == 200


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        pytest.param("current-tag", 206, id="current-strong-tag"),
        pytest.param('"another"', 200, id="other-tag"),
        pytest.param("weak-current-tag", 200, id="weak-tag"),
        pytest.param(MODIFIED, 206, id="exact-date"),
        pytest.param(EARLIER, 200, id="other-date"),
        pytest.param(LATER, 200, id="later-date"),
        pytest.param("garbage", 200, id="garbage"),
    ],
)
def test_plan_if_range(stamped: os.stat_result, if_range: str, status: int) -> None:
    tag = tag_of(stamped)
    condition = {"current-tag": tag, "weak-current-tag": f"W/{tag}"}.get(if_range, if_range)
    result = plan(stamped, range="bytes=2-4", if_range=condition)
    assert result.status == status
    assert (result.start, result.stop) == ((2, 5) if status == 206 else (0, 10))


def test_plan_if_range_that_fails_skips_the_416(stamped: os.stat_result) -> None:
    """The client's copy is stale: it gets the new file, not an error about its old size."""
    assert plan(stamped, range="bytes=50-", if_range='"old"').status == 200
    with pytest.raises(HTTPError) as caught:
        plan(stamped, range="bytes=50-", if_range=tag_of(stamped))
    assert caught.value.status == 416


def test_plan_download_name_adds_content_disposition(stamped: os.stat_result) -> None:
    result = plan_file({}, "GET", stamped, "text/csv", "report 2026.csv")
    assert ("Content-Disposition", 'attachment; filename="report 2026.csv"') in result.headers
    fresh = plan_file({b"if-none-match": tag_of(stamped).encode()}, "GET", stamped, "x/y", "r")
    assert fresh.status == 304
    assert ("Content-Disposition", 'attachment; filename="r"') in fresh.headers


# content_disposition, guess_type


@pytest.mark.parametrize(
    ("name", "header"),
    [
        pytest.param("report.csv", 'attachment; filename="report.csv"', id="ascii"),
        pytest.param(
            'a "quoted" \\ name.txt',
            "attachment; filename=\"a _quoted_ _ name.txt\"; filename*=UTF-8''"
            "a%20%22quoted%22%20%5C%20name.txt",
            id="quotes-and-backslash",
        ),
        pytest.param(
            "résumé 2026.pdf",
            "attachment; filename=\"r_sum_ 2026.pdf\"; filename*=UTF-8''"
            "r%C3%A9sum%C3%A9%202026.pdf",
            id="non-ascii",
        ),
        pytest.param(
            "a\r\nb.txt",
            "attachment; filename=\"a__b.txt\"; filename*=UTF-8''a%0D%0Ab.txt",
            id="line-breaks",
        ),
    ],
)
def test_content_disposition(name: str, header: str) -> None:
    assert content_disposition(name) == header
    header.encode("ascii")  # always sendable


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("notes.txt", "text/plain; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("picture.png", "image/png"),
        ("page.html", "text/html; charset=utf-8"),
        ("thing.unknownext", "application/octet-stream"),
        ("archive.tar.gz", "application/octet-stream"),
        ("no-extension", "application/octet-stream"),
        (Path("dir/notes.txt"), "text/plain; charset=utf-8"),
    ],
)
def test_guess_type(name: str | Path, kind: str) -> None:
    assert guess_type(name) == kind


# open_file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with a file, a subdirectory, and symlinks in and out; a file beside it."""
    (tmp_path / "outside.txt").write_bytes(OUTSIDE)
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "a.txt").write_bytes(b"file a\n")
    (base / "sub" / "b.txt").write_bytes(b"file b\n")
    (base / "link-out").symlink_to(tmp_path / "outside.txt")
    (base / "link-in").symlink_to(base / "sub" / "b.txt")
    (base / "link-dir").symlink_to(base / "sub")
    return base


def read_opened(name: Any, base: Any) -> tuple[bytes, int]:
    handle, status = open_file(name, base)
    with handle:
        return handle.read(), status.st_size


def assert_404(name: Any, base: Any) -> None:
    with pytest.raises(HTTPError) as caught:
        open_file(name, base)
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("a.txt", b"file a\n", id="plain"),
        pytest.param("sub/b.txt", b"file b\n", id="nested"),
        pytest.param("sub/../a.txt", b"file a\n", id="dot-dot-that-stays-inside"),
        pytest.param("./a.txt", b"file a\n", id="dot"),
        pytest.param("link-in", b"file b\n", id="symlink-inside"),
        pytest.param(Path("a.txt"), b"file a\n", id="path-object"),
    ],
)
def test_open_file_inside_the_root(root: Path, name: Any, content: bytes) -> None:
    assert read_opened(name, root) == (content, len(content))
    assert read_opened(name, str(root)) == (content, len(content))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../outside.txt", id="dot-dot"),
        pytest.param("sub/../../outside.txt", id="dot-dot-nested"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("link-out", id="symlink-out"),
        pytest.param("sub", id="directory"),
        pytest.param("link-dir", id="symlink-to-directory"),
        pytest.param("", id="the-root-itself"),
        pytest.param(".", id="dot-root"),
        pytest.param("missing.txt", id="missing"),
        pytest.param("a.txt/x", id="under-a-file"),
        pytest.param("a\0.txt", id="nul"),
    ],
)
def test_open_file_refuses_with_a_404(root: Path, name: str) -> None:
    assert_404(name, root)


@pytest.mark.parametrize("name", ["loop", "loop/a.txt", "ping"])
def test_open_file_a_symlink_loop_is_a_404_not_a_500(root: Path, name: str) -> None:
    """Resolving a loop raises RuntimeError before Python 3.13 and OSError after."""
    (root / "loop").symlink_to("loop")
    (root / "ping").symlink_to("pong")
    (root / "pong").symlink_to("ping")
    assert_404(name, root)
    assert read_opened("a.txt", root) == (b"file a\n", 7)


def test_open_file_refuses_an_absolute_name_even_inside_the_root(root: Path) -> None:
    assert_404(str(root / "a.txt"), root)


def test_open_file_with_a_root_that_is_a_symlink(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    assert read_opened("a.txt", alias) == (b"file a\n", 7)
    assert_404("../outside.txt", alias)


def test_open_file_without_a_root_takes_the_name_as_it_is(root: Path, tmp_path: Path) -> None:
    assert read_opened(tmp_path / "outside.txt", None) == (OUTSIDE, len(OUTSIDE))
    assert_404(root / "sub", None)
    assert_404(root / "missing", None)
    assert_404("/dev/null", None)  # not a regular file


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_open_file_unreadable_is_a_404(root: Path) -> None:
    (root / "a.txt").chmod(0)
    try:
        assert_404("a.txt", root)
    finally:
        (root / "a.txt").chmod(0o644)


def test_open_file_permission_denied_is_a_404(root: Path, monkeypatch: Any) -> None:
    """The same as the chmod test, for a run as root: the open itself refuses."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files_module, "open", refuse, raising=False)
    assert_404("a.txt", root)


def test_open_file_a_fifo_inside_the_root_is_a_404_at_once(root: Path) -> None:
    os.mkfifo(root / "pipe")
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            handle, _ = open_file("pipe", root)
            handle.close()
            outcome["status"] = "opened"
        except HTTPError as exc:
            outcome["status"] = exc.status

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(1.0)
    blocked = thread.is_alive()
    if blocked:  # a writer lets the blocked open() return, so that no thread is left behind
        writer = os.open(root / "pipe", os.O_WRONLY | os.O_NONBLOCK)
        thread.join(5)
        os.close(writer)
    assert not blocked, "open_file blocked on a FIFO"
    assert outcome == {"status": 404}


# send_file through the app


class FileHandler(WebMessageHandler):
    async def get(self, name: str) -> Any:
        return await self.send_file(name, root=self.application.state.root)

    post = get


class DownloadHandler(WebMessageHandler):
    async def get(self, name: str) -> Any:
        return await self.send_file(name, root=self.application.state.root, download_name=name)


class TypedHandler(WebMessageHandler):
    async def get(self, name: str) -> Any:
        root = self.application.state.root
        return await self.send_file(name, "application/x-custom", root=root)


class DressedHandler(WebMessageHandler):
    """Sets headers and a cookie first; its own validators and type must give way."""

    async def get(self, name: str) -> Any:
        self.set_header("Cache-Control", "private, no-cache")
        self.set_cookie("seen", "yes")
        self.set_header("ETag", '"mine"')
        self.set_header("Last-Modified", "Thu, 01 Jan 2004 00:00:00 GMT")
        self.set_header("Content-Type", "text/x-mine")
        self.set_header("Accept-Ranges", "none")
        return await self.send_file(name, root=self.application.state.root)


class InlineHandler(WebMessageHandler):
    """Names the way a browser shows a file with its own name (not an attachment)."""

    async def get(self, name: str) -> Any:
        self.set_header("Content-Disposition", 'inline; filename="shown.txt"')
        return await self.send_file(name, root=self.application.state.root)


class FlushedHandler(WebMessageHandler):
    """A stream already started: send_file cannot be the whole response any more."""

    async def get(self) -> Any:
        self.write("partial")
        await self.flush()
        return await self.send_file("small.txt", root=self.application.state.root)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    base = tmp_path / "shared"
    base.mkdir()
    (base / "small.txt").write_bytes(SMALL)
    (base / "big.bin").write_bytes(BIG)
    (base / "text.txt").write_bytes(TEXT)
    (base / "sub").mkdir()
    (tmp_path / "outside.txt").write_bytes(OUTSIDE)
    return base


def make_app(tree: Path, **settings: Any) -> Brubeck:
    app = Brubeck(
        handler_tuples=[
            (r"^/files/(?P<name>.+)$", FileHandler),
            (r"^/download/(?P<name>.+)$", DownloadHandler),
            (r"^/typed/(?P<name>.+)$", TypedHandler),
            (r"^/dressed/(?P<name>.+)$", DressedHandler),
            (r"^/inline/(?P<name>.+)$", InlineHandler),
            (r"^/flushed$", FlushedHandler),
        ],
        **settings,
    )
    app.state.root = tree
    return app


async def fetch(tree: Path, path: str, **kw: Any) -> TestResponse:
    async with TestClient(make_app(tree)) as client:
        return await client.request(kw.pop("method", "GET"), path, **kw)


def validators(tree: Path, name: str) -> tuple[str, str]:
    status = os.stat(tree / name)
    return file_etag(status), http_date(status.st_mtime)


async def test_small_file(tree: Path) -> None:
    response = await fetch(tree, "/files/small.txt")
    etag, modified = validators(tree, "small.txt")
    assert response.status_code == 200
    assert response.content == SMALL
    assert response.get_all("content-length") == [str(len(SMALL))]
    assert response.get_all("etag") == [etag]
    assert response.get_all("last-modified") == [modified]
    assert response.get_all("accept-ranges") == ["bytes"]
    assert response.get_all("content-type") == ["text/plain; charset=utf-8"]
    assert "content-disposition" not in response.headers
    assert "transfer-encoding" not in response.headers
    assert not response.closed


async def test_large_file_is_streamed_with_its_length(tree: Path) -> None:
    response = await fetch(tree, "/files/big.bin")
    etag, modified = validators(tree, "big.bin")
    assert response.status_code == 200
    assert response.get_all("content-length") == [str(len(BIG))]
    assert "transfer-encoding" not in response.headers
    assert "connection" not in response.headers
    assert response.get_all("etag") == [etag]
    assert response.get_all("last-modified") == [modified]
    assert response.get_all("accept-ranges") == ["bytes"]
    assert response.get_all("content-type") == ["application/octet-stream"]
    assert len(response.content) == len(BIG)
    assert response.content == BIG
    assert not response.closed


async def test_large_file_range_in_the_middle_is_streamed(tree: Path) -> None:
    response = await fetch(tree, "/files/big.bin", headers={"Range": "bytes=500000-999999"})
    assert response.status_code == 206
    assert response.get_all("content-range") == [f"bytes 500000-999999/{len(BIG)}"]
    assert response.get_all("content-length") == ["500000"]
    assert response.content == BIG[500000:1000000]
    assert not response.closed


async def test_large_file_small_range_goes_in_one_message(tree: Path) -> None:
    response = await fetch(tree, "/files/big.bin", headers={"Range": "bytes=1000-1999"})
    assert response.status_code == 206
    assert response.get_all("content-range") == [f"bytes 1000-1999/{len(BIG)}"]
    assert response.content == BIG[1000:2000]


async def test_large_file_suffix_range(tree: Path) -> None:
    response = await fetch(tree, "/files/big.bin", headers={"Range": "bytes=-400000"})
    assert response.status_code == 206
    start = len(BIG) - 400000
    assert response.get_all("content-range") == [f"bytes {start}-{len(BIG) - 1}/{len(BIG)}"]
    assert response.get_all("content-length") == ["400000"]
    assert response.content == BIG[-400000:]


async def test_small_file_ranges(tree: Path) -> None:
    async with TestClient(make_app(tree)) as client:
        middle = await client.get("/files/small.txt", headers={"Range": "bytes=2-4"})
        tail = await client.get("/files/small.txt", headers={"Range": "bytes=-3"})
        several = await client.get("/files/small.txt", headers={"Range": "bytes=0-1,3-4"})
    assert (middle.status_code, middle.content) == (206, b"llo")
    assert middle.get_all("content-range") == [f"bytes 2-4/{len(SMALL)}"]
    assert middle.get_all("content-length") == ["3"]
    assert middle.get_all("content-type") == ["text/plain; charset=utf-8"]
    assert (tail.status_code, tail.content) == (206, SMALL[-3:])
    assert (several.status_code, several.content) == (200, SMALL)
    assert "content-range" not in several.headers


async def test_head_of_the_large_file(tree: Path) -> None:
    response = await fetch(tree, "/files/big.bin", method="HEAD")
    assert response.status_code == 200
    assert response.get_all("content-length") == [str(len(BIG))]
    assert response.get_all("etag") == [validators(tree, "big.bin")[0]]
    assert response.content == b""
    assert not response.closed


async def test_head_of_a_small_file(tree: Path) -> None:
    response = await fetch(tree, "/files/small.txt", method="HEAD")
    assert response.status_code == 200
    assert response.get_all("content-length") == [str(len(SMALL))]
    assert response.get_all("content-type") == ["text/plain; charset=utf-8"]
    assert response.content == b""


async def test_head_ignores_a_range(tree: Path) -> None:
    response = await fetch(tree, "/files/big.bin", method="HEAD", headers={"Range": "bytes=0-9"})
    assert response.status_code == 200
    assert response.get_all("content-length") == [str(len(BIG))]
    assert "content-range" not in response.headers


async def test_http_1_0_large_file_closes_after_the_body(tree: Path) -> None:
    response = await fetch(tree, "/files/big.bin", version="HTTP/1.0")
    assert response.status_code == 200
    assert response.get_all("connection") == ["close"]
    assert response.get_all("content-length") == [str(len(BIG))]
    assert response.content == BIG
    assert response.closed


async def test_http_1_0_keep_alive_large_file_stays_open(tree: Path) -> None:
    response = await fetch(
        tree, "/files/big.bin", version="HTTP/1.0", headers={"Connection": "keep-alive"}
    )
    assert response.status_code == 200
    assert response.get_all("connection") == ["keep-alive"]
    assert response.content == BIG
    assert not response.closed


async def test_http_1_1_connection_close_large_file(tree: Path) -> None:
    response = await fetch(tree, "/files/big.bin", headers={"Connection": "close"})
    assert response.get_all("connection") == ["close"]
    assert response.content == BIG
    assert response.closed


async def test_http_1_0_small_file_closes(tree: Path) -> None:
    response = await fetch(tree, "/files/small.txt", version="HTTP/1.0")
    assert (response.status_code, response.content) == (200, SMALL)
    assert response.get_all("connection") == ["close"]
    assert response.closed


@pytest.mark.parametrize("name", ["small.txt", "big.bin"])
async def test_if_none_match_is_a_304(tree: Path, name: str) -> None:
    etag, modified = validators(tree, name)
    async with TestClient(make_app(tree)) as client:
        first = await client.get(f"/files/{name}")
        assert first.headers["etag"] == etag
        again = await client.get(f"/files/{name}", headers={"If-None-Match": etag})
        by_date = await client.get(f"/files/{name}", headers={"If-Modified-Since": modified})
        head = await client.head(f"/files/{name}", headers={"If-None-Match": etag})
    for response in (again, by_date, head):
        assert response.status_code == 304
        assert response.content == b""
        assert response.get_all("etag") == [etag]
        assert response.get_all("last-modified") == [modified]
        assert "content-type" not in response.headers
        assert "content-length" not in response.headers
        assert not response.closed


@pytest.mark.parametrize("name", ["small.txt", "big.bin"])
async def test_a_range_past_the_end_is_a_416(tree: Path, name: str) -> None:
    size = os.path.getsize(tree / name)
    async with TestClient(make_app(tree)) as client:
        at_end = await client.get(f"/files/{name}", headers={"Range": f"bytes={size}-"})
        beyond = await client.get(f"/files/{name}", headers={"Range": "bytes=99999999-"})
    for response in (at_end, beyond):
        assert response.status_code == 416
        assert response.get_all("content-range") == [f"bytes */{size}"]
        assert int(response.headers["content-length"]) == len(response.content)
        assert b"416" in response.content
        assert not response.closed


async def test_if_match_mismatch_is_a_412_through_the_app(tree: Path) -> None:
    response = await fetch(
        tree, "/files/big.bin", headers={"If-Match": '"stale"', "Range": "bytes=0-9"}
    )
    assert response.status_code == 412
    assert BIG[:10] not in response.content


async def test_if_range_through_the_app(tree: Path) -> None:
    etag, modified = validators(tree, "big.bin")
    async with TestClient(make_app(tree)) as client:
        kept = await client.get(
            "/files/big.bin", headers={"Range": "bytes=10-19", "If-Range": etag}
        )
        dated = await client.get(
            "/files/big.bin", headers={"Range": "bytes=10-19", "If-Range": modified}
        )
        stale = await client.get(
            "/files/big.bin", headers={"Range": "bytes=10-19", "If-Range": '"old"'}
        )
    assert (kept.status_code, kept.content) == (206, BIG[10:20])
    assert (dated.status_code, dated.content) == (206, BIG[10:20])
    assert stale.status_code == 200
    assert stale.content == BIG


async def test_post_gets_the_file_never_a_304(tree: Path) -> None:
    etag, _ = validators(tree, "small.txt")
    response = await fetch(
        tree,
        "/files/small.txt",
        method="POST",
        headers={"If-None-Match": "*", "Range": "bytes=0-1"},
    )
    assert response.status_code == 412  # RFC 9110 §13.2.2: not a 304 for POST, a 412
    response = await fetch(
        tree,
        "/files/small.txt",
        method="POST",
        headers={"If-None-Match": '"x"', "Range": "bytes=0-1"},
    )
    assert response.status_code == 200 and response.content == SMALL  # no ranges for POST
    assert etag == response.headers["etag"]


async def test_download_name_adds_content_disposition(tree: Path) -> None:
    response = await fetch(tree, "/download/small.txt")
    assert response.status_code == 200 and response.content == SMALL
    assert response.get_all("content-disposition") == ['attachment; filename="small.txt"']


async def test_content_type_argument_wins(tree: Path) -> None:
    response = await fetch(tree, "/typed/small.txt")
    assert response.get_all("content-type") == ["application/x-custom"]


async def test_handler_headers_and_cookies_go_with_the_file(tree: Path) -> None:
    etag, modified = validators(tree, "small.txt")
    async with TestClient(make_app(tree)) as client:
        response = await client.get("/dressed/small.txt")
        assert client.cookies == {"seen": "yes"}
        fresh = await client.get("/dressed/small.txt", headers={"If-None-Match": etag})
    assert response.status_code == 200 and response.content == SMALL
    assert response.get_all("cache-control") == ["private, no-cache"]
    assert len(response.get_all("set-cookie")) == 1
    assert response.get_all("set-cookie")[0].startswith("seen=yes")
    # The handler's own validators, type and Accept-Ranges are replaced, not sent twice.
    assert response.get_all("etag") == [etag]
    assert response.get_all("last-modified") == [modified]
    assert response.get_all("content-type") == ["text/plain; charset=utf-8"]
    assert response.get_all("accept-ranges") == ["bytes"]
    assert fresh.status_code == 304
    assert fresh.get_all("cache-control") == ["private, no-cache"]
    assert fresh.get_all("etag") == [etag]


async def test_handler_headers_go_with_a_streamed_file(tree: Path) -> None:
    response = await fetch(tree, "/dressed/big.bin")
    assert response.status_code == 200 and response.content == BIG
    assert response.get_all("cache-control") == ["private, no-cache"]
    assert response.get_all("set-cookie")[0].startswith("seen=yes")
    assert response.get_all("etag") == [validators(tree, "big.bin")[0]]
    assert response.get_all("content-type") == ["application/octet-stream"]


async def test_handlers_own_content_disposition_goes_with_the_file(tree: Path) -> None:
    response = await fetch(tree, "/inline/small.txt")
    assert response.status_code == 200 and response.content == SMALL
    assert response.get_all("content-disposition") == ['inline; filename="shown.txt"']


@pytest.mark.parametrize(
    "path",
    [
        "/files/../outside.txt",
        "/files/..%2Foutside.txt",
        "/files/%2E%2E/outside.txt",
        "/files/sub/../../outside.txt",
        "/files/missing.txt",
        "/files/sub",
    ],
)
async def test_names_that_are_not_files_inside_the_root_are_404(tree: Path, path: str) -> None:
    response = await fetch(tree, path)
    assert response.status_code == 404
    assert OUTSIDE not in response.content


async def test_a_name_with_an_encoded_nul_is_refused_before_any_file_is_looked_up(
    tree: Path,
) -> None:
    response = await fetch(tree, "/files/a%00b")
    assert response.status_code == 400
    assert OUTSIDE not in response.content


async def test_compressed_small_text_file_is_gzipped_without_ranges(tree: Path) -> None:
    etag, _ = validators(tree, "text.txt")
    async with TestClient(make_app(tree, compress_response=True)) as client:
        zipped = await client.get("/files/text.txt", headers=GZIP)
        plain = await client.get("/files/text.txt")
        ranged = await client.get("/files/text.txt", headers={**GZIP, "Range": "bytes=10-29"})
    assert zipped.status_code == 200
    assert zipped.get_all("content-encoding") == ["gzip"]
    assert gzip.decompress(zipped.content) == TEXT
    assert zipped.get_all("etag") == [f"W/{etag}"]
    assert "accept-ranges" not in zipped.headers
    assert zipped.get_all("vary") == ["Accept-Encoding"]
    assert (plain.status_code, plain.content) == (200, TEXT)
    assert plain.get_all("etag") == [etag]
    assert plain.get_all("accept-ranges") == ["bytes"]
    assert ranged.status_code == 206
    assert "content-encoding" not in ranged.headers
    assert ranged.content == TEXT[10:30]
    assert ranged.get_all("content-range") == [f"bytes 10-29/{len(TEXT)}"]


async def test_compressed_weak_tag_revalidates(tree: Path) -> None:
    async with TestClient(make_app(tree, compress_response=True)) as client:
        zipped = await client.get("/files/text.txt", headers=GZIP)
        again = await client.get(
            "/files/text.txt", headers={**GZIP, "If-None-Match": zipped.headers["etag"]}
        )
        # The weak tag cannot keep a range: the whole file, as the client may have the gzip.
        ranged = await client.get(
            "/files/text.txt", headers={"Range": "bytes=0-9", "If-Range": zipped.headers["etag"]}
        )
    assert (again.status_code, again.content) == (304, b"")
    assert (ranged.status_code, ranged.content) == (200, TEXT)


async def test_compressed_file_304_varies_like_its_200(tree: Path) -> None:
    async with TestClient(make_app(tree, compress_response=True)) as client:
        zipped = await client.get("/files/text.txt", headers=GZIP)
        again = await client.get(
            "/files/text.txt", headers={**GZIP, "If-None-Match": zipped.headers["etag"]}
        )
    assert zipped.get_all("vary") == ["Accept-Encoding"]
    assert again.status_code == 304
    assert again.get_all("vary") == ["Accept-Encoding"]


async def test_compressed_file_304_has_the_etag_of_its_200(tree: Path) -> None:
    async with TestClient(make_app(tree, compress_response=True)) as client:
        zipped = await client.get("/files/text.txt", headers=GZIP)
        again = await client.get(
            "/files/text.txt", headers={**GZIP, "If-None-Match": zipped.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.get_all("etag") == zipped.get_all("etag")


async def test_compressed_304_comes_before_a_range_and_drops_accept_ranges(tree: Path) -> None:
    async with TestClient(make_app(tree, compress_response=True)) as client:
        zipped = await client.get("/files/text.txt", headers=GZIP)
        tag = zipped.headers["etag"]
        fresh = await client.get(
            "/files/text.txt", headers={**GZIP, "If-None-Match": tag, "Range": "bytes=0-9"}
        )
        # The strong tag a client saw before compression was on matches too (weakly).
        plain_tag = tag.removeprefix("W/")
        again = await client.get("/files/text.txt", headers={**GZIP, "If-None-Match": plain_tag})
        # A client that takes no gzip revalidates against the plain file's headers.
        plain = await client.get("/files/text.txt", headers={"If-None-Match": plain_tag})
    assert fresh.status_code == 304 and fresh.content == b""
    assert "accept-ranges" not in fresh.headers and "content-range" not in fresh.headers
    assert again.status_code == 304 and again.get_all("etag") == [tag]
    assert plain.status_code == 304
    assert plain.get_all("etag") == [plain_tag] and plain.get_all("accept-ranges") == ["bytes"]


async def test_compression_leaves_a_large_file_alone(tree: Path) -> None:
    big_text = TEXT * 100  # above INLINE_LIMIT: streamed as it is
    (tree / "big.txt").write_bytes(big_text)
    async with TestClient(make_app(tree, compress_response=True)) as client:
        response = await client.get("/files/big.txt", headers=GZIP)
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.get_all("accept-ranges") == ["bytes"]
    assert response.content == big_text


async def test_the_etag_setting_keeps_the_files_etag(tree: Path) -> None:
    async with TestClient(make_app(tree, etag=True)) as client:
        small = await client.get("/files/small.txt")
        big = await client.get("/files/big.bin")
        fresh = await client.get(
            "/files/small.txt", headers={"If-None-Match": validators(tree, "small.txt")[0]}
        )
    assert small.get_all("etag") == [validators(tree, "small.txt")[0]]
    assert big.get_all("etag") == [validators(tree, "big.bin")[0]]
    assert fresh.status_code == 304


async def test_a_file_that_shrinks_while_streaming_closes_the_connection(
    tree: Path, monkeypatch: Any, caplog: Any
) -> None:
    monkeypatch.setattr(files_module, "CHUNK", 300_000)
    real_read_span = files_module.read_span
    path = tree / "big.bin"
    reads: list[int] = []

    async def shrinking(handle: Any, start: int, length: int) -> bytes:
        piece = await real_read_span(handle, start, length)
        reads.append(len(piece))
        if len(reads) == 1:
            os.truncate(path, 500_000)
        return piece

    monkeypatch.setattr(files_module, "read_span", shrinking)
    with caplog.at_level(logging.ERROR, logger="brubeck.files"):
        response = await fetch(tree, "/files/big.bin")
    assert response.status_code == 200
    assert response.get_all("content-length") == [str(len(BIG))]
    assert response.closed
    assert len(response.content) < len(BIG)
    assert response.content == BIG[: len(response.content)]
    assert reads == [300_000, 200_000, 0]
    shrank = [r for r in caplog.records if r.name == "brubeck.files" and "shrank" in r.message]
    assert len(shrank) == 1 and shrank[0].levelno == logging.ERROR


async def test_a_small_file_read_short_is_a_500(tree: Path, monkeypatch: Any) -> None:
    """Shorter than its stat said (truncated in between): no short body under a full length."""
    real_read_span = handlers_module.read_span

    async def short(handle: Any, start: int, length: int) -> bytes:
        return (await real_read_span(handle, start, length))[:-1]

    monkeypatch.setattr(handlers_module, "read_span", short)
    response = await fetch(tree, "/files/small.txt")
    assert response.status_code == 500
    assert SMALL[:-1] not in response.content


async def test_send_file_after_a_flush_aborts_the_stream(tree: Path, caplog: Any) -> None:
    async with TestClient(make_app(tree)) as client:
        await client.send_raw(client.build_message("GET", "/flushed", conn_id=99))
        messages: list[bytes] = []
        while not messages or messages[-1] != b"":
            messages.append(await client.receive(99))
    data = b"".join(messages)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.count(b"HTTP/1.1") == 1  # no second response after the started one
    assert b"partial" in data
    assert SMALL not in data
    assert messages[-1] == b""  # the connection was closed: the client sees a cut stream
    assert any("failed after its response started" in r.message for r in caplog.records)


# Mongrel2's notices: download credits and disconnects, as it sends them


def with_m2_headers(raw: bytes, **extra: bytes) -> bytes:
    """The same request with more upper-case (Mongrel2's own) headers."""
    sender, conn_id, path, rest = raw.split(b" ", 3)
    headers, body = tnetstring.pop(rest)
    headers.update((key.encode(), value) for key, value in extra.items())
    return b" ".join([sender, conn_id, path, tnetstring.dumps(headers) + tnetstring.dumps(body)])


def notice(sender: bytes, conn_id: int, kind: str, **headers: bytes) -> bytes:
    fields = {b"METHOD": b"JSON", **{k.encode(): v for k, v in headers.items()}}
    body = tnetstring.dumps(b'{"type":"%s"}' % kind.encode())
    return b"%s %d @* %s%s" % (sender, conn_id, tnetstring.dumps(fields), body)


async def take_available(client: TestClient, conn_id: int, wait: float = 0.05) -> list[bytes]:
    """Every message for ``conn_id`` that arrives before ``wait`` seconds of quiet."""
    return await fixtures.drain(client, conn_id, wait)


async def test_a_large_file_stays_within_the_credit_window(tree: Path) -> None:
    """Under download.flow_control, no more than the announced credits go out unacknowledged;
    each credits notice lets the next piece go."""
    window = 102_400
    async with TestClient(make_app(tree)) as client:
        raw = client.build_message("GET", "/files/big.bin", conn_id=7)
        await client.send_raw(with_m2_headers(raw, DOWNLOAD_CREDITS=str(window).encode()))
        received, rounds = b"", 0
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < len(BIG):
            pieces = await take_available(client, 7)
            assert pieces, f"nothing more came after {len(received)} bytes"
            assert b"" not in pieces  # the connection stays open
            sent = sum(map(len, pieces))
            assert sent <= window
            received += b"".join(pieces)
            rounds += 1
            # Mongrel2 wrote them to the client: it says so with credits.
            await client.send_raw(
                notice(client.sender, 7, "credits", DOWNLOAD_CREDITS=b"%d" % sent)
            )
        assert await take_available(client, 7, 0.1) == []  # nothing past the length
    response = TestResponse(received, closed=False)
    assert response.status_code == 200
    assert response.get_all("content-length") == [str(len(BIG))]
    assert response.content == BIG
    assert rounds >= len(BIG) // window


async def test_a_disconnect_stops_the_reading_and_closes_the_file(
    tree: Path, monkeypatch: Any
) -> None:
    real_read_span = files_module.read_span
    handles: list[Any] = []
    hold = asyncio.Event()

    async def held(handle: Any, start: int, length: int) -> bytes:
        handles.append(handle)
        if len(handles) > 1:
            await hold.wait()  # the client is slow: the second piece waits
        return await real_read_span(handle, start, length)

    monkeypatch.setattr(files_module, "read_span", held)
    async with TestClient(make_app(tree)) as client:
        await client.send_raw(client.build_message("GET", "/files/big.bin", conn_id=8))
        head = await client.receive(8)
        assert head.startswith(b"HTTP/1.1 200 ")
        async with asyncio.timeout(2):
            while len(handles) < 2:
                await asyncio.sleep(0.005)
        assert not handles[0].closed
        await client.send_raw(notice(client.sender, 8, "disconnect"))
        async with asyncio.timeout(2):
            while not handles[0].closed:
                await asyncio.sleep(0.005)
        assert len(handles) == 2  # no read after the disconnect
