"""WebSocket frames as they cross Mongrel2 (RFC 6455), with no I/O.

Rules of this module:
- bytes in, bytes out; nothing here blocks, nothing imports zmq or asyncio;
- incoming messages are already unmasked and reassembled by Mongrel2: all the handler sees of
  the first frame header is its byte 0, in the ``FLAGS`` header (``"0x81"``);
- outgoing frames are built whole here, unmasked (servers never mask), any payload length;
- a peer's mistake raises ``FrameError`` carrying the close code to answer it with.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Iterable
from enum import IntEnum

#: The GUID RFC 6455 appends to ``Sec-WebSocket-Key`` before hashing (section 1.3).
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Control frames carry at most 125 bytes (RFC 6455 section 5.5).
MAX_CONTROL_PAYLOAD = 125

# An RFC 9110 token (section 5.6.2): what a subprotocol name is made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """Close codes with a meaning in RFC 6455 section 7.4.1 (and the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: "the close frame had no code"
    ABNORMAL = 1006  # never sent: "the connection dropped without a close frame"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011


_DATA_OPCODES = frozenset({Opcode.TEXT, Opcode.BINARY})
_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)
# Codes defined for use on the wire; 1004-1006 and 1015 must never appear in a close frame.
_WIRE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class FrameError(ValueError):
    """A frame the peer should not have sent; ``code`` is the close code that answers it."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (sent or received)."""
    return code in _WIRE_CODES or 3000 <= code <= 4999


def parse_flags(value: bytes | list[bytes] | None) -> int:
    """The opcode of a message from Mongrel2's ``FLAGS`` header (``b"0x81"`` → 1).

    Raises:
        FrameError: 1002 for a missing or malformed value, reserved bits (no extension is
            ever negotiated), a continuation or an unknown opcode.
    """
    if isinstance(value, list):
        value = value[-1] if value else None
    # Not bytes: a forged tnetstring number or dict, not the b"0x81" Mongrel2 sends.
    if type(value) is not bytes or value[:2] not in (b"0x", b"0X"):
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"bad FLAGS header {value!r}")
    try:
        flags = int(value, 16)
    except ValueError:
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"bad FLAGS header {value!r}") from None
    if not 0 <= flags <= 0xFF:  # one byte, the frame's first: more is not Mongrel2's
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"bad FLAGS header {value!r}")
    if flags & 0x70:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
    opcode = flags & 0x0F
    if opcode not in _KNOWN_OPCODES or opcode == Opcode.CONTINUATION:
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"unexpected opcode {opcode:#x}")
    return opcode


def is_data(opcode: int) -> bool:
    return opcode in _DATA_OPCODES


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One unmasked frame: byte 0, a 7-, 16- or 64-bit length, the payload."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes((first, size))
    elif size < 0x10000:
        head = struct.pack("!BBH", first, 126, size)
    else:
        head = struct.pack("!BBQ", first, 127, size)
    return head + payload


def encode_message(message: str | bytes, binary: bool = False) -> bytes:
    """A whole message as one frame: text for ``str``, binary for ``bytes`` or when asked."""
    if isinstance(message, str):
        return encode_frame(Opcode.BINARY if binary else Opcode.TEXT, message.encode("utf-8"))
    return encode_frame(Opcode.BINARY, as_payload(message))


def as_payload(data: object) -> bytes:
    """Bytes-like data as bytes; anything else is a TypeError (``bytes(5)`` is five NULs)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a WebSocket message is str, bytes, dict or list, got {type(data).__name__}")


def decode_text(payload: bytes) -> str:
    """A text message's payload as str; invalid UTF-8 is a ``FrameError`` 1007."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(CloseCode.INVALID_DATA, f"text message is not UTF-8: {exc}") from None


def encode_close(code: int | None = CloseCode.NORMAL, reason: str = "") -> bytes:
    """The payload of a close frame; ``code=None`` (only with no reason) gives an empty one.

    Raises:
        ValueError: a code that may not be sent, or a reason over 123 bytes of UTF-8.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"{code} is not a close code that may be sent (1000-1014, 3000-4999)")
    data = reason.encode("utf-8")
    if len(data) > MAX_CONTROL_PAYLOAD - 2:
        raise ValueError(f"a close reason is at most 123 bytes of UTF-8, got {len(data)}")
    return struct.pack("!H", code) + data


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a received close frame; no code at all reads as 1005.

    Raises:
        FrameError: 1002 for a one-byte payload or a code that may not be sent, 1007 for a
            reason that is not UTF-8.
    """
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "a close payload of one byte")
    (code,) = struct.unpack_from("!H", payload)
    if not is_valid_close_code(code):
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "the close reason is not UTF-8") from None
    return code, reason


def decode_frame(data: bytes, offset: int = 0) -> tuple[bool, int, bytes, int] | None:
    """Read one frame at ``offset``: ``(fin, opcode, payload, next_offset)``, or None if cut.

    For whoever reads frames off a stream (tests, clients); masked frames are unmasked.
    """
    if len(data) - offset < 2:
        return None
    first, second = data[offset], data[offset + 1]
    size = second & 0x7F
    pos = offset + 2
    if size == 126:
        if len(data) - pos < 2:
            return None
        (size,) = struct.unpack_from("!H", data, pos)
        pos += 2
    elif size == 127:
        if len(data) - pos < 8:
            return None
        (size,) = struct.unpack_from("!Q", data, pos)
        pos += 8
    mask = b""
    if second & 0x80:
        if len(data) - pos < 4:
            return None
        mask = data[pos : pos + 4]
        pos += 4
    if len(data) - pos < size:
        return None
    payload = data[pos : pos + size]
    if mask:
        payload = _unmask(payload, mask)
    return bool(first & 0x80), first & 0x0F, payload, pos + size


def _unmask(payload: bytes, mask: bytes) -> bytes:
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


def accept_key(key: bytes | str) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``: what Mongrel2 puts in the body."""
    if isinstance(key, str):
        key = key.encode("ascii")
    return base64.b64encode(hashlib.sha1(key.strip() + _ACCEPT_GUID).digest())


def is_client_key(value: str) -> bool:
    """Whether a ``Sec-WebSocket-Key`` is base64 for 16 bytes (RFC 6455 section 4.2.1 item 5)."""
    try:
        return len(base64.b64decode(value.strip(" \t"), validate=True)) == 16
    except ValueError:  # not base64, or not ASCII
        return False


def is_accept_key(value: bytes) -> bool:
    """Whether a handshake body looks like the accept key Mongrel2 computes (28 base64 bytes)."""
    if len(value) != 28 or not value.endswith(b"="):
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 20
    except ValueError:
        return False


def handshake_reply(
    accept: bytes, subprotocol: str | None = None, headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The ``101 Switching Protocols`` answer to a handshake Mongrel2 passed on.

    ``headers`` are extra lines (``Set-Cookie``…), already checked for CR/LF by the handler.
    """
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept,
    ]
    if subprotocol:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1"))
    for name, value in headers:
        lines.append(f"{name}: {value}".encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def parse_subprotocols(values: list[str]) -> list[str]:
    """The protocols a client offers, from its ``Sec-WebSocket-Protocol`` header lines.

    Raises:
        ValueError: an offer that is not an RFC 9110 token (CR, LF, spaces, quotes…).
    """
    offered = [name.strip(" \t") for value in values for name in value.split(",")]
    if any(name and _TOKEN.fullmatch(name) is None for name in offered):
        raise ValueError("Sec-WebSocket-Protocol offers a name that is not a token")
    return [name for name in offered if name]
