"""Mongrel2's handler wire format, with no I/O.

Rules of this module:
- bytes in, bytes out; nothing here blocks, nothing imports zmq or asyncio;
- connection ids stay the ASCII digits Mongrel2 sent (``b"12"``): they are only echoed back;
- header keys are bytes exactly as sent: UPPER-case keys come from Mongrel2 and can be trusted,
  lower-case keys come from the client; any value may be a list (a repeated header).

Request:  ``SENDER SP CONN_ID SP PATH SP <tnetstring headers><tnetstring body>``
Reply:    ``SENDER SP LEN:ID ID ID, SP BODY`` (an empty BODY closes every target)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import tnetstring

#: A control character: never part of a path a route means (checked after percent-decoding:
#: Mongrel2 passes ``%0A`` on as it came).
CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")

#: Mongrel2 skips a whole reply that names more ids than ``limits.handler_targets`` (128).
MAX_TARGETS = 128

#: The path Mongrel2 uses for its own notices (disconnect, credits).
NOTICE_PATH = b"@*"

HeaderValue = bytes | list[bytes]


class ProtocolError(ValueError):
    """A message that does not follow Mongrel2's handler protocol."""


class Message:
    """One message from Mongrel2: a request, a WebSocket frame, an upload step or a notice."""

    __slots__ = ("body", "conn_id", "headers", "path", "sender")

    def __init__(
        self,
        sender: bytes,
        conn_id: bytes,
        path: bytes,
        headers: dict[bytes, HeaderValue],
        body: bytes,
    ) -> None:
        self.sender = sender
        self.conn_id = conn_id
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def method(self) -> bytes:
        value = self.headers.get(b"METHOD", b"")
        return value if isinstance(value, bytes) else value[-1]

    @property
    def is_notice(self) -> bool:
        """True for Mongrel2's own notices; they are never requests."""
        return self.path == NOTICE_PATH

    def notice_type(self) -> str | None:
        """``"disconnect"``, ``"credits"``, or None when this is not a Mongrel2 notice."""
        if self.path != NOTICE_PATH:
            return None
        try:
            data = json.loads(self.body)
        except (ValueError, RecursionError):
            return None
        kind = data.get("type") if isinstance(data, dict) else None
        return kind if isinstance(kind, str) else None

    def __repr__(self) -> str:
        return f"<Message {self.sender!r} {self.conn_id!r} {self.path!r}>"


def parse(raw: bytes) -> Message:
    """Parse one raw message from Mongrel2's PUSH socket.

    Raises:
        ProtocolError: with a short reason, for anything that is not a well-formed message.
    """
    return Message(*parse_fields(raw))


def parse_fields(raw: bytes) -> tuple[bytes, bytes, bytes, dict[bytes, HeaderValue], bytes]:
    """``parse`` as a ``(sender, conn_id, path, headers, body)`` tuple, without the ``Message``.

    The app's hot path builds its ``Request`` straight from these; an object it would only
    read five fields from costs as much as the rest of the parse.
    """
    try:
        sender, conn_id, path, rest = raw.split(b" ", 3)
        headers, rest = _pop(rest)
        if rest == b"0:,":  # no body: most requests
            body, rest = b"", b""
        else:
            body, rest = _pop(rest)
    except _TNETSTRING_ERRORS:
        _diagnose(raw)
        raise  # pragma: no cover - _diagnose always raises
    if (
        type(headers) is not dict
        or type(body) is not bytes
        or rest
        or not sender
        or not conn_id.isdigit()
    ):
        if type(headers) is bytes:  # the JSON header variant
            headers = _json_headers(headers)
        _check(sender, conn_id, headers, body, rest)
    return sender, conn_id, path, headers, body


_pop = tnetstring.pop
# What tnetstring.pop raises for malformed input: OverflowError too, for a non-ASCII byte in
# an integer (it fails while formatting its own error message).
_TNETSTRING_ERRORS = (ValueError, TypeError, IndexError, KeyError, RecursionError, OverflowError)


def _diagnose(raw: bytes) -> None:
    """Say what is wrong with a message the fast path could not parse."""
    parts = raw.split(b" ", 3)
    if len(parts) != 4:
        raise ProtocolError(
            f"expected 'SENDER ID PATH HEADERS BODY', found {len(parts)} space-separated fields"
        )
    try:
        _headers, rest = _pop(parts[3])
        _pop(rest)
    except _TNETSTRING_ERRORS as exc:
        raise ProtocolError(f"bad tnetstring: {exc}") from None
    raise ProtocolError("unparseable message")  # pragma: no cover


