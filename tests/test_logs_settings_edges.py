"""Adversarial cases for access.py, settings.py and reloader.py: what the docs promise.

A docstring starting with "Was a bug." says what went wrong before its fix.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from brubeck import Brubeck, Response, WebMessageHandler
from brubeck.files import INLINE_LIMIT
from brubeck.reloader import Reloader
from brubeck.settings import SettingsError, apply_to_app, from_environment
from brubeck.testing import TestClient


class Slow(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(0.45)
        return "late"


class Chunked(WebMessageHandler):
    async def get(self) -> None:
        self.write("first")
        await self.flush()
        self.write("second")


class BigFile(WebMessageHandler):
    path = ""

    async def get(self) -> Response:
        return await self.send_file(self.path)


class NoContent(WebMessageHandler):
    def get(self) -> Response:
        return Response(b"leftover", 204)  # a 204 never carries a body: none goes out


async def _first_http_message(client: TestClient, path: str, conn_id: int) -> bytes:
    """The first HTTP answer the app sent for ``path`` (keep-alive ctl messages skipped)."""
    await client.send_raw(client.build_message("GET", path, conn_id=conn_id))
    while True:
        data = await client.receive(conn_id)
        if data.startswith(b"HTTP/"):
            return data


# settings.py


async def test_request_timeout_from_the_environment_is_obeyed() -> None:
    """Was a bug. BRUBECK_REQUEST_TIMEOUT must time out awaiting handlers (504), not be ignored."""
    app = Brubeck(handler_tuples=[(r"^/slow$", Slow)], keepalive_interval=0.15)
    apply_to_app(app, from_environment({"BRUBECK_REQUEST_TIMEOUT": "0.1"}))
    async with TestClient(app) as client:
        head = await _first_http_message(client, "/slow", 41)
    assert head.startswith(b"HTTP/1.1 504 "), head[:40]


async def test_request_timeout_given_in_code_is_obeyed() -> None:
    """The control for the test above: the same timeout given to the constructor works."""
    app = Brubeck(handler_tuples=[(r"^/slow$", Slow)], keepalive_interval=0.15, request_timeout=0.1)
    async with TestClient(app) as client:
        head = await _first_http_message(client, "/slow", 42)
    assert head.startswith(b"HTTP/1.1 504 "), head[:40]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRUBECK_REQUEST_ID_HEADER", "Bad Name"),
        ("BRUBECK_REQUEST_ID_HEADER", "X-Id:"),
        ("BRUBECK_PULL_ADDR", "localhost:9999"),
        ("BRUBECK_PUB_ADDR", "127.0.0.1:9998"),
    ],
)
def test_unusable_values_are_refused_with_the_variable_named(name: str, value: str) -> None:
    """Was a bug. An unusable value must be a SettingsError naming it, not a crash in serve()."""
    with pytest.raises(SettingsError, match=f"{name}='{value}' is not usable"):
        from_environment({name: value})


# access.py


async def test_streamed_responses_carry_the_request_id_header(tmp_path: Path) -> None:
    """Was a bug. request_id_header must also go on streamed heads (chunked, large files)."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (INLINE_LIMIT + 1))
    BigFile.path = str(big)
    routes = [(r"^/chunked$", Chunked), (r"^/file$", BigFile)]
    app = Brubeck(handler_tuples=routes, request_id_header=True)
    async with TestClient(app) as client:
        chunked = await _first_http_message(client, "/chunked", 51)
        file = await _first_http_message(client, "/file", 52)
    heads = {"chunked": chunked, "file": file}
    assert all(head.startswith(b"HTTP/1.1 200 ") for head in heads.values())
    missing = [
        k for k, head in heads.items() if b"\r\nX-Request-Id: " not in head.split(b"\r\n\r\n")[0]
    ]
    assert missing == []


async def test_access_log_counts_the_bytes_a_204_sends(caplog: pytest.LogCaptureFixture) -> None:
    """Was a bug. A 204 sends no body: its access line must count 0 bytes, not the dropped body."""
    caplog.set_level(logging.INFO, logger="brubeck.access")
    app = Brubeck(handler_tuples=[(r"^/none$", NoContent)], access_log=True)
    async with TestClient(app) as client:
        response = await client.get("/none")
    assert response.status_code == 204 and response.content == b""
    (line,) = [r.getMessage() for r in caplog.records if r.name == "brubeck.access"]
    assert '"GET /none" 204 0 ' in line, line


# reloader.py (verified behaviour)


def test_reloader_survives_a_root_that_disappears(tmp_path: Path) -> None:
    """Removing the watched tree reports its files gone, without raising."""
    root = tmp_path / "app"
    root.mkdir()
    (root / "app.py").write_text("A = 1\n")
    reloader = Reloader(root, interval=0)
    os.remove(root / "app.py")
    root.rmdir()
    assert reloader.changed() == [str(root / "app.py")]
    assert reloader.changed() == []


async def test_a_path_cannot_forge_an_access_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Quotes and control bytes in a path are escaped: one request, one unambiguous line
    (Mongrel2 refuses such request lines itself; another front end may not)."""
    caplog.set_level(logging.INFO, logger="brubeck.access")
    app = Brubeck(handler_tuples=[(r"^/.*$", NoContent)], access_log=True)
    forged = '/x"\x1b[2K\x08\x08/admin'  # a quote, then erase the line on a terminal
    async with TestClient(app) as client:
        await _first_http_message(client, forged, 61)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "brubeck.access"]
    assert "\x1b" not in line and "\x08" not in line
    assert '"GET /x\\"\\x1b[2K\\x08\\x08/admin" 204 0 ' in line


def test_a_pull_flag_that_is_no_endpoint_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pull localhost:9999`` (no ``tcp://``) stops the command with a message, not a
    ZMQError traceback when the app starts serving."""
    from brubeck import cli

    monkeypatch.setattr(cli, "setup_logging", lambda *a, **k: None)
    example = str(Path(__file__).resolve().parents[1] / "examples" / "hello" / "app.py")
    with pytest.raises(SystemExit, match="brubeck: pull_addr must be a ZeroMQ endpoint"):
        cli.main(["run", f"{example}:app", "--pull", "localhost:9999"])
