"""Mongrel2's ``upload.stream=1`` through a real Mongrel2: the body comes in pieces, on credit.

The app writes the pieces to its own ``upload_dir``; Mongrel2 writes no file at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from brubeck import Brubeck, HTTPError, WebMessageHandler

STREAM = {"upload.stream": 1}


class Digest(WebMessageHandler):
    """The SHA-256 and size of the body, read from the spooled file, and the request's facts."""

    def accept_upload(self) -> bool:
        return self.request.headers.get("x-refuse") is None

    def post(self) -> dict:
        upload = self.request.upload
        data = self.request.body
        if self.request.headers.get("x-keep"):
            upload.save_as(self.settings["kept"])
        return {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "spooled": upload is not None,
            "query": self.get_argument("q", ""),
            "type": self.request.headers.get("content-type", ""),
        }


class LiveDigest(WebMessageHandler):
    """Reads the body as it comes (``stream_request_body``); slow on purpose with ``?slow``."""

    stream_request_body = True

    async def post(self) -> dict:
        stream = self.request.body_stream
        digest, pieces, most_waiting = hashlib.sha256(), 0, 0
        slow = self.get_argument("slow", "")
        async for piece in stream:
            if pieces == 0 and piece.startswith(b"BAD"):
                raise HTTPError(415, "not this kind of file")  # answered before the body is read
            digest.update(piece)
            pieces += 1
            most_waiting = max(most_waiting, stream.buffered)
            if slow:
                await asyncio.sleep(0.01)
        return {
            "sha256": digest.hexdigest(),
            "size": stream.received,
            "pieces": pieces,
            "most_waiting": most_waiting,
            "length": stream.length,
        }


@pytest.fixture(scope="module")
def spool(tmp_path_factory):
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="module")
def site(serve_module, spool):
    app = Brubeck(
        handler_tuples=[(r"^/digest$", Digest), (r"^/live$", LiveDigest)],
        upload_dir=str(spool),
        max_upload_size=4 * 1024 * 1024,
        max_body_size=8 * 1024 * 1024,
        kept=str(spool / "kept.bin"),
        upload_stream_window=64 * 1024,
    )
    return serve_module(app, settings=STREAM)


def spooled(spool) -> list[str]:
    return sorted(p.name for p in spool.iterdir() if p.name.startswith("brubeck-upload."))


def test_a_3_mb_body_arrives_intact_through_small_credit_windows(site, spool):
    data = os.urandom(3 * 1024 * 1024)
    response = httpx.post(
        f"{site.url}/digest?q=x",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json() == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "spooled": True,
        "query": "x",
        "type": "application/octet-stream",
    }
    assert spooled(spool) == []  # deleted after the response
    assert not (site.upload_dir.exists() and os.listdir(site.upload_dir))  # Mongrel2 wrote none


def test_a_chunked_body_streams_too(site):
    def chunks():
        for i in range(50):
            yield bytes([i]) * 3000

    response = httpx.post(f"{site.url}/digest", content=chunks(), timeout=30)
    expected = b"".join(bytes([i]) * 3000 for i in range(50))
    assert response.status_code == 200
    assert response.json()["sha256"] == hashlib.sha256(expected).hexdigest()
    assert response.json()["size"] == len(expected)


