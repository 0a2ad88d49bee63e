"""Files sent while earlier answers on the same connection are still pending (pipelining).

A large file is streamed: it cannot wait in the connection's answer queue as a finished
response does, so ``send_file`` holds its head until the answers before it have left. These
send several requests on one raw socket before reading anything, through a real Mongrel2.
"""

import asyncio
import os

import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.files import INLINE_LIMIT


class SlowHandler(WebMessageHandler):
    async def get(self):
        await asyncio.sleep(0.3)
        return "slow answer"


class FileHandler(WebMessageHandler):
    async def get(self, name):
        return await self.send_file(name, root=self.application.state.root)


@pytest.fixture(scope="module")
def site(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    big = os.urandom(INLINE_LIMIT * 6 + 12345)  # streamed, in several pieces
    (root / "big.bin").write_bytes(big)
    (root / "small.txt").write_bytes(b"small file\n")
    app = Brubeck(handler_tuples=[(r"^/slow$", SlowHandler), (r"^/files/(.+)$", FileHandler)])
    app.state.root = root
    # Record what the stream was told: the first test must have been made to wait.
    answers = app.state.may_stream_answers = []
    may_stream = app.may_stream

    def recording(request):
        answers.append(may_stream(request))
        return answers[-1]

    app.may_stream = recording
    return serve_module(app), big, answers


def test_a_streamed_file_waits_for_the_slow_answer_before_it(site, raw_http):
    m2, big, answers = site
    answers.clear()
    conn = raw_http(m2, timeout=10)
    conn.send(
        b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /files/small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    first = conn.read_response()
    assert (first.status, first.body) == (200, b"slow answer")
    second = conn.read_response()
    assert second.status == 200
    assert second.header("Content-Length") == str(len(big))
    assert second.header("Transfer-Encoding") is None
    assert second.body == big
    third = conn.read_response()
    assert (third.status, third.body) == (200, b"small file\n")
    assert answers[0] is False and answers[-1] is True


def test_ranges_of_a_large_file_pipelined_come_back_in_order(site, raw_http):
    m2, big, _ = site
    conn = raw_http(m2, timeout=10)
    spans = [(0, 99), (INLINE_LIMIT * 2, INLINE_LIMIT * 5), (len(big) - 1000, len(big) - 1)]
    conn.send(
        b"".join(
            b"GET /files/big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=%d-%d\r\n\r\n" % span
            for span in spans
        )
        + b"HEAD /files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    for start, last in spans:
        response = conn.read_response()
        assert response.status == 206
        assert response.header("Content-Range") == f"bytes {start}-{last}/{len(big)}"
        assert response.body == big[start : last + 1]
    head = conn.read_response(head_request=True)
    assert head.status == 200
    assert head.header("Content-Length") == str(len(big))
    # Nothing follows the HEAD's head: the next request on the connection is answered cleanly.
    conn.request("GET", "/files/small.txt")
    assert conn.read_response().body == b"small file\n"
