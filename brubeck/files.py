"""Files as responses: validators, 304 and 412, one byte range (206/416), large files streamed.

Mongrel2 serves public directories itself (a ``Dir`` route); this module is for the files a
handler decides about: downloads behind a login, exports, paths that come from application
data. Rules of this module:

- the validators come from the file: a strong ``ETag`` made of its size and modification time
  in nanoseconds (the same in every handler process on one disk), and ``Last-Modified``;
- the conditions run in RFC 9110 §13.2.2's order: ``If-Match`` / ``If-Unmodified-Since``
  (412), ``If-None-Match`` / ``If-Modified-Since`` (304), then ``If-Range`` and ``Range``;
- one byte range of a GET gets a 206; a range that starts past the end gets a 416 that names
  the size. Several ranges, a malformed field or another unit get the whole file, as RFC 9110
  §14.2 allows, so that no request can make a handler assemble a multipart body;
- a file up to ``INLINE_LIMIT`` bytes goes as one message, like any response (so the app may
  gzip a text file); a larger one is read off the event loop in ``CHUNK`` pieces and streamed
  with its Content-Length, within the connection's credit window under Mongrel2's
  ``download.flow_control`` (the setting to use for bulk downloads: MONGREL2.md §A6);
- a name given with a ``root`` stays inside that directory: ``..``, an absolute name or a
  symlink that leads out is a 404, as is a missing file, a directory or an unreadable file.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from .conditional import http_date, is_fresh, preconditions_hold
from .errors import HTTPError
from .protocol import header_text

__all__ = [
    "FilePlan",
    "byte_range",
    "content_disposition",
    "file_etag",
    "guess_type",
    "open_file",
    "path_inside",
    "plan_file",
    "read_span",
    "stream_span",
]

log = logging.getLogger("brubeck.files")

#: Files (or ranges) up to this size are read at once and sent as one message.
INLINE_LIMIT = 256 * 1024
#: Larger ones are read this much at a time; reads from disk block, so they run in a thread.
CHUNK = 256 * 1024
#: Reads this small come from the page cache in microseconds: a thread would cost more.
SMALL_READ = 64 * 1024

#: The headers a file response sets itself: a handler's own value of one of them is dropped
#: (Content-Disposition only when ``download_name`` gives another).
FILE_HEADERS = frozenset(
    [
        "accept-ranges",
        "content-disposition",
        "content-range",
        "content-type",
        "etag",
        "last-modified",
    ]
)

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def file_etag(status: os.stat_result) -> str:
    """A strong entity tag: a rewrite changes the modification time, a truncation the size."""
    return f'"{status.st_size:x}-{status.st_mtime_ns:x}"'


def byte_range(field: str | None, size: int) -> tuple[int, int] | None:
    """The ``(start, stop)`` bytes one ``Range`` field asks for; None for the whole file.

    Raises a 416 (with ``Content-Range: bytes */size``) for a range that starts past the end.
    """
    if field is None or size == 0 or "," in field:
        return None  # no range, nothing to cut, or several ranges: the whole file
    match = _RANGE.fullmatch(field)
    if match is None:
        return None  # another unit, or not the grammar: the RFC says ignore the field
    first, last = (_position(text) for text in match.groups())
    if first is None:
        if last is None:
            return None
        if last == 0:  # the last 0 bytes
            raise _unsatisfiable(size)
        return max(0, size - last), size
    if last is not None and last < first:
        return None  # "5-2" is not a valid range: the field is ignored
    if first >= size:
        raise _unsatisfiable(size)
    stop = size if last is None else min(last + 1, size)
    return first, stop


#: A position past any file: RFC 9110 allows any number of digits, int() refuses 4300 and more.
_HUGE = 1 << 63


def _position(digits: str) -> int | None:
    """A byte position of a Range field, however many digits (leading zeros count for none)."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > 18 else int(digits)


def _unsatisfiable(size: int) -> HTTPError:
    return HTTPError(
        416,
        f"the range starts past the end of the {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )


def _range_applies(raw_headers: dict[bytes, Any], etag: str, last_modified: str) -> bool:
    """``If-Range``: the range counts only if the client's copy is still this one (strongly)."""
    condition = header_text(raw_headers, b"if-range")
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith(('"', "W/")):
        return condition == etag
    return condition == last_modified  # an exact date match, as RFC 9110 §13.1.5 asks


def content_disposition(download_name: str) -> str:
    """``attachment`` with a file name every browser reads: ASCII, and UTF-8 (RFC 6266)."""
    # '%' too: some browsers decode "%20" in filename= (RFC 6266 Appendix D), others do not
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in download_name)
    header = f'attachment; filename="{fallback}"'
    if fallback != download_name:
        header += f"; filename*=UTF-8''{quote(download_name, safe='')}"
    return header


