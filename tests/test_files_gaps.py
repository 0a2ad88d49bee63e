"""send_file: what the first tests left open (found by mutating the code by hand).

The boundaries of ``INLINE_LIMIT`` under gzip, a 206 under gzip, the 304 of a file gzip never
touches, the name asked for giving the type, the handler's own Content-Disposition with a
``download_name``, reads a HEAD or a 304 should not make, and a body whose last piece is one
byte (no Mongrel2: ``TestClient``).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck import files as files_module
from brubeck import handlers as handlers_module
from brubeck.conditional import http_date
from brubeck.files import (
    CHUNK,
    INLINE_LIMIT,
    content_disposition,
    file_etag,
    guess_type,
    plan_file,
)
from brubeck.response import encode_stream_head
from brubeck.testing import TestClient

GZIP = {"Accept-Encoding": "gzip"}
LINE = b"All work and no play makes Jack a dull boy.\n"


class FileHandler(WebMessageHandler):
    async def get(self, name: str) -> Any:
        return await self.send_file(name, root=self.application.state.root)


class RenamedHandler(WebMessageHandler):
    """Sets its own Content-Disposition, then asks for an attachment under another name."""

    async def get(self, name: str) -> Any:
        self.set_header("Content-Disposition", 'inline; filename="shown.txt"')
        return await self.send_file(
            name, root=self.application.state.root, download_name="saved.txt"
        )


def make_app(root: Path, **settings: Any) -> Brubeck:
    app = Brubeck(
        handler_tuples=[
            (r"^/files/(?P<name>.+)$", FileHandler),
            (r"^/renamed/(?P<name>.+)$", RenamedHandler),
        ],
        **settings,
    )
    app.state.root = root
    return app


def text_of(size: int) -> bytes:
    return (LINE * (size // len(LINE) + 1))[:size]


def tag(path: Path) -> str:
    return file_etag(os.stat(path))


def count_reads(monkeypatch: Any) -> list[int]:
    """Every read send_file makes, inline or streamed: the lengths asked for."""
    reads: list[int] = []
    real = files_module.read_span

    async def counted(handle: Any, start: int, length: int) -> bytes:
        reads.append(length)
        return await real(handle, start, length)

    monkeypatch.setattr(files_module, "read_span", counted)
    monkeypatch.setattr(handlers_module, "read_span", counted)
    return reads


# INLINE_LIMIT under gzip: the file sent whole in one message is the one the app revalidates


async def test_a_text_file_of_exactly_the_inline_limit_is_gzipped_and_its_304_follows(
    tmp_path: Path,
) -> None:
    data = text_of(INLINE_LIMIT)
    (tmp_path / "edge.txt").write_bytes(data)
    async with TestClient(make_app(tmp_path, compress_response=True)) as client:
        zipped = await client.get("/files/edge.txt", headers=GZIP)
        fresh = await client.get(
            "/files/edge.txt", headers={**GZIP, "If-None-Match": zipped.headers["etag"]}
        )
    assert zipped.status_code == 200
    assert zipped.get_all("content-encoding") == ["gzip"]
    assert gzip.decompress(zipped.content) == data
    assert zipped.get_all("etag") == [f"W/{tag(tmp_path / 'edge.txt')}"]
    assert (fresh.status_code, fresh.content) == (304, b"")
    assert fresh.get_all("etag") == zipped.get_all("etag")
    assert fresh.get_all("vary") == ["Accept-Encoding"]
    assert "accept-ranges" not in fresh.headers


async def test_a_text_file_one_byte_over_the_inline_limit_is_plain_and_so_is_its_304(
    tmp_path: Path,
) -> None:
    data = text_of(INLINE_LIMIT + 1)
    (tmp_path / "over.txt").write_bytes(data)
    etag = tag(tmp_path / "over.txt")
    async with TestClient(make_app(tmp_path, compress_response=True)) as client:
        plain = await client.get("/files/over.txt", headers=GZIP)
        fresh = await client.get("/files/over.txt", headers={**GZIP, "If-None-Match": etag})
    assert (plain.status_code, plain.content) == (200, data)
    assert "content-encoding" not in plain.headers
    assert plain.get_all("etag") == [etag]
    assert (fresh.status_code, fresh.content) == (304, b"")
    assert fresh.get_all("etag") == [etag]
    assert fresh.get_all("accept-ranges") == ["bytes"]


# gzip and files


async def test_a_range_of_a_text_file_is_never_gzipped(tmp_path: Path) -> None:
    """A range as long as gzip's minimum size: still the plain bytes, as Content-Range says."""
    data = text_of(8000)
    (tmp_path / "text.txt").write_bytes(data)
    async with TestClient(make_app(tmp_path, compress_response=True)) as client:
        ranged = await client.get("/files/text.txt", headers={**GZIP, "Range": "bytes=100-4195"})
    assert ranged.status_code == 206
    assert "content-encoding" not in ranged.headers
    assert ranged.get_all("content-range") == [f"bytes 100-4195/{len(data)}"]
    assert ranged.get_all("content-length") == ["4096"]
    assert ranged.content == data[100:4196]
    assert ranged.get_all("etag") == [tag(tmp_path / "text.txt")]  # strong: the plain file


