"""Argument checks the services share, so that every constructor and call refuses alike.

Rules of this module:
- a count (``hwm``, ``concurrency``, ``retries``) is an ``int``, not a ``bool`` nor a float:
  ``1.5`` or ``True`` is a ``TypeError`` that names the argument, raised where it is given,
  not later deep in ZeroMQ or ``range``;
- a number of seconds is finite; NaN fails every comparison, so each range check is written
  as ``not (low <= value < inf)``, which NaN cannot pass.
"""

from __future__ import annotations

import math


def check_count(name: str, value: object, low: int) -> int:
    """``value`` when it is an ``int`` of at least ``low``; ``TypeError`` or ``ValueError``
    naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} is a count, an int, got {value!r}")
    if value < low:
        raise ValueError(f"need {name} >= {low}, got {value}")
    return value


def check_seconds(name: str, value: float) -> float:
    """``value`` when it is a finite number of seconds, 0 or more; ``ValueError`` naming
    ``name`` otherwise (NaN and infinities included)."""
    if not 0 <= value < math.inf:  # NaN fails every comparison
        raise ValueError(f"need {name} >= 0, got {value}: a finite number of seconds")
    return value
