"""access.py: request ids, the access-log hook and the request-id header."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from brubeck import Brubeck, Response, WebMessageHandler
from brubeck.access import AccessHook, access_hook, new_request_id, request_id_from
from brubeck.testing import TestClient

SHARED = Response("shared")


class Echo(WebMessageHandler):
    def get(self) -> str:
        return self.request.request_id


class Slow(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(0.02)
        return "slow"


class Shared(WebMessageHandler):
    def get(self) -> Response:
        return SHARED


def make_app(**settings: object) -> Brubeck:
    routes = [(r"^/$", Echo), (r"^/slow$", Slow), (r"^/shared$", Shared)]
    return Brubeck(handler_tuples=routes, **settings)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "brubeck.access"]


def test_new_ids_share_a_process_prefix_and_count() -> None:
    first, second = new_request_id(), new_request_id()
    prefix, _, number = first.rpartition("-")
    assert re.fullmatch(r"[0-9a-f]{8}", prefix)
    assert second == f"{prefix}-{int(number) + 1}"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"abc-123", True),
        (b"6f1c2a0e-0b7d-4a2b-9f3a-1c2d3e4f5a6b", True),
        ([b"first", b"second"], True),
        (b"has space", False),
        (b'quote"', False),
        (b"x" * 129, False),
        (b"", False),
        (b"caf\xc3\xa9", False),
    ],
)
def test_a_client_id_is_kept_only_when_sane(value: object, kept: bool) -> None:
    found = request_id_from({b"x-request-id": value})
    expected = (value[0] if isinstance(value, list) else value).decode("latin-1")  # type: ignore[union-attr]
    assert (found == expected) is kept


def test_no_hook_unless_a_setting_asks() -> None:
    assert access_hook({}) is None
    assert access_hook({"access_log": False, "request_id_header": None}) is None
    assert access_hook({"access_log": True}).header is None  # type: ignore[union-attr]
    assert access_hook({"request_id_header": True}).header == "X-Request-Id"  # type: ignore[union-attr]
    assert access_hook({"request_id_header": "X-Trace"}).log is False  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="invalid HTTP header name"):
        AccessHook(header="Bad Name")


async def test_off_by_default_and_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    app = make_app()
    async with TestClient(app) as client:
        response = await client.get("/slow")
        assert app._access_log is None
    assert "x-request-id" not in response.headers
    assert access_lines(caplog) == []


async def test_one_line_per_request_with_every_field(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with TestClient(make_app(access_log=True)) as client:
        echoed = (await client.get("/", headers={"X-Request-Id": "req-7"})).text
        await client.get("/slow")
        await client.head("/slow")
        await client.get("/missing")
    assert echoed == "req-7"
    lines = [r.getMessage() for r in access_lines(caplog)]
    assert len(lines) == 4
    assert re.fullmatch(r'127\.0\.0\.1 "GET /" 200 5 \d+\.\d\dms req-7', lines[0])
    match = re.fullmatch(r'127\.0\.0\.1 "GET /slow" 200 4 (\d+\.\d\d)ms (\S+)', lines[1])
    assert match and float(match[1]) >= 15  # measured from arrival: the handler slept 20 ms
    assert re.fullmatch(r'127\.0\.0\.1 "HEAD /slow" 200 0 .*', lines[2])
    assert re.fullmatch(r'127\.0\.0\.1 "GET /missing" 404 \d+ .*', lines[3])


async def test_the_request_id_header_and_a_shared_response() -> None:
    async with TestClient(make_app(request_id_header="X-Request-Id")) as client:
        first = await client.get("/shared")
        second = await client.get("/shared", headers={"X-Request-Id": "mine"})
    assert first.get_all("x-request-id") != [] and second.get_all("x-request-id") == ["mine"]
    assert SHARED.headers == []  # not mutated