async def test_the_304_of_a_file_gzip_leaves_alone_is_like_its_200(tmp_path: Path) -> None:
    """A picture under compress_response: no gzip, no Vary, a strong tag, in 200 and 304."""
    (tmp_path / "picture.png").write_bytes(os.urandom(4096))
    etag = tag(tmp_path / "picture.png")
    async with TestClient(make_app(tmp_path, compress_response=True)) as client:
        whole = await client.get("/files/picture.png", headers=GZIP)
        fresh = await client.get("/files/picture.png", headers={**GZIP, "If-None-Match": etag})
    assert whole.status_code == 200
    assert whole.get_all("content-type") == ["image/png"]
    assert "content-encoding" not in whole.headers and "vary" not in whole.headers
    assert whole.get_all("etag") == [etag]
    assert (fresh.status_code, fresh.content) == (304, b"")
    assert fresh.get_all("etag") == [etag]
    assert "vary" not in fresh.headers
    assert fresh.get_all("accept-ranges") == ["bytes"]


# names, types and dispositions


async def test_the_type_comes_from_the_name_asked_for_not_a_links_target(
    tmp_path: Path,
) -> None:
    (tmp_path / "blob").write_bytes(b"a,b\n1,2\n")
    (tmp_path / "notes.txt").write_bytes(b"notes\n")
    (tmp_path / "report.csv").symlink_to(tmp_path / "blob")
    (tmp_path / "raw").symlink_to(tmp_path / "notes.txt")
    async with TestClient(make_app(tmp_path)) as client:
        report = await client.get("/files/report.csv")
        raw = await client.get("/files/raw")
    assert (report.status_code, report.content) == (200, b"a,b\n1,2\n")
    assert report.get_all("content-type") == ["text/csv; charset=utf-8"]
    assert (raw.status_code, raw.content) == (200, b"notes\n")
    assert raw.get_all("content-type") == ["application/octet-stream"]