def test_a_handler_can_read_the_pieces_as_they_come(site, spool):
    data = os.urandom(2 * 1024 * 1024)
    response = httpx.post(f"{site.url}/live", content=data, timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert (body["sha256"], body["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert body["length"] == len(data) and body["pieces"] > 10
    assert spooled(spool) == []  # nothing was written to disk


def test_a_slow_reader_holds_the_client_back(site):
    """The credit window (64 KiB here) bounds what waits unread in the handler's process."""
    data = os.urandom(1024 * 1024)
    response = httpx.post(f"{site.url}/live?slow=1", content=data, timeout=60)
    body = response.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["most_waiting"] <= 64 * 1024


def test_a_live_handler_may_answer_before_the_body_is_read(site):
    """It refuses on the first bytes; the connection then ends (the rest is never read)."""
    head = b"POST /live HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n"
    answer, took = send_then_read(site, head, b"BAD" + b"x" * 3_999_997)
    assert took < 5
    assert answer == b"" or answer.startswith(b"HTTP/1.1 415 ")
    response = httpx.post(f"{site.url}/live", content=b"BAD" + b"x" * 100_000)
    assert response.status_code == 415


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_an_early_answer_that_asks_for_a_close_still_ends_the_connection(site, version):
    """HTTP/1.0 and 'Connection: close' make the answer a closing one: the close must not
    be sent while Mongrel2 waits for credits (it would block the cancel)."""
    head = (
        f"POST /live {version}\r\nHost: x\r\nConnection: close\r\nContent-Length: 4000000\r\n\r\n"
    ).encode()
    answer, took = send_then_read(site, head, b"BAD" + b"x" * 3_999_997)
    assert took < 5
    assert answer == b"" or answer.startswith(b"HTTP/1.1 415 ")


def test_a_small_body_stays_inline(site):
    response = httpx.post(f"{site.url}/digest", content=b"hello")
    assert response.json()["spooled"] is False and response.json()["size"] == 5


def test_refusals_are_answered_at_the_first_piece(site, spool):
    big = b"x" * 100_000
    refused = httpx.post(f"{site.url}/digest", content=big, headers={"X-Refuse": "1"})
    assert refused.status_code == 413
    assert httpx.post(f"{site.url}/nowhere", content=big).status_code == 404
    assert spooled(spool) == []


def send_then_read(site, head: bytes, body: bytes) -> tuple[bytes, float]:
    """Send a request the way clients that read only after sending do; what came back, and
    how long it took."""
    host, port = site.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server ends the connection mid-body
            sock.sendall(head + body)
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    return answer, time.monotonic() - started


def test_a_refused_client_that_keeps_sending_is_not_left_hanging(site, spool):
    """Mongrel2 waits for credits that never come: the cancel after the 413 ends it."""
    head = b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n"
    answer, took = send_then_read(site, head, b"x" * 20_000_000)
    assert took < 5
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413 ")
    assert spooled(spool) == []


def test_a_chunked_body_over_the_limit_is_refused_midway(site, spool):
    def chunks():
        for _ in range(100):
            yield b"y" * 50_000  # 5 MB, no size announced

    try:
        response = httpx.post(f"{site.url}/digest", content=chunks(), timeout=10)
    except httpx.HTTPError:  # the connection ends while the client is still sending
        pass
    else:
        assert response.status_code == 413
    assert spooled(spool) == []


def test_a_kept_upload_is_moved_not_deleted(site, spool):
    data = os.urandom(200_000)
    response = httpx.post(f"{site.url}/digest", content=data, headers={"X-Keep": "1"})
    assert response.status_code == 200
    assert (spool / "kept.bin").read_bytes() == data
    assert spooled(spool) == []


def test_a_client_that_leaves_midway_leaves_no_file(site, spool, wait_for):
    host, port = site.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"z" * 200_000
        )
        wait_for(lambda: spooled(spool), timeout=5)  # the upload is under way
    wait_for(lambda: spooled(spool) == [], timeout=5)


# Several processes behind one Mongrel2 handler: Mongrel2 deals the pieces out in turn.

UPLOAD_APP = Path(__file__).with_name("apps") / "streamed_upload_app.py"


@contextlib.contextmanager
def upload_processes(m2, tmp_path: Path, peers: bool) -> Iterator[list[Path]]:
    """Two app processes, sharing connections through ``websocket_peers`` or not; their logs."""
    endpoints = [f"ipc://{tmp_path}/peer-{i}" for i in range(2)] if peers else []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    spool = tmp_path / "spool"
    spool.mkdir()
    logs = [tmp_path / f"app-{i}.log" for i in range(2)]
    procs = []
    try:
        for i, log in enumerate(logs):
            args = [m2.config.send_spec, m2.config.recv_spec, str(spool), str(i), *endpoints]
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(UPLOAD_APP), *args], stdout=out, stderr=out, env=env
                    )
                )
        yield logs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    assert list(spool.iterdir()) == []


def both_answer(url: str) -> None:
    """Ask on one keep-alive connection until both processes have answered."""
    pids: set[str] = set()
    deadline = time.monotonic() + 15
    with httpx.Client(base_url=url, timeout=1) as client:
        while len(pids) < 2:
            assert time.monotonic() < deadline, "the two processes did not both answer"
            with contextlib.suppress(httpx.TransportError):
                pids.add(client.get("/pid").text)


def test_with_websocket_peers_pieces_reach_the_process_that_took_the_upload(
    mongrel2_factory, tmp_path
):
    m2 = mongrel2_factory(settings=STREAM)
    with upload_processes(m2, tmp_path, peers=True):
        both_answer(m2.url)
        answered_by = set()
        for i in range(6):
            data = os.urandom(300_000 + i)
            response = httpx.post(f"{m2.url}/digest", content=data, timeout=30)
            assert response.status_code == 200
            body = response.json()
            assert (body["sha256"], body["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
            answered_by.add(body["pid"])
    assert len(answered_by) == 2  # the owners differ with the connection ids


def test_without_peers_a_stray_piece_ends_the_upload_with_a_warning(mongrel2_factory, tmp_path):
    m2 = mongrel2_factory(settings=STREAM)
    with upload_processes(m2, tmp_path, peers=False) as logs:
        both_answer(m2.url)
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(
                    httpx.post(f"{m2.url}/digest", content=b"u" * 300_000, timeout=10).status_code
                )
            except httpx.HTTPError as exc:  # cancelled: the client sees the connection end
                outcomes.append(type(exc).__name__)
        warned = "".join(log.read_text() for log in logs)
    assert 200 not in outcomes  # never a wrong answer from half a body
    assert "which this process did not start" in warned and "websocket_peers" in warned


def test_the_example_stores_and_hashes_streamed_uploads(mongrel2_factory, serve):
    """examples/streamed_upload asks for upload.stream=1 itself (its mongrel2_settings)."""
    path = Path(__file__).resolve().parents[2] / "examples" / "streamed_upload" / "app.py"
    app = runpy.run_path(str(path))["app"]
    m2 = serve(app, settings=app.settings["mongrel2_settings"])
    data = os.urandom(1_500_000)
    expected = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with httpx.Client(base_url=m2.url, timeout=30) as client:
        assert client.post("/store", content=data).json() == expected
        assert client.post("/hash", content=data).json() == expected
    assert not (m2.upload_dir.exists() and os.listdir(m2.upload_dir))  # Mongrel2 wrote none
