"""send_file, StaticFileHandler and their helpers under hostile or odd input (an adversarial
hunt; no Mongrel2: ``TestClient``).

The tests whose docstring starts with "Was a bug." failed when they were written: each names
the answer the RFC asks for. The others pin down behaviour the earlier files left open (a file
that grows or is replaced while it streams, an empty file asked for a range).
"""

from __future__ import annotations

import os
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from brubeck import Brubeck, HTTPError, StaticFileHandler, WebMessageHandler
from brubeck import files as files_module
from brubeck.files import INLINE_LIMIT, byte_range, content_disposition, guess_type
from brubeck.testing import TestClient, TestResponse

BIG = os.urandom(3 * INLINE_LIMIT + 777)  # streamed in pieces
TEXT = ("All work and no play makes Jack a dull boy.\n" * 100).encode()  # gzip-worthy
GZIP = {"Accept-Encoding": "gzip"}
#: More digits than int() converts by default (sys.get_int_max_str_digits() is 4300).
MANY = 5000


class FileHandler(WebMessageHandler):
    async def get(self, name: str) -> Any:
        return await self.send_file(name, root=self.application.state.root)


def make_app(root: Path, **settings: Any) -> Brubeck:
    app = Brubeck(
        handler_tuples=[
            (r"^/files/(?P<name>.+)$", FileHandler),
            (
                r"^/site/(?P<path>.*)$",
                StaticFileHandler,
                {"root": str(root), "default_filename": "index.html"},
            ),
        ],
        **settings,
    )
    app.state.root = root
    return app


async def fetch(root: Path, path: str, **kw: Any) -> TestResponse:
    settings = kw.pop("settings", {})
    async with TestClient(make_app(root, **settings)) as client:
        return await client.request(kw.pop("method", "GET"), path, **kw)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    base.mkdir()
    (base / "ten.bin").write_bytes(b"0123456789")
    (base / "big.bin").write_bytes(BIG)
    (base / "text.txt").write_bytes(TEXT)
    (base / "empty.txt").write_bytes(b"")
    (base / "index.html").write_bytes(b"<h1>index</h1>\n")
    return base


# Range: numbers longer than int() accepts


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param("bytes=" + "0" * MANY + "2-4", (2, 5), id="leading-zeros-first"),
        pytest.param("bytes=2-" + "0" * MANY + "4", (2, 5), id="leading-zeros-last"),
        pytest.param("bytes=-" + "0" * MANY + "3", (7, 10), id="leading-zeros-suffix"),
        pytest.param("bytes=0-" + "9" * MANY, (0, 10), id="huge-last"),
        pytest.param("bytes=-" + "9" * MANY, (0, 10), id="huge-suffix"),
    ],
)
def test_a_range_with_thousands_of_digits_is_read_as_the_number_it_is(
    field: str, expected: tuple[int, int]
) -> None:
    """Was a bug. ``int()`` refuses a string of more than 4300 digits with a ValueError, so a
    client's Range header made ``byte_range`` raise, and the request a 500 logged with its
    traceback. RFC 9110 §14.1.1 lets first-pos, last-pos and suffix-length have any number
    of digits: leading zeros mean the same number, and a last-pos or suffix past the end is
    cut to the end."""
    assert byte_range(field, 10) == expected


def test_a_range_that_starts_thousands_of_digits_in_is_a_416() -> None:
    """Was a bug. A first-pos beyond any size is past the end: a 416 naming the size
    (RFC 9110 §15.5.17), not a ValueError from ``int()``."""
    with pytest.raises(HTTPError) as caught:
        byte_range("bytes=" + "9" * MANY + "-", 10)
    assert caught.value.status == 416
    assert caught.value.headers == {"Content-Range": "bytes */10"}


async def test_a_range_header_of_thousands_of_digits_is_never_a_500(root: Path) -> None:
    """Was a bug. The same Range through the app was a 500 with an ERROR and a traceback
    logged for every such request: a client must get the range, the file or a 416."""
    async with TestClient(make_app(root)) as client:
        past = await client.get("/files/ten.bin", headers={"Range": "bytes=" + "9" * MANY + "-"})
        long_last = await client.get(
            "/files/ten.bin", headers={"Range": "bytes=2-" + "0" * MANY + "4"}
        )
    assert past.status_code == 416
    assert past.get_all("content-range") == ["bytes */10"]
    assert (long_last.status_code, long_last.content) == (206, b"234")
    assert long_last.get_all("content-range") == ["bytes 2-4/10"]


