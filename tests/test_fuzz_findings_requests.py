"""Inputs a coverage-guided fuzzer found to make the request path misbehave, minimised."""

from __future__ import annotations

import pytest

from brubeck.protocol import ProtocolError, parse_fields


@pytest.mark.parametrize(
    "raw",
    [
        b"S 1 / 1:\xbb#0:,",  # the headers
        b"S 1 / 8:1:k,1:\xbb#}0:,",  # a header value
        b"S 1 / 0:}1:\xbb#",  # the body
    ],
)
def test_non_ascii_byte_in_a_tnetstring_integer_is_a_protocol_error(raw: bytes) -> None:
    """tnetstring.pop raised OverflowError for it, which escaped parse_fields and handle_message."""
    with pytest.raises(ProtocolError, match="bad tnetstring"):
        parse_fields(raw)
