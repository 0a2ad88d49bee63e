"""Streamed text gzipped under compress_response, through a real Mongrel2: curl, httpx, raw."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
import subprocess

import httpx

from brubeck import Brubeck, WebMessageHandler


def rows(piece: int) -> bytes:
    return "".join(f"{piece},{n},row {n} of piece {piece}\n" for n in range(1000)).encode()


def expected(count: int) -> bytes:
    return b"".join(rows(i) for i in range(count))


class Export(WebMessageHandler):
    """A CSV export made in pieces, each flushed: the kind of stream gzip pays for."""

    async def get(self, n: str) -> None:
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        for i in range(int(n)):
            self.write(rows(i))
            await self.flush()


class Held(WebMessageHandler):
    """Sends one piece, then waits for /go before the rest."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write(b"first piece\n")
        await self.flush()
        await self.application.state.go.wait()
        self.write(b"second piece\n")


class Go(WebMessageHandler):
    def post(self) -> str:
        self.application.state.go.set()
        return "ok"


def make_app() -> Brubeck:
    app = Brubeck(
        handler_tuples=[(r"^/export/(?P<n>\d+)$", Export), (r"^/held$", Held), (r"^/go$", Go)],
        compress_response=True,
    )

    @app.on_startup
    def make_event() -> None:
        app.state.go = asyncio.Event()

    return app


def test_curl_compressed_gets_the_export_and_the_wire_carries_gzip(serve):
    m2 = serve(make_app())
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--compressed", "-D", "-", f"{m2.url}/export/50"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
    assert body == expected(50)
    # The bytes on the wire: a gzip stream several times smaller than the text.
    port = int(m2.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /export/50 HTTP/1.0\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        data = b""
        while piece := sock.recv(1 << 16):
            data += piece
    head, _, wire = data.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Connection: close" in head
    assert gzip.decompress(wire) == expected(50)
    assert len(wire) * 4 < len(expected(50))


def test_a_gzipped_stream_under_flow_control_arrives_whole(serve):
    m2 = serve(make_app(), settings={"download.flow_control": 1})
    digest, size = hashlib.sha256(), 0
    with httpx.stream("GET", f"{m2.url}/export/400", timeout=60) as response:
        assert response.headers["content-encoding"] == "gzip"
        for piece in response.iter_bytes():  # httpx inflates as the pieces come
            digest.update(piece)
            size += len(piece)
    text = expected(400)
    assert (size, digest.hexdigest()) == (len(text), hashlib.sha256(text).hexdigest())


def test_each_flushed_piece_reaches_the_client_before_the_stream_ends(serve):
    """gzip must not hold a flushed piece back: the client reads it while the handler waits
    (were it held, reading it would time out, as /go is only sent after)."""
    m2 = serve(make_app())
    with (
        httpx.Client(base_url=m2.url, timeout=5) as client,
        client.stream("GET", "/held") as response,
    ):
        assert response.headers["content-encoding"] == "gzip"
        pieces = response.iter_bytes()
        received = b""
        while len(received) < len(b"first piece\n"):
            received += next(pieces)
        assert received == b"first piece\n"
        assert httpx.post(f"{m2.url}/go", timeout=5).text == "ok"
        rest = b"".join(pieces)
    assert rest == b"second piece\n"