@pytest.mark.parametrize("name", ["small.txt", "big.bin"])
async def test_download_name_replaces_the_handlers_own_content_disposition(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / "small.txt").write_bytes(b"small\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(INLINE_LIMIT + 1000))
    async with TestClient(make_app(tmp_path)) as client:
        response = await client.get(f"/renamed/{name}")
        fresh = await client.get(
            f"/renamed/{name}", headers={"If-None-Match": tag(tmp_path / name)}
        )
    assert response.status_code == 200
    assert response.content == (tmp_path / name).read_bytes()
    for answer in (response, fresh):
        assert answer.get_all("content-disposition") == ['attachment; filename="saved.txt"']
    assert fresh.status_code == 304


def test_content_disposition_percent_encodes_a_slash_in_the_utf8_name() -> None:
    """RFC 5987's attr-char has no "/": the UTF-8 name carries it as %2F."""
    header = content_disposition("dossier/résumé.pdf")
    assert header == (
        "attachment; filename=\"dossier/r_sum_.pdf\"; filename*=UTF-8''"
        "dossier%2Fr%C3%A9sum%C3%A9.pdf"
    )


def test_guess_type_knows_the_common_non_standard_types() -> None:
    """``strict=False``: a type only Python's list of common non-standard ones has."""
    assert guess_type("drawing.pict") != "application/octet-stream"


@pytest.mark.parametrize("padding", [" ", "\t", "  \t "])
def test_if_range_with_whitespace_around_it_still_matches(tmp_path: Path, padding: str) -> None:
    """An HTTP parser may leave the spaces around a field value: the range still counts."""
    path = tmp_path / "ten.txt"
    path.write_bytes(b"0123456789")
    status = os.stat(path)
    for validator in (file_etag(status), http_date(status.st_mtime)):
        raw = {b"range": b"bytes=2-4", b"if-range": f"{padding}{validator}{padding}".encode()}
        result = plan_file(raw, "GET", status, "text/plain")
        assert (result.status, result.start, result.stop) == (206, 2, 5)


# reads that need not happen


async def test_head_of_a_large_file_reads_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    size = INLINE_LIMIT * 3
    (tmp_path / "big.bin").write_bytes(os.urandom(size))
    reads = count_reads(monkeypatch)
    async with TestClient(make_app(tmp_path)) as client:
        head = await client.head("/files/big.bin")
        after = await client.get("/files/big.bin", headers={"Range": "bytes=0-9"})
    assert head.status_code == 200
    assert head.get_all("content-length") == [str(size)]
    assert head.content == b"" and not head.closed
    assert reads == [10]  # the range's read only: the HEAD read nothing
    assert after.status_code == 206


async def test_a_304_without_gzip_reads_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "small.txt").write_bytes(b"small\n")
    reads = count_reads(monkeypatch)
    etag = tag(tmp_path / "small.txt")
    async with TestClient(make_app(tmp_path)) as client:
        fresh = await client.get("/files/small.txt", headers={"If-None-Match": etag})
        head = await client.head("/files/small.txt", headers={"If-None-Match": etag})
    assert (fresh.status_code, head.status_code) == (304, 304)
    assert fresh.get_all("etag") == [etag]
    assert reads == []


# the framing of a body sent in pieces


async def test_a_large_file_whose_last_piece_is_one_byte_arrives_whole(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK + 1)  # two full pieces, then one byte alone
    (tmp_path / "odd.bin").write_bytes(data)
    async with TestClient(make_app(tmp_path)) as client:
        response = await client.get("/files/odd.bin")
        after = await client.get("/files/odd.bin", headers={"Range": "bytes=-1"})
    assert response.status_code == 200
    assert response.get_all("content-length") == [str(len(data))]
    assert len(response.content) == len(data)
    assert response.content == data
    assert not response.closed
    assert (after.status_code, after.content) == (206, data[-1:])


def test_encode_stream_head_with_a_length_is_never_chunked() -> None:
    """A length frames the body, even 0, and wins over ``chunked``: never both headers."""
    headers = [("Content-Type", "application/octet-stream")]
    for length, chunked in [(0, False), (0, True), (10, True), (10, False)]:
        head = encode_stream_head(200, headers, None, chunked, None, length).decode()
        assert f"\r\nContent-Length: {length}\r\n" in head
        assert "Transfer-Encoding" not in head
    chunked_head = encode_stream_head(200, headers, None, True, None).decode()
    assert "\r\nTransfer-Encoding: chunked\r\n" in chunked_head
    assert "Content-Length" not in chunked_head