@dataclass(frozen=True, slots=True)
class FilePlan:
    """What to send for one file: status, the bytes ``start:stop`` of it, and the headers."""

    status: int
    start: int
    stop: int
    headers: list[tuple[str, str]]

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_file(
    raw_headers: dict[bytes, Any],
    method: str,
    status: os.stat_result,
    content_type: str,
    download_name: str | None = None,
    whole_if_fresh: bool = False,
) -> FilePlan:
    """The answer to a request for a file, by its conditions and range (412 and 416 raise).

    ``whole_if_fresh`` answers a current client with the whole file all the same, for a caller
    that lets the app make the 304 after gzip has set its headers (a weak tag, ``Vary``).
    """
    # A file dated ahead of the clock is said to be modified now (RFC 9110 §8.8.2.1)
    etag, last_modified = file_etag(status), http_date(min(status.st_mtime, time.time()))
    if not preconditions_hold(raw_headers, etag, last_modified):
        raise HTTPError(412, "the file changed since the client last read it")
    headers = [("ETag", etag), ("Last-Modified", last_modified), ("Accept-Ranges", "bytes")]
    if download_name is not None:
        headers.append(("Content-Disposition", content_disposition(download_name)))
    size = status.st_size
    safe = method in ("GET", "HEAD")
    # If-Modified-Since counts for GET and HEAD only; a matching If-None-Match on another
    # method is a 412 (RFC 9110 §13.2.2, step 3).
    if is_fresh(raw_headers, etag, last_modified if safe else None):
        if not safe:
            raise HTTPError(412, "the client's If-None-Match matches the current file")
        if not whole_if_fresh:
            return FilePlan(304, 0, 0, headers)
        return FilePlan(200, 0, size, [*headers, ("Content-Type", content_type)])
    headers.append(("Content-Type", content_type))
    wanted = None
    if method == "GET" and _range_applies(raw_headers, etag, last_modified):
        wanted = byte_range(header_text(raw_headers, b"range"), size)
    if wanted is None:
        return FilePlan(200, 0, size, headers)
    start, stop = wanted
    headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{size}"))
    return FilePlan(206, start, stop, headers)


def guess_type(path: str | os.PathLike[str]) -> str:
    """The Content-Type by the file's extension; bytes of unknown kind otherwise."""
    name = os.fspath(path)
    # guess_type reads its argument as a URL: a name like "data:text/html,x.png" would be
    # typed by its "data:" part (text/html for a PNG). As a relative path it cannot be one.
    if not os.path.isabs(name):
        name = os.path.join(".", name)
    kind, encoding = mimetypes.guess_type(name, strict=False)
    if kind is None or encoding is not None:  # a .gz is not its content's type
        return "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        return f"{kind}; charset=utf-8"
    return kind


def path_inside(name: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """The real path of ``name`` under ``root``; 404 when it leads out (``..``, an absolute
    name, a symlink) or cannot be resolved (a NUL, a symlink loop)."""
    text = os.fspath(name)
    if "\0" in text or Path(text).is_absolute():
        raise HTTPError(404)
    try:
        base = Path(root).resolve()
        path = (base / text).resolve()
    except (OSError, RuntimeError):  # a symlink loop: RuntimeError before 3.13
        raise HTTPError(404) from None
    if not path.is_relative_to(base):
        raise HTTPError(404)
    return path


def open_file(
    name: str | os.PathLike[str], root: str | os.PathLike[str] | None
) -> tuple[BinaryIO, os.stat_result]:
    """An open binary file and its status; 404 when it is not a readable regular file or,
    with ``root``, when the name leads out of that directory."""
    if os.fspath(name).endswith("/"):  # names a directory: pathlib would drop the slash
        raise HTTPError(404)
    path = Path(name) if root is None else path_inside(name, root)
    try:
        # Non-blocking: opening a named pipe would otherwise wait for a writer, and stop the
        # event loop; the check below then refuses anything but a regular file.
        handle = open(path, "rb", opener=_open_nonblocking)  # noqa: SIM115 - the caller closes it
    except (OSError, ValueError):
        raise HTTPError(404) from None
    status = os.fstat(handle.fileno())
    if not stat.S_ISREG(status.st_mode):
        handle.close()
        raise HTTPError(404)
    return handle, status


async def read_span(handle: BinaryIO, start: int, length: int) -> bytes:
    """Bytes ``start`` to ``start + length`` of an open file (fewer if it shrank meanwhile)."""
    if length <= SMALL_READ:
        return os.pread(handle.fileno(), length, start)
    return await asyncio.to_thread(os.pread, handle.fileno(), length, start)


async def stream_span(stream: Any, handle: BinaryIO, start: int, length: int) -> None:
    """Send ``length`` bytes of the file through a ``ResponseStream`` opened with that length.

    A file that shrinks meanwhile cannot fill the promised length: the connection is closed,
    so the client sees a truncated body and not a hang.
    """
    offset, remaining = start, length
    while remaining:
        piece = await read_span(handle, offset, min(CHUNK, remaining))
        if not piece:
            log.error(
                "%s shrank while being sent (%d of %d bytes left); closing the connection",
                handle.name,
                remaining,
                length,
            )
            stream.abort()
            return
        offset += len(piece)
        remaining -= len(piece)
        await stream.write(piece)
    await stream.finish()


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)
