"""errors.py: HTTPError, the exception a handler raises to answer with a status."""

from __future__ import annotations

import pytest

from brubeck.errors import HTTPError


def test_defaults() -> None:
    error = HTTPError()
    assert (error.status, error.message, error.headers) == (500, None, {})
    assert error.reason == "Internal Server Error"
    assert str(error) == "HTTP 500 Internal Server Error"


def test_message_and_headers() -> None:
    error = HTTPError(503, "down for maintenance", {"Retry-After": 30})
    assert error.headers == {"Retry-After": "30"}
    assert str(error) == "HTTP 503 Service Unavailable: down for maintenance"
    assert error.args == (503, "down for maintenance")


def test_unregistered_status_has_an_unknown_reason() -> None:
    assert HTTPError(599).reason == "Unknown"


@pytest.mark.parametrize("status", [99, 1000, -1])
def test_status_out_of_range(status: int) -> None:
    with pytest.raises(ValueError, match=f"got {status}"):
        HTTPError(status)


@pytest.mark.parametrize(
    "headers",
    [{"Retry-After": "5\r\nSet-Cookie: evil=1"}, {"X\nY": "1"}, {"X-A": "a\0b"}, {"": "v"}],
)
def test_headers_that_would_split_the_response_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="header"):
        HTTPError(400, headers=headers)
