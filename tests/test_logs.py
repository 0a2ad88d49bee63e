"""logs.py: plain and JSON log lines, and request ids on the app's error logs."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.logs import log_handler
from brubeck.testing import TestClient


class Fine(WebMessageHandler):
    def get(self) -> str:
        return "fine"


class Broken(WebMessageHandler):
    def get(self) -> str:
        raise RuntimeError("broken on purpose")


@pytest.fixture
def attach() -> Iterator[Callable[..., io.StringIO]]:
    """``attach(json_logs=..., level=...)``: Brubeck's log handler on the ``brubeck`` logger,
    writing to the returned buffer (not on the root logger, which belongs to pytest)."""
    logger = logging.getLogger("brubeck")
    added: list[logging.Handler] = []

    def attach(*, json_logs: bool = False, level: int = logging.INFO) -> io.StringIO:
        stream = io.StringIO()
        handler = log_handler(json_logs=json_logs, stream=stream)
        handler.setLevel(level)
        logger.addHandler(handler)
        added.append(handler)
        return stream

    saved = logger.level
    logger.setLevel(logging.INFO)
    yield attach
    for handler in added:
        logger.removeHandler(handler)
    logger.setLevel(saved)


def serve_two_requests() -> None:
    app = Brubeck(handler_tuples=[(r"^/$", Fine), (r"^/broken$", Broken)], access_log=True)
    with TestClient(app) as client:
        assert client.get("/", headers={"X-Request-Id": "ok-1"}).status_code == 200
        assert client.get("/broken", headers={"X-Request-Id": "bad-2"}).status_code == 500


def test_plain_lines(attach: Callable[..., io.StringIO]) -> None:
    output = attach()
    serve_two_requests()
    lines = output.getvalue().splitlines()
    access = [line for line in lines if " brubeck.access[" in line]
    assert len(access) == 2
    assert re.fullmatch(
        r"\S+ \S+ INFO brubeck\.access\[\d+\]: 127\.0\.0\.1 \"GET /\" 200 4 \d+\.\d\dms ok-1",
        access[0],
    )
    assert re.search(r'"GET /broken" 500 \d+ \S+ms bad-2$', access[1])
    error = next(line for line in lines if "ERROR" in line)
    assert "uncaught exception in Broken" in error and error.endswith("request_id=bad-2")
    assert "RuntimeError: broken on purpose" in output.getvalue()  # the traceback follows


def test_json_lines(attach: Callable[..., io.StringIO]) -> None:
    output = attach(json_logs=True)
    serve_two_requests()
    records = [json.loads(line) for line in output.getvalue().splitlines()]
    access = [r for r in records if r["logger"] == "brubeck.access"]
    assert [(r["method"], r["path"], r["status"], r["request_id"]) for r in access] == [
        ("GET", "/", 200, "ok-1"),
        ("GET", "/broken", 500, "bad-2"),
    ]
    first = access[0]
    assert first["bytes"] == 4 and first["remote_addr"] == "127.0.0.1"
    assert isinstance(first["duration_ms"], float) and first["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    error = next(r for r in records if r["level"] == "error")
    assert error["request_id"] == "bad-2"
    assert "uncaught exception in Broken" in error["message"]
    assert "RuntimeError: broken on purpose" in error["exc_info"]


def test_a_level_above_info_hides_access_lines(attach: Callable[..., io.StringIO]) -> None:
    output = attach(level=logging.WARNING)
    serve_two_requests()
    assert "brubeck.access" not in output.getvalue()
    assert "uncaught exception in Broken" in output.getvalue()
