"""gzip for complete responses and text streams, under the ``compress_response`` setting.

Mongrel2 forwards a handler's bytes untouched, so compression is the handler's job.

Rules of this module:
- a body is compressed only if the client accepts gzip (``Accept-Encoding``, q-values
  honoured), its type is text-like (``text/*``, JSON, JavaScript, XML, SVG), it is at least
  ``compress_min_size`` bytes (default 1024) and it has no ``Content-Encoding`` yet nor
  ``Cache-Control: no-transform``;
- every response of a compressible type says ``Vary: Accept-Encoding``, compressed or not,
  so that caches keep the two forms apart; so does a handler's own 304 (RFC 9110 §15.4.5);
- a handler's strong ``ETag`` becomes weak on a compressed body: the bytes differ, the
  content does not (RFC 9110 §8.8.1);
- a 206 (one byte range of a file), or any body with a ``Content-Range``, is sent as it is,
  and a compressed body drops ``Accept-Ranges``: ranges count in the plain bytes;
- a stream (``flush()``, chunked or to the close) of a text-like type is gzipped with a sync
  point at every flush (``streaming.ResponseStream``), whatever its size; event streams and
  files streamed with their length are sent as written; an answer to many connections
  (``app.deliver``) is compressed once per group of clients.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Mapping
from typing import Any

from .protocol import header_text
from .response import DEFAULT_CONTENT_TYPE, Response

__all__ = [
    "accepts_gzip",
    "compressor",
    "gzip_level",
    "gzipped_headers",
    "is_compressible",
    "negotiate",
]

#: The ``no-transform`` directive among a Cache-Control value's comma-separated directives.
_NO_TRANSFORM = re.compile(r"(?:^|,)\s*no-transform\s*(?:,|$)", re.IGNORECASE)

_TEXT_TYPES = frozenset(
    [
        "application/json",
        "application/javascript",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/manifest+json",
        "image/svg+xml",
    ]
)


def is_compressible(content_type: str) -> bool:
    """Whether a media type is text that gzip shrinks (images, archives and video are not)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return (
        media.startswith("text/")
        or media in _TEXT_TYPES
        or media.endswith("+json")
        or media.endswith("+xml")
    )


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (RFC 9110 §12.5.3)."""
    star = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = _quality(params)
        if coding in ("gzip", "x-gzip"):
            return quality > 0
        if coding == "*":
            star = quality > 0
    return bool(star)


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0  # a q-value we cannot read: do not guess that gzip is welcome
            return quality if 0 <= quality <= 1 else 0.0
    return 1.0


def gzip_level(settings: Mapping[str, Any]) -> int | None:
    """The gzip level from the settings, or None when compression is off.

    Raises ValueError for a level or size it cannot use, so that the app stops at startup.
    """
    if not settings.get("compress_response"):
        return None
    level = settings.get("compress_level", 6)
    if type(level) is not int or not 1 <= level <= 9:
        raise ValueError(f"the compress_level setting must be an int in 1..9, got {level!r}")
    min_size = settings.get("compress_min_size", 1024)
    if type(min_size) is not int or min_size < 0:
        raise ValueError(
            f"the compress_min_size setting must be an int of at least 0, got {min_size!r}"
        )
    return level


def negotiate(
    request: Any, status: int, headers: list[tuple[str, str]], has_body: bool
) -> tuple[list[tuple[str, str]], bool] | None:
    """None to leave a response as it is; else its headers with ``Vary`` and whether this
    client takes gzip."""
    if status < 200 or status == 204:
        return None  # no body and nothing to vary
    content_type, varies, ranged = None, [], status == 206
    for name, value in headers:
        lower = name.lower()
        if lower == "content-type":
            content_type = value
        elif lower == "content-encoding":
            return None  # already encoded by the handler
        elif lower == "vary":
            varies.append(value)
        elif lower == "content-range":
            ranged = True
        elif lower == "cache-control" and _NO_TRANSFORM.search(value):
            return None  # the handler forbids changing the bytes (RFC 9111 §5.2.2.6)
    if content_type is None and (has_body or status == 304):
        # What the encoder will send; a 304 without a type (a function route's own) varies
        # as its 200 may: a Vary on a 304 costs nothing, a missing one mixes cached forms.
        content_type = DEFAULT_CONTENT_TYPE
    if content_type is None or not is_compressible(content_type):
        return None
    fields = {field.strip().lower() for value in varies for field in value.split(",")}
    if "*" not in fields and "accept-encoding" not in fields:
        # Every Vary line the handler set is kept, in one line with ours.
        merged = ", ".join([*(v.strip() for v in varies if v.strip()), "Accept-Encoding"])
        headers = [(n, v) for n, v in headers if n.lower() != "vary"] + [("Vary", merged)]
    if ranged:  # bytes counted by a Content-Range (a 206's range): sent as they are, with Vary
        return headers, False
    accepted = header_text(request.raw_headers, b"accept-encoding")
    return headers, accepted is not None and accepts_gzip(accepted)


def gzipped_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of a body that is now gzipped: a weak tag, no ranges (they count in the
    plain bytes), ``Content-Encoding``."""
    kept = [
        (n, _weak(v) if n.lower() == "etag" else v)
        for n, v in headers
        if n.lower() != "accept-ranges"
    ]
    kept.append(("Content-Encoding", "gzip"))
    return kept


def compressor(settings: Mapping[str, Any]) -> Callable[[Any, Response], Response] | None:
    """The app's hook from its settings: None (no cost per request) unless compression is on.

    Raises ValueError for a level or size it cannot use, so that the app stops at startup.
    """
    level = gzip_level(settings)
    if level is None:
        return None
    min_size: int = settings.get("compress_min_size", 1024)

    def compress(request: Any, response: Response) -> Response:
        status = response.status
        plan = negotiate(request, status, response.headers, bool(response.body))
        if plan is None:
            return response
        headers, takes_gzip = plan
        body = response.body
        # A handler's own 304 (render(304) keeps its Content-Type, which the encoder leaves
        # out) gets the Vary its 200 has, and nothing else: it has no body to compress.
        if status != 304 and len(body) >= min_size and takes_gzip:
            body = gzip.compress(body, level, mtime=0)
            headers = gzipped_headers(headers)
        if headers is response.headers:
            return response
        return Response(body, status, headers, response.reason)

    return compress


def _weak(etag: str) -> str:
    return etag if etag.startswith("W/") else f"W/{etag}"
