"""Bad input through the real path: the app keeps serving whatever arrives on its socket.

Mongrel2 binds the PUSH socket the app reads, and a second PUSH cannot connect to it. So here the
app's PULL connects to a PUSH that the test binds; the test reads what the real Mongrel2 sends
(a PULL on its ``send_spec``) and forwards it, byte for byte, after 10,000 garbage messages. The
app's replies go straight to Mongrel2, and the client reads them over real HTTP.
"""

import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import httpx
import pytest
import tnetstring
import zmq

from brubeck import Brubeck, Mongrel2Connection

GARBAGE_COUNT = 10_000
BOGUS_ID = 1_000_000  # far above any id this Mongrel2 hands out to real clients
NON_STRING_METHOD = b"13:6:METHOD,1:5#}0:,"  # a well-formed tnetstring; METHOD is an int


def hello_app() -> Brubeck:
    app = Brubeck()

    @app.add_route(r"^/hello$")
    def hello(application, message):
        return f"hello {message.get_cookie('n', '?')} {message.arguments.get('q', ['?'])[0]}"

    return app


class AppThreadLike(Protocol):
    alive: bool
    error: BaseException | None


class Tap:
    """The test's own ZeroMQ side: reads Mongrel2's requests, pushes anything to the app."""

    def __init__(self, send_spec: str) -> None:
        self.ctx = zmq.Context()
        self.from_mongrel2 = self.ctx.socket(zmq.PULL)
        self.from_mongrel2.setsockopt(zmq.LINGER, 0)
        self.from_mongrel2.connect(send_spec)
        self.to_app = self.ctx.socket(zmq.PUSH)
        self.to_app.setsockopt(zmq.LINGER, 0)
        # A PUSH with no peer blocks; fail instead of hanging if the app never connects.
        self.to_app.setsockopt(zmq.SNDTIMEO, 10_000)
        port = self.to_app.bind_to_random_port("tcp://127.0.0.1")
        self.app_addr = f"tcp://127.0.0.1:{port}"
        self.forwarded: list[bytes] = []

    def forward_until(self, done: Future, app: AppThreadLike, timeout: float = 10.0) -> None:
        """Forward Mongrel2's messages (requests and notices) until ``done``.

        Fails on timeout, or as soon as the app's thread is gone.
        """
        poller = zmq.Poller()
        poller.register(self.from_mongrel2, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done.done():
                return
            if not app.alive:
                pytest.fail(f"the app stopped serving: {app.error!r}")
            if poller.poll(20):
                raw = self.from_mongrel2.recv()
                self.forwarded.append(raw)
                self.to_app.send(raw)
        pytest.fail(f"no response within {timeout}s")

    def close(self) -> None:
        self.from_mongrel2.close()
        self.to_app.close()
        self.ctx.term()


@pytest.fixture
def tapped(mongrel2_factory, app_thread) -> Iterator[tuple]:
    m2 = mongrel2_factory()
    tap = Tap(m2.config.send_spec)
    app = hello_app()
    app.msg_conn = Mongrel2Connection(tap.app_addr, m2.config.recv_spec)
    try:
        yield m2, tap, app_thread(app)
    finally:
        tap.close()  # after the test; app_thread's teardown then stops the app


def http_get(m2, path: str, pool: ThreadPoolExecutor, **kwargs) -> Future:
    def get() -> httpx.Response:
        with httpx.Client(base_url=m2.url, timeout=10) as client:
            return client.get(path, **kwargs)

    return pool.submit(get)


def with_conn_id(raw: bytes, conn_id: int) -> bytes:
    sender, _, path, rest = raw.split(b" ", 3)
    return b"%s %d %s %s" % (sender, conn_id, path, rest)


def garbage(real: bytes, count: int, seed: int = 20240607) -> list[bytes]:
    """``count`` malformed or hostile messages, several kinds mixed, from one real request."""
    rng = random.Random(seed)
    sender, _, path, rest = real.split(b" ", 3)
    headers, body_part = tnetstring.pop(rest)
    header_part = rest[: len(rest) - len(body_part)]
    ids = iter(range(BOGUS_ID, BOGUS_ID + count))

    def msg(path: bytes, header_bytes: bytes, body: bytes = b"0:,") -> bytes:
        return b"%s %d %s %s%s" % (sender, next(ids), path, header_bytes, body)

    def random_bytes() -> bytes:
        return rng.randbytes(rng.randrange(0, 300))

    def truncated() -> bytes:
        whole = with_conn_id(real, next(ids))
        return whole[: rng.randrange(1, len(whole))]

    def corrupted() -> bytes:
        whole = bytearray(with_conn_id(real, next(ids)))
        start = whole.index(b" /") + 2  # keep sender and id intact: only the rest is garbled
        for _ in range(rng.randrange(1, 6)):
            whole[rng.randrange(start, len(whole))] = rng.randrange(256)
        return bytes(whole)

    def bad_tnetstring() -> bytes:
        choices = [
            b"999999999:" + header_part[4:],  # length far past the end
            b"-5:}0:,",
            b"abc:}0:,",
            header_part[:-1] + b"!" + body_part,  # unknown type tag
            header_part + b"5:abc,",  # body shorter than its length
            header_part + body_part + b"trailing",
            b"0:]0:,",  # headers are a list
            b"4:true!0:,",  # headers are a bool
            header_part + b"0:}",  # body is a dict
            NON_STRING_METHOD,
            b"[" * 64,
        ]
        return msg(path, rng.choice(choices), b"")

    def bad_path() -> bytes:
        # Mongrel2 itself refuses raw non-ASCII in a request line; a message may still carry it.
        weird = rng.choice([b"/x\xff\xfe", b"/%FF%FE", b"/\xc3(", b"/%C3", b"/\x00", b"@*"])
        return msg(weird, header_part)

    def json_headers() -> bytes:
        variants = [
            b'{"METHOD":"GET","PATH":"/hello","x-tab":"a\tb","VERSION":"HTTP/1.1"}',
            b'{"METHOD":"GET","PATH":"/hello","x-bin":"\xff\xfe"}',
            b'{"METHOD":"GET",',
            b'["not", "an", "object"]',
            b'{"METHOD":["GET",3]}',
            b'{"METHOD":"JSON"}',
        ]
        text = rng.choice(variants)
        return msg(path, b"%d:%s," % (len(text), text))

    def odd_request() -> bytes:
        variants = [
            {b"METHOD": b"JSON", b"PATH": b"/hello"},  # a JSON-socket message, not HTTP
            {b"METHOD": [b"GET", b"POST"], b"PATH": b"/hello", b"VERSION": b"HTTP/9.9"},
            {b"PATH": b"/hello"},  # no METHOD at all
            {**headers, b"x-mongrel2-upload-start": b"/tmp/upload.X"},  # start, no done
            {**headers, b"connection": [b"close", b"keep-alive"], b"cookie": b"\xff=\xfe"},
            {**headers, b"QUERY": b"q=%FF%FE&x"},
        ]
        return msg(path, tnetstring.dumps(rng.choice(variants)))

    def bad_notice() -> bytes:
        body = rng.choice([b'{"type":', b"[]", b'{"type":42}', b'{"type":"surprise"}', b"\xff"])
        return msg(b"@*", b"16:6:METHOD,4:JSON,}", tnetstring.dumps(body))

    kinds: list[Callable[[], bytes]] = [
        random_bytes,
        truncated,
        corrupted,
        bad_tnetstring,
        bad_path,
        json_headers,
        odd_request,
        bad_notice,
    ]
    return [rng.choice(kinds)() for _ in range(count)]


def test_ten_thousand_garbage_messages_then_a_good_request(tapped, caplog):
    m2, tap, thread = tapped
    with ThreadPoolExecutor(1) as pool, caplog.at_level(logging.WARNING, logger="brubeck"):
        # One real request first: it proves the path works and gives real bytes to mangle.
        first = http_get(m2, "/hello?q=first", pool)
        tap.forward_until(first, thread)
        assert first.result().text == "hello ? first"
        real = tap.forwarded[0]

        junk = garbage(real, GARBAGE_COUNT)
        assert len(junk) == GARBAGE_COUNT and len(set(junk)) > GARBAGE_COUNT // 2
        for message in junk:
            tap.to_app.send(message)

        # The push queue is FIFO to the one app: this request is handled after all the junk.
        good = http_get(m2, "/hello?q=%C3%A9", pool, headers={"Cookie": "n=ok"})
        tap.forward_until(good, thread, timeout=30)
        resp = good.result()

    assert resp.status_code == 200
    assert resp.text == "hello ok é"
    assert thread.alive
    assert m2.running
    dropped = [r for r in caplog.records if "malformed message" in r.getMessage()]
    assert len(dropped) > GARBAGE_COUNT // 4, len(dropped)
    # Garbage is dropped with a reason. Only well-formed tnetstrings holding a non-string header
    # value (which Mongrel2 never sends) get past the parser; the receive loop's last-resort
    # catch-all drops those, and must catch nothing else.
    escaped = [r for r in caplog.records if "handling it failed" in r.getMessage()]
    assert all(isinstance(r.exc_info[1], TypeError) for r in escaped), escaped[:3]
    assert len(escaped) <= sum(NON_STRING_METHOD in m for m in junk)


@pytest.fixture(scope="module")
def m2(serve_module):
    return serve_module(hello_app())


@pytest.mark.parametrize("path", ["/x%FF", "/hello%FF", "/x%C3", "/x%E2%82"])
def test_invalid_percent_encoded_utf8_path_is_400(m2, path):
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        resp = client.get(path)
        after = client.get("/hello?q=after")
    assert resp.status_code == 400
    assert "server" not in resp.headers  # answered by the app, not by Mongrel2
    assert re.search(r"not valid UTF-8", resp.text)
    assert after.text == "hello ? after"  # and it keeps serving


def test_invalid_utf8_query_is_400(m2):
    with httpx.Client(base_url=m2.url, timeout=5) as client:
        resp = client.get("/hello?q=%FF")
    assert resp.status_code == 400
    assert "not valid UTF-8" in resp.text