# Content-Type: a name is not a URL


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        pytest.param("Data: Q1, 2024.pdf", "application/pdf", id="reads-like-a-data-url"),
        pytest.param("data:,x.png", "image/png", id="empty-data-url"),
        pytest.param("data:text/html,x.png", "image/png", id="data-url-naming-html"),
        pytest.param("data:image/svg+xml;x=y,z.txt", "text/plain; charset=utf-8", id="svg"),
    ],
)
def test_guess_type_of_a_name_that_starts_like_a_data_url(name: str, kind: str) -> None:
    """Was a bug. ``mimetypes.guess_type`` takes a URL: for a name starting ``data:`` up to a
    comma, it returns the media type written in the name (``text/plain`` when there is
    none) and ignores the extension. A PDF named ``Data: Q1, 2024.pdf`` went out as
    ``text/plain``. The type must come from the file's extension, as the docs say."""
    assert guess_type(name) == kind
    assert guess_type(Path(name)) == kind


async def test_a_png_whose_path_spells_a_data_url_is_not_served_as_html(root: Path) -> None:
    """Was a bug. A directory ``data:text`` holding ``html,x.png`` (names an upload form may
    let a user choose) made ``send_file`` answer ``text/html`` for the PNG, so the browser
    ran whatever HTML the file held, on the app's origin."""
    (root / "data:text").mkdir()
    (root / "data:text" / "html,x.png").write_bytes(b"<script>alert(document.cookie)</script>")
    r = await fetch(root, "/files/data:text/html,x.png")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"


# Last-Modified: never later than the response's Date


async def test_a_file_modified_in_the_future_has_a_last_modified_no_later_than_the_date(
    root: Path,
) -> None:
    """Was a bug. A file whose modification time is ahead of the server's clock (a copy
    from a skewed host, an archive extracted with its times) was sent with that future
    Last-Modified. RFC 9110 §8.8.2.1: the origin server MUST replace a modification time
    that is in the future by the message's origination date (Date). Otherwise a client's
    If-Modified-Since of that date never matches once it has passed."""
    path = root / "ten.bin"
    ahead = time.time() + 2 * 86400
    os.utime(path, (ahead, ahead))
    r = await fetch(root, "/files/ten.bin")
    assert r.status_code == 200
    last_modified = parsedate_to_datetime(r.headers["last-modified"])
    date = parsedate_to_datetime(r.headers["date"])
    assert last_modified <= date


# StaticFileHandler: a name the file system refuses


async def test_a_name_too_long_for_the_file_system_is_a_404_with_default_filename(
    root: Path,
) -> None:
    """Was a bug. With ``default_filename``, ``StaticFileHandler.get`` asks
    ``Path.is_dir()``, which ignores only ENOENT, ENOTDIR, EBADF and ELOOP: a URL part of
    more than 255 bytes (ENAMETOOLONG) raised out of the handler and was a 500 with a
    traceback in the log. Any client can send it; like every name that is not a file it
    must be a 404 (``send_file`` already answers 404 for the same name)."""
    name = "a" * 300
    assert (await fetch(root, f"/files/{name}")).status_code == 404
    assert (await fetch(root, f"/site/{name}")).status_code == 404
    assert (await fetch(root, f"/site/{name}/index.html")).status_code == 404


# A 206 carries the Vary its 200 has


async def test_a_range_of_a_gzip_worthy_file_varies_like_its_200(root: Path) -> None:
    """Was a bug. With ``compress_response``, the 200 for a small text file says
    ``Vary: Accept-Encoding`` (gzipped or not), but its 206 said nothing. RFC 9110
    §15.3.7: a 206 MUST carry the Vary a 200 to the same request would have, so that a
    cache keeps the encodings apart."""
    settings = {"compress_response": True}
    whole = await fetch(root, "/files/text.txt", headers=GZIP, settings=settings)
    part = await fetch(
        root, "/files/text.txt", headers={**GZIP, "Range": "bytes=0-9"}, settings=settings
    )
    assert whole.get_all("vary") == ["Accept-Encoding"]
    assert (part.status_code, part.content) == (206, TEXT[:10])
    assert "content-encoding" not in part.headers
    assert part.get_all("vary") == ["Accept-Encoding"]


