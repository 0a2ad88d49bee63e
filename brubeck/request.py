"""An HTTP request as Mongrel2 delivered it, decoded only as far as the handler asks.

Rules of this module: nothing is decoded at construction (the hot path pays only for what a
handler reads); header values are Latin-1 text (RFC 9110), the path and query are UTF-8 after
percent-decoding; malformed input raises ``HTTPError(400)`` with the reason, and input over a
``BodyLimits`` limit ``HTTPError(413)`` naming the setting, never anything else.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import ujson

from .access import request_id_from
from .bodystream import BodyStream
from .conditional import is_fresh, none_match_holds, preconditions_hold
from .cookies import parse_cookies
from .errors import HTTPError
from .jsonchecks import has_non_finite
from .multipart import Fields, Files, UploadedFile, parse_boundary, parse_multipart
from .protocol import CONTROL_CHARACTER, HeaderValue, Message

_new_object = object.__new__

_FORM_TYPE = "application/x-www-form-urlencoded"
_MULTIPART_TYPE = "multipart/form-data"


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _raw_list(value: Any) -> list[bytes]:
    """The byte strings of a repeated header (see ``_texts``)."""
    return [v for v in value if isinstance(v, bytes)] if isinstance(value, list) else []


def _texts(value: Any) -> list[str]:
    """A repeated header's values. Mongrel2 only sends strings; anything else (a peer that
    is not Mongrel2) is left out rather than failing the request's answer."""
    return [_text(v) for v in _raw_list(value)]


class Headers(Mapping[str, Any]):
    """The client's request headers, looked up case-insensitively.

    A header sent once is a ``str``; a repeated one is a ``list[str]`` (Mongrel2 keeps at most
    five). ``getlist`` always gives a list. Mongrel2's own upper-case keys are not client headers:
    read them through ``Request`` properties instead (``method``, ``pattern``, ``remote_addr``…).
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: dict[bytes, HeaderValue]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str | list[str]:
        value = self._raw[name.lower().encode("latin-1")]
        if isinstance(value, bytes):
            return _text(value)
        return _texts(value)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self._raw.get(name.lower().encode("latin-1"))
        if value is None:
            return default
        return _text(value) if isinstance(value, bytes) else _texts(value)

    def getlist(self, name: str) -> list[str]:
        value = self._raw.get(name.lower().encode("latin-1"))
        if value is None:
            return []
        return [_text(value)] if isinstance(value, bytes) else _texts(value)

    def first(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header that may have been repeated."""
        values = self.getlist(name)
        return values[0] if values else default

    def _client_keys(self) -> Iterator[bytes]:
        return (key for key in self._raw if not key.isupper())

    def __iter__(self) -> Iterator[str]:
        return (_text(key) for key in self._client_keys())

    def __len__(self) -> int:
        return sum(1 for _ in self._client_keys())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower().encode("latin-1") in self._raw

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


