"""Payloads: bytes, text or JSON, framed so a receiver in any language knows which it got.

Rules of this module:
- a payload is two ZeroMQ frames, an encoding tag then the data: ``bytes`` (the data as is),
  ``text`` (UTF-8), ``json`` (a UTF-8 JSON document), or in a reply only ``error`` (UTF-8 text
  from a worker whose handler failed);
- a lone frame with no tag is accepted as bytes, so the simplest foreign program may send one;
- ``str`` is text, ``bytes``-like is bytes, anything else must be JSON-able; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ujson

from .errors import PayloadError

BYTES = b"bytes"
TEXT = b"text"
JSON = b"json"
ERROR = b"error"


def encode(value: Any) -> list[bytes]:
    """The frames for ``value``; ``TypeError`` when it is neither bytes, str nor JSON-able."""
    if isinstance(value, bytes):
        return [BYTES, value]
    if isinstance(value, str):
        return [TEXT, value.encode()]
    if isinstance(value, bytearray | memoryview):
        return [BYTES, bytes(value)]
    try:
        data = ujson.dumps(
            value,
            ensure_ascii=False,
            escape_forward_slashes=False,
            allow_nan=False,
            reject_bytes=True,
        )
    except (TypeError, OverflowError) as exc:
        raise TypeError(
            f"a payload is bytes, str or a JSON-able value; this {type(value).__name__} is "
            f"not ({exc})"
        ) from None
    return [JSON, data.encode()]


def encode_error(message: str) -> list[bytes]:
    """The reply frames that tell a client the handler failed, and why."""
    return [ERROR, message.encode("utf-8", "replace")]


def decode(frames: Sequence[bytes]) -> Any:
    """The value the frames carry: ``bytes``, ``str`` or a JSON value."""
    if len(frames) == 1:
        return bytes(frames[0])
    if len(frames) != 2:
        raise PayloadError(f"a payload is 1 frame or 2 (tag, data), got {len(frames)} frames")
    tag, data = frames
    if tag == BYTES:
        return bytes(data)
    try:
        if tag == TEXT:
            return bytes(data).decode()
        if tag == JSON:
            return ujson.loads(data)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PayloadError(f"a {tag.decode()} payload that does not decode: {exc}") from None
    raise PayloadError(
        f"unknown payload encoding {bytes(tag[:32])!r}: expected b'bytes', b'text' or b'json'"
    )


def error_message(frames: Sequence[bytes]) -> str | None:
    """The worker's error text when the frames are an ``error`` reply, else ``None``."""
    if len(frames) == 2 and frames[0] == ERROR:
        return bytes(frames[1]).decode("utf-8", "replace")
    return None