# Content-Disposition: a percent sign in the ASCII name


@pytest.mark.parametrize("name", ["report%20final.csv", "100%41.txt"])
def test_content_disposition_of_a_name_with_percent_escapes_adds_filename_star(name: str) -> None:
    """Was a bug. A name like ``report%20final.csv`` went out only as
    ``filename="report%20final.csv"``, which some browsers percent-decode (Chrome saves
    ``report final.csv``) and others keep. RFC 6266 Appendix D: avoid ``%`` followed by two
    hex digits in ``filename``, and add ``filename*`` when ``filename`` cannot carry the
    name faithfully; the unambiguous ``filename*`` then wins in every current browser."""
    header = content_disposition(name)
    assert header.endswith("; filename*=UTF-8''" + name.replace("%", "%25"))
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert "%" not in fallback


# Passing: files that change while they stream, an empty file


async def test_a_file_that_grows_while_streaming_sends_exactly_its_content_length(
    root: Path, monkeypatch: Any
) -> None:
    """Bytes appended during the download are not sent: the Content-Length given at the start
    holds, and the connection stays usable."""
    path = root / "big.bin"
    real = files_module.read_span
    calls: list[int] = []

    async def growing(handle: Any, start: int, length: int) -> bytes:
        calls.append(start)
        if len(calls) == 1:
            with open(path, "ab") as out:
                out.write(b"appended" * 100_000)
        return await real(handle, start, length)

    monkeypatch.setattr(files_module, "read_span", growing)
    r = await fetch(root, "/files/big.bin")
    assert r.status_code == 200
    assert r.get_all("content-length") == [str(len(BIG))]
    assert r.content == BIG
    assert not r.closed
    assert len(calls) > 1


async def test_a_file_replaced_while_streaming_sends_the_old_file_whole(
    root: Path, monkeypatch: Any
) -> None:
    """A deploy that renames a new file over the one being sent: the open handle keeps the old
    one, so the client gets the version its ETag names, never a mix of two."""
    path = root / "big.bin"
    replacement = root / "new.bin"
    replacement.write_bytes(os.urandom(len(BIG)))
    real = files_module.read_span
    calls: list[int] = []

    async def replacing(handle: Any, start: int, length: int) -> bytes:
        calls.append(start)
        if len(calls) == 1:
            os.replace(replacement, path)
        return await real(handle, start, length)

    monkeypatch.setattr(files_module, "read_span", replacing)
    r = await fetch(root, "/files/big.bin")
    assert (r.status_code, r.content) == (200, BIG)
    assert not r.closed
    assert path.read_bytes() != BIG


@pytest.mark.parametrize("field", ["bytes=0-", "bytes=-0", "bytes=0-0", "bytes=5-"])
async def test_an_empty_file_ignores_every_range(root: Path, field: str) -> None:
    """No byte of an empty file can be cut: the Range is ignored (RFC 9110 §14.2 allows it)
    and the answer is an empty 200 with its length, not a hang or a 206 of nothing."""
    r = await fetch(root, "/files/empty.txt", headers={"Range": field})
    assert (r.status_code, r.content) == (200, b"")
    assert r.get_all("content-length") == ["0"]
    assert "content-range" not in r.headers


@pytest.mark.parametrize("path", ["/files/ten.bin/", "/site/text.txt/"])
async def test_a_file_name_with_a_trailing_slash_is_a_404(root: Path, path: str) -> None:
    """Was a bug. ``ten.bin/`` names a directory (the OS says ENOTDIR); pathlib dropped the
    slash and the file was served, under a URL whose relative links point elsewhere."""
    assert (await fetch(root, path)).status_code == 404
    assert (await fetch(root, path.rstrip("/"))).status_code == 200