def parse_query(raw: bytes, what: str = "query string") -> dict[str, list[str]]:
    """Decode ``a=1&b=2`` pairs as UTF-8, raw or percent-encoded; invalid UTF-8 is a 400.

    Clients such as curl send non-ASCII query and form bytes unescaped, so the bytes are
    decoded as UTF-8 before the percent-escapes (as Latin-1 text they would become mojibake).
    """
    if not raw:
        return {}
    try:
        return parse_qs(
            raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise HTTPError(400, f"the {what} is not valid UTF-8, raw or percent-encoded") from None
    except ValueError as exc:
        raise HTTPError(400, f"malformed {what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How much of a request body the app agrees to parse; each is an app setting of that name.

    Args:
        max_body_size: the largest body, in bytes (10 MiB). A larger ``Content-Length`` is a
            413 before any handler runs; a larger body read through ``form``, ``files``,
            ``json`` or ``arguments`` is a 413 too, also when Mongrel2 spooled it to a
            temporary file (over its ``limits.content_length``): such a body is read from
            the file on first use. ``request.upload`` takes larger files without reading them.
        max_form_parts: the most fields (url-encoded pairs or multipart parts) in a form
            body (1000); more is a 413.
        max_form_fields_size: the most bytes of form field values, files excluded (1 MiB);
            more is a 413.
    """

    max_body_size: int = 10 * 1024 * 1024
    max_form_parts: int = 1000
    max_form_fields_size: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_body_size", "max_form_parts", "max_form_fields_size"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"the {name} setting must be an int >= 0, got {value!r}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> BodyLimits:
        """The limits an app's settings ask for, defaults for the ones they leave out."""
        names = ("max_body_size", "max_form_parts", "max_form_fields_size")
        return cls(**{name: settings[name] for name in names if name in settings})


DEFAULT_LIMITS = BodyLimits()


#: The usual methods as text without decoding them; others are decoded.
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class Request:
    """One request: Mongrel2's facts, the client's headers, and the body.

    Built by the app for every message, with the app's ``BodyLimits``; handlers read it as
    ``self.message`` (the original Brubeck name) or ``self.request``.
    """

    __slots__ = (
        "_arguments",
        "_body",
        "_cookies",
        "_headers",
        "_json",
        "_message",
        "_parsed",
        "_path",
        "_request_id",
        "_stream",
        "conn_id",
        "epoch",
        "limits",
        "method",
        "raw_headers",
        "raw_path",
        "sender",
        "started",
        "upload",
    )
    _request_id: str
    #: ``body_stream``'s, made on first use (or set by a streamed upload)
    _stream: BodyStream
    #: ``perf_counter()`` at arrival; set only while the app keeps an access log.
    started: float

    def __init__(
        self, message: Message, limits: BodyLimits = DEFAULT_LIMITS, epoch: int = 0
    ) -> None:
        self._fill(
            message.sender,
            message.conn_id,
            message.path,
            message.headers,
            message.body,
            limits,
            epoch,
            message,
        )

    @classmethod
    def from_fields(
        cls,
        sender: bytes,
        conn_id: bytes,
        path: bytes,
        headers: dict[bytes, HeaderValue],
        body: bytes,
        limits: BodyLimits,
        epoch: int,
    ) -> Request:
        """A request from ``protocol.parse_fields``: the hot path makes no ``Message``."""
        request = _new_object(cls)
        request._fill(sender, conn_id, path, headers, body, limits, epoch, None)
        return request

    def _fill(
        self,
        sender: bytes,
        conn_id: bytes,
        path: bytes,
        headers: dict[bytes, HeaderValue],
        body: bytes,
        limits: BodyLimits,
        epoch: int,
        message: Message | None,
    ) -> None:
        """Every attribute, for both constructors; ``message`` is None until it is asked for."""
        self.sender = sender
        self.conn_id = conn_id
        #: the path as Mongrel2 sent it (``path`` is the decoded text)
        self.raw_path = path
        #: Mongrel2's header dict: its own upper-case keys and the client's lower-case ones
        self.raw_headers = headers
        self._body: bytes | None = body
        self.limits = limits
        #: the app's ``epoch`` when this arrived: once Mongrel2 goes away (and a new one reuses
        #: its connection ids), nothing more is sent for this request; -1 once that was logged
        self.epoch = epoch
        self._message = message
        #: the file Mongrel2 streamed a large or chunked body into (``uploads.Upload``), or None
        self.upload: Any = None
        method: Any = headers.get(b"METHOD", b"")
        if type(method) is not bytes:
            method = method[-1]  # repeated: the last; not bytes at all: refused by the caller
        self.method = _METHODS.get(method) or method.decode("latin-1")
        self._path: str | None = None
        self._headers: Headers | None = None
        self._arguments: dict[str, list[str]] | None = None
        self._cookies: dict[str, str] | None = None
        self._json: Any = _UNSET
        self._parsed: tuple[Fields, Files] | None = None

    @property
    def message(self) -> Message:
        """The request as Mongrel2's ``Message`` (made on first use)."""
        message = self._message
        if message is None:
            # A spooled upload's message has no body; ``_body`` may hold the file's by now.
            body = self._body if self.upload is None and self._body is not None else b""
            message = Message(self.sender, self.conn_id, self.raw_path, self.raw_headers, body)
            self._message = message
        return message

    def _fact(self, key: bytes, default: str = "") -> str:
        value = self.raw_headers.get(key)
        if isinstance(value, bytes):
            return _text(value)
        values = _texts(value)
        return values[-1] if values else default

    # Mongrel2's facts (upper-case keys, trusted)

    @property
    def version(self) -> str:
        return self._fact(b"VERSION", "HTTP/1.1")

    @property
    def uri(self) -> str:
        """The request target as sent: raw path plus ``?query``, without any fragment."""
        return self._fact(b"URI")

    @property
    def query_string(self) -> str:
        return self._fact(b"QUERY")

    @property
    def pattern(self) -> str:
        """The Mongrel2 route pattern that sent this request here."""
        return self._fact(b"PATTERN")

    @property
    def scheme(self) -> str:
        return self._fact(b"URL_SCHEME", "http")

    @property
    def remote_addr(self) -> str:
        return self._fact(b"REMOTE_ADDR")

    @property
    def request_id(self) -> str:
        """An id for logs and for the client: its sane ``X-Request-Id``, else a new one.

        Made on first read, so requests nobody asks about pay nothing for it.
        """
        try:
            return self._request_id
        except AttributeError:
            self._request_id = request_id_from(self.raw_headers)
            return self._request_id

    @property
    def path(self) -> str:
        """The percent-decoded path (UTF-8); invalid UTF-8 is a 400.

        So is an encoded control character (``%0A``, ``%00``…): no route means one, and a
        newline would pass a pattern's ``$`` (which matches before a final newline) or end a
        ``.*`` group, so ``/admin%0A`` would reach ``^/admin$``.
        """
        if self._path is None:
            raw = self.raw_path
            try:
                text = raw.decode("utf-8")
                if "%" in text:
                    text = unquote(text, encoding="utf-8", errors="strict")
                    if CONTROL_CHARACTER.search(text):
                        raise HTTPError(
                            400, "the request path holds a control character (%00-%1F, %7F)"
                        )
            except UnicodeDecodeError:
                raise HTTPError(400, "the request path is not valid UTF-8") from None
            self._path = text
        return self._path

    # The client's side

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.raw_headers)
        return self._headers

    @property
    def host(self) -> str:
        """The Host header: a 400 when it was sent twice or is not a host[:port] (RFC 9112
        §3.2), since absolute URLs are made from it. Checked here, where it is read, so that
        requests that never read it pay nothing; empty when the client sent none."""
        value = self.raw_headers.get(b"host")
        if value is None:
            return ""
        if type(value) is not bytes:
            raise HTTPError(400, "the Host header was sent more than once")
        if _HOST.fullmatch(value) is None:
            raise HTTPError(400, "the Host header is not a host[:port]")
        return value.decode("latin-1")

    @property
    def url(self) -> str:
        """The full URL the client asked for, as far as the Host header tells."""
        return f"{self.scheme}://{self.host}{self.uri}"

    @property
    def content_type(self) -> str:
        """The media type, lower-cased, without parameters such as ``charset``."""
        value = self.headers.first("content-type") or ""
        return value.split(";", 1)[0].strip().lower()

    @property
    def is_json(self) -> bool:
        ctype = self.content_type
        return ctype == "application/json" or ctype.endswith("+json")

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the response (HTTP/1.1 rules, RFC 9112 §9.3)."""
        tokens = {
            t.strip().lower() for v in self.headers.getlist("connection") for t in v.split(",")
        }
        if "close" in tokens:
            return False
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return True

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            cookies: dict[str, str] = {}
            for header in self.headers.getlist("cookie"):
                for name, value in parse_cookies(header).items():
                    cookies.setdefault(name, value)
            self._cookies = cookies
        return self._cookies

    def get_cookie(self, name: str, default: str | None = None) -> str | None:
        return self.cookies.get(name, default)

    def is_fresh(
        self, etag: str | None = None, last_modified: datetime | float | str | None = None
    ) -> bool:
        """Whether the client's cached copy is current, so a 304 may answer it.

        For handlers that can tell without building the body: compare the client's
        ``If-None-Match`` with ``etag`` (a quoted tag, ``'"v7"'``) or, without one, its
        ``If-Modified-Since`` with ``last_modified``. Only GET and HEAD are ever fresh. The
        app answers 304 on its own for 200 responses that carry these headers.
        """
        if self.method not in ("GET", "HEAD"):
            return False
        return is_fresh(self.raw_headers, etag, last_modified)

    def check_preconditions(
        self, etag: str | None = None, last_modified: datetime | float | str | None = None
    ) -> None:
        """Refuse an update made from an outdated copy: ``HTTPError(412)`` when the client's
        ``If-Match`` (compared strongly) or ``If-Unmodified-Since`` does not fit the current
        ``etag`` / ``last_modified``, or, for a method other than GET and HEAD, when its
        ``If-None-Match`` names the current version or is ``*`` and one exists (pass no
        ``etag`` and no ``last_modified`` for a resource that does not exist yet). Call it
        before changing anything (optimistic locking, "create only")."""
        if not preconditions_hold(self.raw_headers, etag, last_modified):
            raise HTTPError(412, "the resource changed since the client last read it")
        if self.method not in ("GET", "HEAD") and not none_match_holds(
            self.raw_headers, etag, last_modified
        ):
            raise HTTPError(412, "the client's If-None-Match names the current version")

    # The body

    @property
    def body(self) -> bytes:
        """The request body; a body Mongrel2 spooled to a file is read from it on first use.

        A spooled body over ``max_body_size`` is a 413 here; read ``upload`` instead to stream
        a large one from disk.
        """
        if self._body is None:
            limit = self.limits.max_body_size
            size = self.upload.size
            if size > limit:
                raise HTTPError(413, _too_large(f"an uploaded body of {size} bytes", limit))
            self._body = self.upload.read()
        return self._body

    @property
    def body_stream(self) -> BodyStream:
        """The body piece by piece: ``async for piece in request.body_stream``.

        For a handler with ``stream_request_body = True`` behind Mongrel2's ``upload.stream=1``
        the pieces come as the client sends them, and the client is held back while the
        handler does not read. Otherwise the body is already here (inline, or in a file) and
        is read from there, so the same code works in every mode.
        """
        try:
            return self._stream
        except AttributeError:  # not set on the hot path: most handlers never ask
            pass
        upload = self.upload
        if upload is None:
            stream = BodyStream.of_bytes(self._body or b"")
        else:
            stream = BodyStream.of_file(upload.open, upload.size)
            upload.close_on_discard(stream.close)
        self._stream = stream
        return stream

    @property
    def _body_is_live(self) -> bool:
        """Whether a ``stream_request_body`` handler reads this body as it arrives."""
        return getattr(self.upload, "live", False)

    def set_upload(self, upload: Any) -> None:
        """Attach the file Mongrel2 spooled this request's body into (the app does this)."""
        self.upload = upload
        self._body = None
        # What was read from the body before (accept_upload() on a streamed upload's first
        # piece) came from part of it only.
        self._arguments = None
        self._json = _UNSET
        self._parsed = None
        with contextlib.suppress(AttributeError):
            del self._stream

    def check_content_length(self) -> None:
        """Refuse, before any handler runs, a body the client declares over ``max_body_size``."""
        headers = self.raw_headers
        declared = headers.get(b"content-length")
        if declared is None or self.upload is not None:
            return  # a body spooled to a file (by Mongrel2 or by the app) is not in memory
        limit = self.limits.max_body_size
        for value in [declared] if isinstance(declared, bytes) else _raw_list(declared):
            if declares_over(value, limit):
                raise HTTPError(413, _too_large(f"Content-Length {value[:30].decode()}", limit))

    def _check_body_size(self) -> None:
        if len(self.body) > self.limits.max_body_size:
            raise HTTPError(413, _too_large(f"{len(self.body)} bytes", self.limits.max_body_size))

    @property
    def form(self) -> dict[str, list[str]]:
        """Fields of a url-encoded or ``multipart/form-data`` body, each with all its values."""
        return (self._parsed or self._parse_body())[0]

    @property
    def files(self) -> dict[str, list[UploadedFile]]:
        """Files of a ``multipart/form-data`` body, by field name, in the order sent."""
        return (self._parsed or self._parse_body())[1]

    def _parse_body(self) -> tuple[Fields, Files]:
        if self._body_is_live:  # stream_request_body: the handler reads (and parses) it
            self._parsed = ({}, {})
            return self._parsed
        # The type first: a spooled body of another type (a file PUT) is never read for fields.
        ctype = self.content_type if self._body is None or self._body else ""
        limits = self.limits
        if ctype == _FORM_TYPE:
            self._check_body_size()
            body = self.body
            # Fields, not separators: "a=1&" and "a=1&&b=2" hold one and two.
            pieces = body.split(b"&") if body.count(b"&") >= limits.max_form_parts else ()
            if len(pieces) - pieces.count(b"") > limits.max_form_parts:
                raise HTTPError(
                    413,
                    f"the form has more than {limits.max_form_parts} fields "
                    "(the max_form_parts setting)",
                )
            if len(body) > limits.max_form_fields_size:
                raise HTTPError(
                    413,
                    f"the form body is {len(body)} bytes, more than the max_form_fields_size "
                    f"setting ({limits.max_form_fields_size}); send large values as files",
                )
            parsed: tuple[Fields, Files] = (parse_query(body, "form body"), {})
        elif ctype == _MULTIPART_TYPE:
            self._check_body_size()
            body = self.body
            boundary = parse_boundary(self.headers.first("content-type") or "")
            parsed = parse_multipart(
                body,
                boundary,
                max_parts=limits.max_form_parts,
                max_fields_size=limits.max_form_fields_size,
            )
        else:
            parsed = ({}, {})
        self._parsed = parsed
        return parsed

    @property
    def arguments(self) -> dict[str, list[str]]:
        """Query-string and form arguments (url-encoded or multipart fields), with all values.

        Query values come first, then the form's.
        """
        if self._arguments is None:
            query = self.raw_headers.get(b"QUERY", b"")
            args = parse_query(query if isinstance(query, bytes) else query[-1])
            body = self._body  # None: spooled to a file, which the form parse reads if it is one
            if not self._body_is_live and (body is None or body):
                for name, values in self.form.items():
                    args.setdefault(name, []).extend(values)
            self._arguments = args
        return self._arguments

    @property
    def json(self) -> Any:
        """The body parsed as JSON; a malformed body is a 400 naming the problem."""
        if self._json is _UNSET:
            if not self.body:
                raise HTTPError(400, "expected a JSON body, got an empty body")
            self._check_body_size()
            body = self.body
            try:
                value = ujson.loads(body)
            except (ValueError, TypeError) as exc:
                raise HTTPError(400, f"malformed JSON body: {exc}") from None
            # ujson lets a lone UTF-16 surrogate through (``"\ud800"``, or its UTF-8 bytes):
            # text no encoder takes back, so the handler would fail later, as a 500.
            if (b"\\ud" in body or b"\\uD" in body or b"\xed" in body) and _lone_surrogate(value):
                raise HTTPError(
                    400, "malformed JSON body: a string holds a lone surrogate (U+D800-U+DFFF)"
                )
            # ujson also reads NaN and Infinity, and 1e999 as infinity: not JSON (RFC 8259),
            # and a number no JSON encoder can send back.
            if has_non_finite(body, value):
                raise HTTPError(
                    400, "malformed JSON body: NaN, Infinity or a number too large for a float"
                )
            self._json = value
        return self._json

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_path!r} conn={self.conn_id!r}>"


