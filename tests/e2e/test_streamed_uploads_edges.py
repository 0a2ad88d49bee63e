"""Edges of ``upload.stream=1`` through a real Mongrel2: a connection reused after a streamed
upload, HTTP/1.0, a body exactly at ``max_upload_size``, a handler that reads part of the body
or fails midway, and a client that leaves while the handler waits for a piece."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from typing import ClassVar

import httpx
import pytest

from brubeck import Brubeck, HTTPError, WebMessageHandler

STREAM = {"upload.stream": 1}
LIMIT = 300_000


class Spooled(WebMessageHandler):
    def post(self) -> dict:
        return {"sha256": hashlib.sha256(self.request.body).hexdigest()}


class Live(WebMessageHandler):
    """Reads ``?take`` bytes (all by default), fails midway with ``?fail``."""

    stream_request_body = True
    events: ClassVar[list[str]] = []

    async def post(self) -> dict:
        take = int(self.get_argument("take", "-1"))
        digest, size = hashlib.sha256(), 0
        try:
            async for piece in self.request.body_stream:
                digest.update(piece)
                size += len(piece)
                if self.get_argument("fail", ""):
                    raise RuntimeError("the handler failed midway")
                if 0 <= take <= size:
                    break
        except HTTPError as exc:
            self.events.append(f"read failed: {exc.status}")
            raise
        except asyncio.CancelledError:
            self.events.append("cancelled")
            raise
        return {"sha256": digest.hexdigest(), "size": size}


@pytest.fixture(scope="module")
def site(serve_module, tmp_path_factory):
    app = Brubeck(
        handler_tuples=[(r"^/spooled$", Spooled), (r"^/live$", Live)],
        upload_dir=str(tmp_path_factory.mktemp("spool")),
        max_upload_size=LIMIT,
        upload_stream_window=16 * 1024,
        upload_stream_timeout=2,
    )
    return serve_module(app, settings=STREAM)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("path", ["/spooled", "/live"])
def test_a_kept_alive_connection_serves_the_next_request_after_a_streamed_upload(site, path):
    data = os.urandom(200_000)
    with httpx.Client(base_url=site.url, timeout=10) as client:
        for _ in range(3):
            response = client.post(path, content=data)
            assert response.status_code == 200
            assert response.json()["sha256"] == sha(data)
            small = client.post(path, content=b"hello")
            assert small.json()["sha256"] == sha(b"hello")


@pytest.mark.parametrize("path", ["/spooled", "/live"])
def test_a_body_exactly_at_max_upload_size_is_taken(site, path):
    data = os.urandom(LIMIT)
    response = httpx.post(f"{site.url}{path}", content=data, timeout=10)
    assert response.status_code == 200 and response.json()["sha256"] == sha(data)
    over = httpx.post(f"{site.url}{path}", content=data + b"x", timeout=10)
    assert over.status_code == 413


def raw_exchange(site, request: bytes) -> bytes:
    host, port = site.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("path", ["/spooled", "/live"])
def test_an_http_1_0_streamed_upload_is_answered_then_closed(site, path):
    data = os.urandom(100_000)
    head = f"POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    answer = raw_exchange(site, head + data)
    assert answer.startswith(b"HTTP/1.")
    assert b" 200 " in answer.split(b"\r\n")[0] and sha(data).encode() in answer


def test_a_chunked_upload_with_an_empty_body(site):
    head = (
        b"POST /live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    answer = raw_exchange(site, head + b"0\r\n\r\n")
    assert b" 200 " in answer.split(b"\r\n")[0] and sha(b"").encode() in answer


def test_a_handler_that_reads_part_of_the_body_answers_and_the_next_client_is_served(site):
    data = os.urandom(1_000_000 // 4)
    response = httpx.post(f"{site.url}/live?take=1", content=data, timeout=10)
    assert response.status_code == 200 and 0 < response.json()["size"] < len(data)
    assert httpx.post(f"{site.url}/live", content=data, timeout=10).json()["sha256"] == sha(data)


def test_a_handler_that_fails_midway_is_a_500_and_the_next_client_is_served(site):
    data = os.urandom(250_000)
    response = httpx.post(f"{site.url}/live?fail=1", content=data, timeout=10)
    assert response.status_code == 500
    assert httpx.post(f"{site.url}/live", content=data, timeout=10).json()["sha256"] == sha(data)


def test_a_client_that_leaves_while_the_handler_waits_ends_the_wait(site):
    Live.events.clear()
    host, port = site.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /live HTTP/1.1\r\nHost: x\r\nContent-Length: 250000\r\n\r\n" + b"x" * 1000
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while not Live.events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Live.events and Live.events[0] in ("cancelled", "read failed: 400", "read failed: 408")
    data = os.urandom(50_000)
    assert httpx.post(f"{site.url}/live", content=data, timeout=10).json()["sha256"] == sha(data)
