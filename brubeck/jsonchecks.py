"""What ujson reads that JSON does not have: NaN, Infinity, and numbers too large for a float.

ujson's decoder reads ``NaN`` and ``Infinity``, and a number past 1.8e308 as an infinity. None
is JSON (RFC 8259), and no encoder sends them back, so a request body or a service payload
holding one is refused where it is read. The check looks at the raw bytes first, so that a
document without such a number pays a translate and three searches, not a walk of its value.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["has_non_finite"]

#: Every digit as ``0`` and ``E`` as ``e``: in that shape, the numbers ujson may read as an
#: infinity are plain substrings, found faster than by a regular expression.
_NUMBER_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")


def has_non_finite(data: bytes, value: Any) -> bool:
    """Whether ``value``, decoded by ujson from ``data``, holds a NaN or an infinity."""
    return _may_be_non_finite(data) and _non_finite(value)


def _may_be_non_finite(data: bytes) -> bool:
    """An infinity needs ``NaN``, ``Infinity``, an exponent of three digits or 200 digits
    before the point (199 digits and an exponent up to 99 stay below 1e299). A false yes
    only costs a walk of the value."""
    if b"NaN" in data or b"Infinity" in data:
        return True
    shape = data.translate(_NUMBER_SHAPE)
    return b"e000" in shape or b"e+000" in shape or b"0" * 200 in shape


def _non_finite(value: Any) -> bool:
    """Walked without recursion: a document may nest a thousand levels deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return True
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False