def _lone_surrogate(value: Any) -> bool:
    """Whether a decoded JSON document has a string (or key) that is not valid Unicode."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif kind is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


def declares_over(value: bytes, limit: int) -> bool:
    """Whether a Content-Length value is digits that declare more than ``limit`` bytes."""
    value = value.strip(b" \t")  # Mongrel2 keeps a trailing space in the value
    # More digits than any real body has would only slow int() down (or break it).
    return value.isdigit() and (len(value) > 18 or int(value) > limit)


#: host[:port] as RFC 3986 writes it: a reg-name or IPv4 address, or an IP literal in brackets.
_HOST = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=%-]*|\[[0-9A-Fa-f:.vV]+\])(?::[0-9]*)?")


def framing_problem(headers: dict[bytes, Any]) -> HTTPError | None:
    """The error for a body framed so that Mongrel2 and a handler could read it differently,
    to be answered with a close; None when it is framed plainly.

    Mongrel2 takes ``Content-Length: +5``, ``5, 5`` and repeated headers, and passes on a
    transfer coding other than chunked without reading its body (what follows is then read
    as the next request). RFC 9112 §6.3: a length that is not one decimal number is a 400,
    a transfer coding the server does not know a 501, and the connection closes either way.
    """
    length = headers.get(b"content-length")
    if length is not None and (type(length) is not bytes or not length.strip(b" \t").isdigit()):
        return HTTPError(400, "Content-Length must be one decimal number")
    coding = headers.get(b"transfer-encoding")
    if coding is None:
        return None
    if type(coding) is not bytes:
        return HTTPError(400, "Transfer-Encoding must be sent once")
    if coding.strip(b" \t").lower() != b"chunked":
        return HTTPError(501, "chunked is the only transfer coding taken")
    return None


def _too_large(what: str, limit: int) -> str:
    return f"the request body ({what}) is larger than the max_body_size setting ({limit} bytes)"


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()


def connection_policy(request: Request) -> tuple[str | None, bool]:
    """The Connection header to send and whether to close after the response."""
    headers = request.raw_headers
    version = headers.get(b"VERSION")
    if b"connection" not in headers and version == b"HTTP/1.1":
        return None, False
    keep = request.keep_alive
    if version == b"HTTP/1.0":
        return ("keep-alive", False) if keep else ("close", True)
    return (None, False) if keep else ("close", True)
