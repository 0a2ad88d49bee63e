"""Payloads: bytes, text or JSON, framed so a receiver in any language knows which it got.

Rules of this module:
- a payload is two ZeroMQ frames, an encoding tag then the data: ``bytes`` (the data as is),
  ``text`` (UTF-8), ``json`` (a UTF-8 JSON document), or in a reply only ``error`` (UTF-8 text
  from a worker whose handler failed);
- a lone frame with no tag is accepted as bytes, so the simplest foreign program may send one;
- ``str`` is text, ``bytes``-like is bytes, anything else must be JSON-able; nothing is pickled;
- what ``encode`` sends, ``decode`` reads back: JSON has no NaN or infinities either way, and
  nests at most ``MAX_DEPTH`` containers deep (ujson writes one more than it reads back);
- ``text`` and ``json`` data are strict UTF-8 alike: the encoded form of a surrogate
  (U+D800-U+DFFF), which ujson alone would read, is a ``PayloadError`` in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ujson

from ..jsonchecks import has_non_finite
from .errors import PayloadError

BYTES = b"bytes"
TEXT = b"text"
JSON = b"json"
ERROR = b"error"
#: The deepest JSON ujson's decoder reads back (its encoder writes one level more).
MAX_DEPTH = 1024


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
    # Only a document with that many brackets can be that deep: most pay two counts.
    if data.count("[") + data.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise TypeError(
            f"a JSON payload nests at most {MAX_DEPTH} lists and dicts deep: "
            "the receiving side could not read it back"
        )
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
            return _loads(bytes(data))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PayloadError(f"a {tag.decode()} payload that does not decode: {exc}") from None
    raise PayloadError(
        f"unknown payload encoding {bytes(tag[:32])!r}: expected b'bytes', b'text' or b'json'"
    )


def _loads(data: bytes) -> Any:
    """A JSON document as ``encode`` writes them: valid UTF-8 and finite numbers only."""
    # ujson reads the UTF-8 form of a surrogate (ED A0 80 to ED BF BF, alone or as a CESU-8
    # pair), which UTF-8 never holds, into a lone surrogate; every such sequence starts with
    # ED. So a strict decode, as for a text payload, only for a document holding that byte
    # (as request.py does for JSON bodies); ujson refuses every other malformed UTF-8.
    if b"\xed" in data:
        data.decode("utf-8")  # a UnicodeDecodeError, which decode() makes a PayloadError
    value = ujson.loads(data)
    if has_non_finite(data, value):
        raise ValueError("NaN, Infinity or a number too large for a float is not JSON")
    return value


def _depth(value: Any) -> int:
    """How many lists and dicts deep a value nests (walked without recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list | tuple):
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in item)
    return deepest


def error_message(frames: Sequence[bytes]) -> str | None:
    """The worker's error text when the frames are an ``error`` reply, else ``None``."""
    if len(frames) == 2 and frames[0] == ERROR:
        return bytes(frames[1]).decode("utf-8", "replace")
    return None
