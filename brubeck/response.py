"""HTTP/1.1 response bytes: Mongrel2 forwards them untouched, so every byte of framing is ours.

Rules of this module: header names and values never contain CR, LF or NUL (no response
splitting); every response is framed with Content-Length unless its status forbids a body.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus

import ujson

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | None

_PHRASES: dict[int, str] = {status.value: status.phrase for status in HTTPStatus}
_PHRASES.update({418: "I'm a Teapot", 425: "Too Early", 509: "Bandwidth Limit Exceeded"})

#: Statuses that never carry a body nor a Content-Length (RFC 9110 §8.6, §15.3.5, §15.4.5).
NO_BODY = frozenset([*range(100, 200), 204, 304])

DEFAULT_CONTENT_TYPE = "text/html; charset=utf-8"
_DEFAULT_TYPE_LINE = f"Content-Type: {DEFAULT_CONTENT_TYPE}\r\n"
JSON_CONTENT_TYPE = "application/json"

_FORBIDDEN = str.maketrans("", "", "\r\n\0")

#: A header name is an RFC 9110 token: anything else (a tab, "/", a letter outside ASCII)
#: makes strict clients refuse the whole response, and lenient ones read it their own way.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

#: Final statuses only: a 1xx is interim (RFC 9110 §15.2), and a client that got one as the
#: only answer would wait for the final one forever.
FINAL_STATUSES = range(200, 1000)


def check_status(status: object) -> None:
    """Refuse anything but an int status of a final response."""
    if not isinstance(status, int) or status not in FINAL_STATUSES:
        raise ValueError(
            f"HTTP status must be an int in 200..999, got {status!r}"
            + (" (1xx are interim responses, never an answer)" if status in range(100, 200) else "")
        )


def reason_phrase(status: int) -> str:
    """The standard reason phrase for a status code, ``"Unknown"`` for unregistered ones."""
    return _PHRASES.get(status, "Unknown")


def check_header(name: str, value: str) -> None:
    """Refuse header text that would split the response or break its framing."""
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid HTTP header name {name!r} (letters, digits and !#$%&'*+-.^_`|~)")
    if value.translate(_FORBIDDEN) != value:
        raise ValueError(f"header {name!r} has CR, LF or NUL in its value {value!r}")
    if not value.isascii():
        try:
            value.encode("latin-1")  # what the response head is written in
        except UnicodeEncodeError:
            raise ValueError(
                f"header {name!r} has characters that are not Latin-1 in its value {value!r}: "
                "percent-encode them (or, for a file name, use the filename* form)"
            ) from None


class _DateCache:
    """The ``Date`` header changes once a second; format it once a second.

    The hot path reads it as ``_date.data if _now() < _date.expires else _date.refresh()``:
    one clock read and a compare, no call into Python.
    """

    __slots__ = ("data", "expires", "text")

    def __init__(self) -> None:
        self.expires = 0.0
        self.text = ""
        self.data = b""

    def refresh(self) -> bytes:
        second = int(time.time())
        self.expires = second + 1.0
        self.text = f"Date: {formatdate(second, usegmt=True)}\r\n"
        self.data = self.text.encode("ascii")
        return self.data

    def line(self) -> str:
        if time.time() >= self.expires:
            self.refresh()
        return self.text


_date = _DateCache()
_now = time.time


def to_body_bytes(body: bytes | str | dict | list | None) -> bytes:
    kind = type(body)  # exact types first: one compare each on the hot path
    if kind is bytes:
        return body  # type: ignore[return-value]
    if kind is str:
        return body.encode()  # type: ignore[union-attr]
    if kind is dict or kind is list:
        return json_bytes(body)  # type: ignore[arg-type]
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (dict, list)):
        return json_bytes(body)
    raise TypeError(f"a response body must be bytes, str, dict or list, not {type(body).__name__}")


def _keyword_json_bytes(value: dict | list) -> bytes:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode()


def _positional_json_bytes(value: dict | list) -> bytes:
    # ujson parses keyword arguments slowly (half the cost of a small document); these
    # positions are (obj, ensure_ascii, encode_html_chars, escape_forward_slashes).
    return ujson.dumps(value, False, False, False).encode()


#: JSON as UTF-8, non-ASCII kept as is and ``/`` unescaped (both legal, both shorter). The
#: positional form is used only if this ujson gives the same bytes, checked once at import.
json_bytes = (
    _positional_json_bytes
    if _positional_json_bytes({"/<": "\u00e9"}) == _keyword_json_bytes({"/<": "\u00e9"})
    else _keyword_json_bytes
)


class Response:
    """A complete HTTP response: status, headers and body.

    Args:
        body: bytes, str (sent as UTF-8), or a dict/list (sent as JSON).
        status: the HTTP status code.
        headers: a mapping or (name, value) pairs; pairs may repeat a name (``Set-Cookie``).
        reason: the reason phrase; the standard one by default.
        content_type: shorthand for the Content-Type header.
    """

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(
        self,
        body: bytes | str | dict | list | None = b"",
        status: int = 200,
        headers: HeaderInput = None,
        reason: str | None = None,
        content_type: str | None = None,
    ) -> None:
        if not isinstance(status, int) or status not in FINAL_STATUSES:
            check_status(status)
        if reason is not None and reason.translate(_FORBIDDEN) != reason:
            raise ValueError(f"reason phrase has CR, LF or NUL: {reason!r}")
        self.status = status
        self.reason = reason
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        for name, value in pairs:
            check_header(name, value)
        if isinstance(body, (dict, list)) and content_type is None:
            content_type = JSON_CONTENT_TYPE
        if content_type is not None:
            check_header("Content-Type", content_type)
            pairs = [(n, v) for n, v in pairs if n.lower() != "content-type"]
            pairs.append(("Content-Type", content_type))
        self.headers: list[tuple[str, str]] = pairs
        self.body = to_body_bytes(body)

    def encode(self, *, head: bool = False, connection: str | None = None) -> bytes:
        """The bytes to send; ``head`` drops the body; ``connection``: close or keep-alive."""
        return encode_response(self.status, self.headers, self.body, self.reason, head, connection)

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


_STATUS_LINES: dict[int, str] = {
    code: f"HTTP/1.1 {code} {phrase}\r\n" for code, phrase in _PHRASES.items()
}
#: Headers whose value is the framing's business, not the handler's.
_MANAGED = frozenset(["content-length", "connection", "date", "transfer-encoding"])
#: A 304 leaves out the representation's own metadata: the client keeps what it cached
#: (RFC 9110 §15.4.5).
_NOT_MODIFIED_SKIPS = _MANAGED | {
    "content-type",
    "content-encoding",
    "content-language",
    "content-range",
}


#: Pre-encoded status line and Content-Type, by status then type.
_PREFIXES: dict[int, dict[str, bytes]] = {}
_NONE: dict[str, bytes] = {}
_CONNECTION_LINES = {
    None: b"",
    "close": b"Connection: close\r\n",
    "keep-alive": b"Connection: keep-alive\r\n",
}


def _cache_prefix(status: int, name: str, value: str) -> bytes:
    """Pre-encode status line plus one Content-Type; b"" means: not cacheable, go the long way."""
    if name.lower() != "content-type" or status in NO_BODY or status == 205:
        return b""
    try:
        prefix = f"{_STATUS_LINES[status]}Content-Type: {value}\r\n".encode("latin-1")
    except (KeyError, UnicodeEncodeError):
        return b""
    if name == "Content-Type":
        by_type = _PREFIXES.setdefault(status, {})
        if len(by_type) < 64:  # content types are few; a handler making them up is not cached
            by_type[value] = prefix
    return prefix


#: ``Content-Length`` lines of the small sizes most answers have: a lookup is cheaper than
#: formatting the number, and joining ready pieces cheaper than a format string.
_LENGTH_LINES: dict[int, bytes] = {}


def _length_line(size: int) -> bytes:
    line = b"Content-Length: %d\r\n" % size
    if size < 65536 and len(_LENGTH_LINES) < 4096:
        _LENGTH_LINES[size] = line
    return line


def encode_response(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    reason: str | None = None,
    head: bool = False,
    connection: str | None = None,
    envelope: bytes = b"",
) -> bytes:
    """Frame a response. Headers are trusted here: they were checked when they were set.

    ``envelope`` goes first, in the same copy: Mongrel2's reply address, so that the body is
    copied once on its way out.
    """
    if len(headers) == 1 and reason is None and not head:
        # The common case (only a Content-Type) reuses a pre-encoded head, found by keys whose
        # hashes Python keeps (an int, a str), not by a tuple hashed anew for each response.
        name, value = headers[0]
        prefix = _PREFIXES.get(status, _NONE).get(value) if name == "Content-Type" else None
        if prefix is None:
            prefix = _cache_prefix(status, name, value)
        if prefix:
            size = len(body)
            return b"".join(
                (
                    envelope,
                    prefix,
                    _LENGTH_LINES.get(size) or _length_line(size),
                    _date.data if _now() < _date.expires else _date.refresh(),
                    _CONNECTION_LINES[connection],
                    b"\r\n",
                    body,
                )
            )
    parts, has_type = _head_parts(
        status, headers, reason, _MANAGED if status != 304 else _NOT_MODIFIED_SKIPS
    )
    if status in NO_BODY:
        body = b""
    else:
        if status == 205:  # "reset your form": it MUST NOT carry content (RFC 9110 §15.3.6)
            body = b""
        if not has_type and body:
            parts.append(_DEFAULT_TYPE_LINE)
        parts.append(f"Content-Length: {len(body)}\r\n")
        if head:
            body = b""
    parts.append(_date.line())
    if connection:
        parts.append(f"Connection: {connection}\r\n\r\n")
    else:
        parts.append("\r\n")
    return envelope + _encode_head(parts) + body


def encode_stream_head(
    status: int,
    headers: list[tuple[str, str]],
    reason: str | None,
    chunked: bool,
    connection: str | None,
    length: int | None = None,
) -> bytes:
    """The head of a response whose body follows in pieces: of a known ``length``, chunked,
    or ended by a close."""
    parts, has_type = _head_parts(
        status, headers, reason, _MANAGED if status != 304 else _NOT_MODIFIED_SKIPS
    )
    if status not in NO_BODY:
        if not has_type:
            parts.append(_DEFAULT_TYPE_LINE)
        if length is not None:
            parts.append(f"Content-Length: {length}\r\n")
        elif chunked:
            parts.append("Transfer-Encoding: chunked\r\n")
    parts.append(_date.line())
    if connection:
        parts.append(f"Connection: {connection}\r\n")
    parts.append("\r\n")
    return _encode_head(parts)


def _head_parts(
    status: int, headers: list[tuple[str, str]], reason: str | None, skip: frozenset[str]
) -> tuple[list[str], bool]:
    """Status line and header lines (minus those the framing owns); whether a type was set."""
    line = _STATUS_LINES.get(status) if reason is None else None
    if line is None:
        line = f"HTTP/1.1 {status} {reason or _PHRASES.get(status, 'Unknown')}\r\n"
    parts = [line]
    has_type = False
    for name, value in headers:
        lower = name.lower()
        if lower in skip:
            continue
        if lower == "content-type":
            has_type = True
        parts.append(f"{name}: {value}\r\n")
    return parts, has_type


def _encode_head(parts: list[str]) -> bytes:
    try:
        return "".join(parts).encode("latin-1")
    except UnicodeEncodeError as exc:
        bad = exc.object[max(0, exc.start - 30) : exc.end + 10]
        raise ValueError(
            f"response head has a character that HTTP headers cannot carry (not Latin-1): "
            f"...{bad!r}...; percent-encode or RFC 2047-encode it"
        ) from None


#: Returned by a handler whose response already went out (a stream, a bulk delivery).
ALREADY_SENT = Response(b"", 200)
