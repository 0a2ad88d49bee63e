"""An HTTP request as Mongrel2 delivered it, decoded only as far as the handler asks.

Rules of this module: nothing is decoded at construction (the hot path pays only for what a
handler reads); header values are Latin-1 text (RFC 9110), the path and query are UTF-8 after
percent-decoding; malformed input raises ``HTTPError(400)`` with the reason, never anything else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

import ujson

from .cookies import parse_cookies
from .errors import HTTPError
from .protocol import HeaderValue, Message

_FORM_TYPE = "application/x-www-form-urlencoded"


def _text(value: bytes) -> str:
    return value.decode("latin-1")


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
        return _text(value) if isinstance(value, bytes) else [_text(v) for v in value]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self._raw.get(name.lower().encode("latin-1"))
        if value is None:
            return default
        return _text(value) if isinstance(value, bytes) else [_text(v) for v in value]

    def getlist(self, name: str) -> list[str]:
        value = self._raw.get(name.lower().encode("latin-1"))
        if value is None:
            return []
        return [_text(value)] if isinstance(value, bytes) else [_text(v) for v in value]

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


class Request:
    """One request: Mongrel2's facts, the client's headers, and the body.

    Built by the app for every message; handlers read it as ``self.message`` (the original
    Brubeck name) or ``self.request``.
    """

    __slots__ = (
        "_arguments",
        "_cookies",
        "_headers",
        "_json",
        "_path",
        "body",
        "conn_id",
        "message",
        "method",
        "sender",
    )

    def __init__(self, message: Message) -> None:
        self.message = message
        self.sender = message.sender
        self.conn_id = message.conn_id
        self.body = message.body
        method = message.headers.get(b"METHOD", b"")
        self.method = (method if type(method) is bytes else method[-1]).decode("latin-1")
        self._path: str | None = None
        self._headers: Headers | None = None
        self._arguments: dict[str, list[str]] | None = None
        self._cookies: dict[str, str] | None = None
        self._json: Any = _UNSET

    def _fact(self, key: bytes, default: str = "") -> str:
        value = self.message.headers.get(key)
        if value is None:
            return default
        return _text(value) if isinstance(value, bytes) else _text(value[-1])

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
    def path(self) -> str:
        """The percent-decoded path (UTF-8); invalid UTF-8 is a 400."""
        if self._path is None:
            raw = self.message.path
            try:
                text = raw.decode("utf-8")
                if "%" in text:
                    text = unquote(text, encoding="utf-8", errors="strict")
            except UnicodeDecodeError:
                raise HTTPError(400, "the request path is not valid UTF-8") from None
            self._path = text
        return self._path

    # The client's side

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.message.headers)
        return self._headers

    @property
    def host(self) -> str:
        return self.headers.first("host") or ""

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

    @property
    def arguments(self) -> dict[str, list[str]]:
        """Query-string and url-encoded form arguments, each name mapped to all its values."""
        if self._arguments is None:
            query = self.message.headers.get(b"QUERY", b"")
            args = parse_query(query if isinstance(query, bytes) else query[-1])
            if self.body and self.content_type == _FORM_TYPE:
                for name, values in parse_query(self.body, "form body").items():
                    args.setdefault(name, []).extend(values)
            self._arguments = args
        return self._arguments

    @property
    def json(self) -> Any:
        """The body parsed as JSON; a malformed body is a 400 naming the problem."""
        if self._json is _UNSET:
            if not self.body:
                raise HTTPError(400, "expected a JSON body, got an empty body")
            try:
                self._json = ujson.loads(self.body)
            except (ValueError, TypeError) as exc:
                raise HTTPError(400, f"malformed JSON body: {exc}") from None
        return self._json

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.message.path!r} conn={self.conn_id!r}>"


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()