def _check(sender: bytes, conn_id: bytes, headers: object, body: object, rest: bytes) -> None:
    if not sender:
        raise ProtocolError("empty sender")
    if not conn_id.isdigit():
        raise ProtocolError(f"connection id must be decimal digits, got {conn_id[:20]!r}")
    if not isinstance(headers, dict):
        raise ProtocolError(f"headers must be a dict, got {type(headers).__name__}")
    if not isinstance(body, bytes):
        raise ProtocolError(f"body must be a string, got {type(body).__name__}")
    if rest:
        raise ProtocolError(f"{len(rest)} bytes of trailing data after the body")


def _json_headers(text: bytes) -> dict[bytes, HeaderValue]:
    """Decode the JSON header variant (Mongrel2's default protocol) into the tnetstring shape.

    Mongrel2 escapes only ``\\`` and ``"`` there, so control characters and non-UTF-8 bytes may
    arrive raw: decode leniently and give the original bytes back.
    """
    try:
        data = json.loads(text.decode("utf-8", "surrogateescape"), strict=False)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"bad JSON headers: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"JSON headers must be an object, got {type(data).__name__}")
    headers: dict[bytes, HeaderValue] = {}
    try:
        for key, value in data.items():
            name = key.encode("utf-8", "surrogateescape")
            if isinstance(value, list):
                headers[name] = [_json_bytes(item) for item in value]
            else:
                headers[name] = _json_bytes(value)
    except UnicodeEncodeError as exc:
        raise ProtocolError(f"JSON headers escape a lone surrogate: {exc}") from None
    return headers


def _json_bytes(value: Any) -> bytes:
    """Mongrel2 writes every header value as a JSON string; anything else is not its message."""
    if not isinstance(value, str):
        raise ProtocolError(f"JSON header values must be strings, got {value!r:.40}")
    return value.encode("utf-8", "surrogateescape")


def decimal(value: object) -> int | None:
    """A decimal field of Mongrel2's (a connection id, credits, an upload offset or size) as an
    int, or None if it is not plain digits. More digits than any real value has are refused
    too: ``int()`` would only slow down on them, and raise past 4300."""
    if type(value) is bytes and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def header_text(headers: dict[bytes, Any], key: bytes) -> str | None:
    """A client header as Latin-1 text, a repeated one (Mongrel2 sends a list) joined by
    commas as HTTP allows; None if absent or, from a peer that is not Mongrel2, not bytes."""
    value = headers.get(key)
    if type(value) is bytes:
        return value.decode("latin-1")
    if type(value) is list:
        parts = [v.decode("latin-1") for v in value if type(v) is bytes]
        return ", ".join(parts) if parts else None
    return None


def format_reply(sender: bytes, conn_id: bytes, body: bytes) -> bytes:
    """A reply to one connection; an empty body closes it."""
    return b"%s %d:%s, %s" % (sender, len(conn_id), conn_id, body)


def format_address(sender: bytes, conn_id: bytes) -> bytes:
    """The head of a reply to one connection: ``format_reply`` with no body yet."""
    return b"%s %d:%s, " % (sender, len(conn_id), conn_id)


def checked_conn_id(conn_id: bytes | int) -> bytes:
    """A connection id as a reply names it; ValueError unless it is a decimal number (Mongrel2
    cannot parse a reply with another, and says nothing)."""
    cid = conn_id if isinstance(conn_id, bytes) else b"%d" % conn_id
    if not cid.isdigit():
        raise ValueError(f"connection ids are decimal numbers, got {conn_id!r}")
    return cid


def format_deliver(sender: bytes, conn_ids: Iterable[bytes | int], body: bytes) -> list[bytes]:
    """One reply to many connections, split into messages of at most MAX_TARGETS ids each."""
    ids = [checked_conn_id(cid) for cid in conn_ids]
    messages = []
    for start in range(0, len(ids), MAX_TARGETS):
        targets = b" ".join(ids[start : start + MAX_TARGETS])
        messages.append(b"%s %d:%s, %s" % (sender, len(targets), targets, body))
    return messages


def format_close(sender: bytes, conn_ids: Iterable[bytes | int]) -> list[bytes]:
    """Close connections: Mongrel2 flushes what is queued for them, then hangs up."""
    return format_deliver(sender, conn_ids, b"")


def format_ctl(sender: bytes, conn_id: bytes, **ctl: Any) -> bytes:
    """An ``X`` control reply, e.g. ``keep_alive=True``, ``cancel=True`` or ``credits=4096``.

    Keyword names use ``_`` for Mongrel2's ``-`` (``keep_alive`` becomes ``keep-alive``).
    """
    if not ctl:
        raise ValueError("format_ctl needs at least one control, e.g. keep_alive=True")
    payload = {key.replace("_", "-").encode(): value for key, value in ctl.items()}
    body = tnetstring.dumps([b"ctl", payload])
    targets = b"X " + conn_id
    return b"%s %d:%s, %s" % (sender, len(targets), targets, body)
