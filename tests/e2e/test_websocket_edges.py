"""WebSockets through a real Mongrel2, second adversarial round: a raw RFC 6455 client.

Every test talks plain TCP to Mongrel2 and builds its frames byte by byte, so it can send what
no client library would: frames split mid UTF-8 character, control frames between fragments,
unmasked frames, reserved bits, bad close payloads, odd handshakes.

What Mongrel2 1.12.2 does itself (``Connection_read_wspacket`` and ``WS_validate_packet``):
it unmasks and joins fragments, and forwards control frames at once, even between fragments.
Framing errors it checks (an unmasked frame, a continuation with no start, a data frame inside
a fragmented message, a fragmented control frame, a control frame of 126 bytes or more) make it
drop the TCP connection with no close frame; the handler only gets a disconnect notice. The
``test_fact_*`` tests pin such Mongrel2 behaviour, which Brubeck cannot change.

Tests whose docstring starts with "Was a bug." failed before Brubeck was fixed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import socket
import struct
import time
from typing import Any, ClassVar

import pytest

from brubeck import Brubeck, WebSocketHandler
from brubeck.wsframes import accept_key, decode_frame

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's sample nonce (16 bytes)
MASK = b"\x37\xfa\x21\x3d"

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

_names = itertools.count()


def fresh_name() -> str:
    return f"c{next(_names)}"


class Rec(WebSocketHandler):
    """Echoes; records callbacks per connection name; ``close:CODE:REASON`` closes instead."""

    events: ClassVar[dict[str, list[tuple[Any, ...]]]] = {}
    max_message_size = 1024

    def open(self, name: str) -> None:
        self.name = name
        Rec.events.setdefault(name, []).append(("open",))

    def on_message(self, message: str | bytes) -> None:
        Rec.events[self.name].append(("message", message))
        if isinstance(message, str) and message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            self.close(int(code), reason)
            return
        self.write_message(message)

    def on_close(self, code: int, reason: str) -> None:
        Rec.events[self.name].append(("close", code, reason))


class Big(Rec):
    """10 MiB limit (the default); answers each message with its length."""

    max_message_size = 10 * 1024 * 1024

    def on_message(self, message: str | bytes) -> None:
        Rec.events[self.name].append(("message", len(message)))
        self.write_message(str(len(message)))


class QuickPing(Big):
    """Pings after 0.3 s of silence, gives up 0.5 s later."""

    ping_interval = 0.3
    ping_timeout = 0.5


class PatientPing(Big):
    """Pings after 0.3 s of silence, but waits 3 s for the answer: room for a slow message."""

    ping_interval = 0.3
    ping_timeout = 3.0


class Proto(Rec):
    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        Rec.events.setdefault("offered", []).append(tuple(subprotocols))
        return subprotocols[-1]


def make_app() -> Brubeck:
    return Brubeck(
        handler_tuples=[
            (r"^/echo/(?P<name>\w+)$", Rec),
            (r"^/big/(?P<name>\w+)$", Big),
            (r"^/quick/(?P<name>\w+)$", QuickPing),
            (r"^/patient/(?P<name>\w+)$", PatientPing),
            (r"^/proto/(?P<name>\w+)$", Proto),
        ]
    )


@pytest.fixture(scope="module")
def port(serve_module) -> int:
    return serve_module(make_app()).config.port


# The raw client


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """One client frame: masked unless told otherwise, any flags."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload)
    bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 0x10000:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not masked:
        return head + payload
    key = int.from_bytes((MASK * (size // 4 + 1))[:size], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big") if size else b""
    return head + MASK + body


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def code_of(payload: bytes) -> int | None:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


class RawWS:
    """A TCP connection to Mongrel2 that sent a handshake; reads frames and the EOF."""

    def __init__(
        self,
        port: int,
        path: str,
        *,
        key: bytes | None = KEY,
        version: str = "HTTP/1.1",
        method: str = "GET",
        extra: bytes = b"",
        upgrade: bytes = b"websocket",
        then: bytes = b"",
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)
        request = (
            f"{method} {path} {version}\r\nHost: 127.0.0.1:{port}\r\n".encode()
            + b"Upgrade: "
            + upgrade
            + b"\r\nConnection: Upgrade\r\n"
            + (b"Sec-WebSocket-Key: " + key + b"\r\n" if key is not None else b"")
            + b"Sec-WebSocket-Version: 13\r\n"
            + extra
            + b"\r\n"
        )
        self.sock.sendall(request + then)
        self.buffer = b""
        self.eof = False
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(3.0):
                break
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.head = head
        first = head.split(b"\r\n", 1)[0].split(b" ")
        self.status = int(first[1]) if len(first) > 1 and first[1].isdigit() else 0
        self.headers = [
            tuple(p.strip() for p in line.split(b":", 1))
            for line in head.split(b"\r\n")[1:]
            if b":" in line
        ]
        if self.status != 101:  # an HTTP body follows, not frames
            self.buffer = b""

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def _fill(self, timeout: float) -> bool:
        """Read more; False on EOF (or a reset), raise TimeoutError on silence."""
        if self.eof:
            return False
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def recv_frame(self, timeout: float = 3.0) -> tuple[int, bytes] | None:
        """The next frame as ``(opcode, payload)``, or None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            got = decode_frame(self.buffer)
            if got is not None:
                fin, opcode, payload, end = got
                assert fin, "Brubeck never fragments"
                self.buffer = self.buffer[end:]
                return opcode, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame")
            if not self._fill(left):
                assert not self.buffer, f"cut frame at EOF: {self.buffer!r}"
                return None

    def frames_until_eof(self, timeout: float = 3.0) -> list[tuple[int, bytes]]:
        out = []
        while (got := self.recv_frame(timeout)) is not None:
            out.append(got)
        return out

    def closed_within(self, seconds: float) -> bool:
        """Whether the server closes TCP within ``seconds`` (frames meanwhile are dropped)."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if not self._fill(left):
                    return True
            except TimeoutError:
                return False
            self.buffer = b""

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def ws(port):
    """``open(kind='echo', **handshake) -> (RawWS, name)``; sockets closed at teardown."""
    opened: list[RawWS] = []

    def open_(kind: str = "echo", **kwargs: Any) -> tuple[RawWS, str]:
        name = fresh_name()
        conn = RawWS(port, f"/{kind}/{name}", **kwargs)
        opened.append(conn)
        return conn, name

    yield open_
    for conn in opened:
        conn.close()


def events_of(name: str, kind: str | None = None) -> list[tuple[Any, ...]]:
    return [e for e in Rec.events.get(name, []) if kind is None or e[0] == kind]


def wait_for_close_of(name: str, timeout: float = 3.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while not events_of(name, "close"):
        assert time.monotonic() < deadline, f"on_close never ran for {name}"
        time.sleep(0.01)
    (only,) = events_of(name, "close")
    return only[1], only[2]


def answer_close_and_expect_eof(conn: RawWS, code: int) -> None:
    conn.send(frame(CLOSE, close_payload(code)))
    assert conn.closed_within(2.0), "the server kept TCP open after the close handshake"


# Fragmentation (RFC 6455 section 5.4)


def test_text_split_inside_a_utf8_character_across_fragments_is_accepted(ws) -> None:
    """Fragments need not end on character boundaries: only the whole message is UTF-8."""
    conn, name = ws()
    euro = "€".encode()
    conn.send(
        frame(TEXT, b"ab" + euro[:1], fin=False),
        frame(CONT, euro[1:2], fin=False),
        frame(CONT, euro[2:] + b"cd"),
    )
    assert conn.recv_frame() == (TEXT, "ab€cd".encode())
    assert events_of(name, "message") == [("message", "ab€cd")]


def test_invalid_utf8_across_fragments_closes_with_1007(ws) -> None:
    conn, name = ws()
    conn.send(frame(TEXT, b"ok\xe2", fin=False), frame(CONT, b"\x28\xa1"))
    opcode, payload = conn.recv_frame()
    assert (opcode, code_of(payload)) == (CLOSE, 1007)
    answer_close_and_expect_eof(conn, 1007)
    assert events_of(name, "message") == []


def test_a_ping_between_fragments_is_answered_and_the_message_arrives_whole(ws) -> None:
    """Control frames may be injected in the middle of a fragmented message (section 5.4)."""
    conn, _name = ws()
    conn.send(frame(TEXT, b"one-", fin=False), frame(PING, b"mid"), frame(CONT, b"two"))
    assert conn.recv_frame() == (PONG, b"mid")
    assert conn.recv_frame() == (TEXT, b"one-two")


def test_an_oversized_message_in_small_fragments_closes_with_1009(ws) -> None:
    """The limit counts the joined message, not any one fragment (1024 bytes here)."""
    conn, _name = ws()
    conn.send(frame(TEXT, b"x" * 512, fin=False), frame(CONT, b"x" * 512))
    assert conn.recv_frame() == (TEXT, b"x" * 1024)  # exactly at the limit
    conn.send(frame(TEXT, b"x" * 512, fin=False), frame(CONT, b"x" * 513))
    opcode, payload = conn.recv_frame()
    assert (opcode, code_of(payload)) == (CLOSE, 1009)
    answer_close_and_expect_eof(conn, 1009)


def test_ten_megabytes_in_one_byte_fragments(ws) -> None:
    """10,000,000 one-byte frames (70 MB on the wire): Mongrel2 joins them in about a second."""
    conn, _name = ws("big")
    one = frame(CONT, b"x", fin=False)
    conn.send(frame(BINARY, b"x", fin=False))
    block = one * 100_000
    for _ in range(99):
        conn.send(block)
    conn.send(one * 99_998, frame(CONT, b"x"))
    assert conn.recv_frame(timeout=4.0) == (TEXT, b"10000000")


def test_a_flood_of_pings_and_messages_is_answered_in_full(ws) -> None:
    """300 pings, then 500 messages, in one write: all answered, in order, despite Mongrel2's
    16-message queue per connection (Brubeck coalesces its writes)."""
    conn, _name = ws()
    conn.send(*(frame(PING, b"%d" % i) for i in range(300)))
    conn.send(*(frame(TEXT, b"m%d" % i) for i in range(500)))
    got = [conn.recv_frame() for _ in range(800)]
    assert got[:300] == [(PONG, b"%d" % i) for i in range(300)]
    assert got[300:] == [(TEXT, b"m%d" % i) for i in range(500)]


def test_frames_sent_with_the_handshake_wait_for_open(port) -> None:
    """A client may pipeline frames behind its handshake: they arrive after the 101."""
    name = fresh_name()
    conn = RawWS(port, f"/echo/{name}", then=frame(TEXT, b"early") + frame(PING, b"p"))
    try:
        assert conn.status == 101
        assert conn.recv_frame() == (TEXT, b"early")
        assert conn.recv_frame() == (PONG, b"p")
    finally:
        conn.close()


# What Mongrel2 refuses by itself: TCP dropped, no close frame; on_close gets 1006


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([frame(CONT, b"zzz")], id="continuation-with-no-start"),
        pytest.param([frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], id="new-data-mid-message"),
        pytest.param([frame(TEXT, b"hello", masked=False)], id="unmasked"),
        pytest.param([frame(PING, b"p" * 126)], id="ping-of-126-bytes"),
        pytest.param([frame(PING, b"p", fin=False)], id="fragmented-ping"),
        pytest.param([frame(CLOSE, close_payload(1000), fin=False)], id="fragmented-close"),
    ],
)
def test_fact_mongrel2_drops_the_connection_on_framing_errors(ws, frames: list[bytes]) -> None:
    """Mongrel2's doing, not Brubeck's. RFC 6455 sections 5.1 and 5.4 want the connection
    failed, ideally with a 1002 close frame (section 7.1.7 says SHOULD); Mongrel2 just closes
    TCP and sends the handler a disconnect notice, so no close frame can be sent."""
    conn, name = ws()
    conn.send(*frames)
    assert conn.frames_until_eof() == []
    assert wait_for_close_of(name) == (1006, "")
    assert events_of(name, "message") == []


def test_fact_mongrel2_ignores_reserved_bits_on_continuation_frames(ws) -> None:
    """Mongrel2's doing: FLAGS carries the first frame's byte 0 only, so RSV bits set on a
    continuation frame never reach the handler and the message is accepted (RFC 6455 section
    5.2 wants the connection failed). Brubeck cannot see them."""
    conn, _name = ws()
    conn.send(frame(TEXT, b"a", fin=False), frame(CONT, b"b", rsv=0b010))
    assert conn.recv_frame() == (TEXT, b"ab")


# What Mongrel2 passes on and Brubeck must refuse with 1002


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([frame(TEXT, b"x", rsv=0b100)], id="rsv1"),
        pytest.param([frame(TEXT, b"x", rsv=0b100, fin=False), frame(CONT, b"y")], id="rsv1-frag"),
        pytest.param([frame(PING, b"x", rsv=0b001)], id="rsv3-on-a-ping"),
        pytest.param([frame(0x3, b"x")], id="opcode-3"),
        pytest.param([frame(0x7, b"x", fin=False), frame(CONT, b"y")], id="opcode-7-fragmented"),
        pytest.param([frame(0xB, b"x")], id="opcode-B"),
        pytest.param([frame(0xF, b"")], id="opcode-F"),
    ],
)
def test_reserved_bits_and_unknown_opcodes_close_with_1002(ws, frames: list[bytes]) -> None:
    conn, name = ws()
    conn.send(*frames)
    opcode, payload = conn.recv_frame()
    assert (opcode, code_of(payload)) == (CLOSE, 1002)
    answer_close_and_expect_eof(conn, 1002)
    assert events_of(name, "message") == []


# Close frames from the client (RFC 6455 sections 5.5.1, 7.1.5, 7.4)


@pytest.mark.parametrize(
    ("payload", "answer", "code"),
    [
        pytest.param(b"", b"", 1005, id="empty"),
        pytest.param(close_payload(1000, b"bye"), close_payload(1000), 1000, id="1000-bye"),
        pytest.param(close_payload(4999), close_payload(4999), 4999, id="4999"),
        pytest.param(b"\x03", close_payload(1002), 1002, id="one-byte"),
        pytest.param(close_payload(1000, b"\xff"), close_payload(1007), 1007, id="bad-utf8"),
        *(
            pytest.param(close_payload(c), close_payload(1002), 1002, id=str(c))
            for c in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
        ),
    ],
)
def test_client_close_frames_are_answered_then_tcp_is_closed(
    ws, payload: bytes, answer: bytes, code: int
) -> None:
    conn, name = ws()
    conn.send(frame(CLOSE, payload))
    assert conn.frames_until_eof() == [(CLOSE, answer)]
    assert wait_for_close_of(name)[0] == code


def test_frames_after_the_clients_close_are_ignored(ws) -> None:
    """After its close frame a client must send nothing (section 5.5.1); what it sends anyway
    (Mongrel2 forwards it) is dropped: no message, no pong, one on_close."""
    conn, name = ws()
    conn.send(frame(CLOSE, close_payload(1000)), frame(TEXT, b"after"), frame(PING, b"p"))
    assert conn.frames_until_eof() == [(CLOSE, close_payload(1000))]
    assert wait_for_close_of(name) == (1000, "")
    time.sleep(0.1)
    assert events_of(name, "message") == []
    assert len(events_of(name, "close")) == 1


def test_the_servers_close_handshake_ends_with_the_server_closing_tcp(ws) -> None:
    """Section 7.1.1: the server closes TCP first, as soon as the client answered."""
    conn, name = ws()
    conn.send(frame(TEXT, b"close:4001:bye"))
    assert conn.recv_frame() == (CLOSE, close_payload(4001, b"bye"))
    conn.send(frame(TEXT, b"dropped"))  # data after the server's close frame goes nowhere
    started = time.monotonic()
    answer_close_and_expect_eof(conn, 4001)
    assert time.monotonic() - started < 1.0
    assert wait_for_close_of(name) == (4001, "")
    assert events_of(name, "message") == [("message", "close:4001:bye")]


def test_pings_of_125_bytes_are_answered(ws) -> None:
    conn, _name = ws()
    conn.send(frame(PING, b"p" * 125))
    assert conn.recv_frame() == (PONG, b"p" * 125)


# Failing the connection (RFC 6455 section 7.1.7)


@pytest.mark.parametrize(
    ("kind", "frames", "code"),
    [
        pytest.param("echo", [frame(TEXT, b"\xff\xfe")], 1007, id="invalid-utf8"),
        pytest.param("echo", [frame(TEXT, b"x", rsv=0b100)], 1002, id="reserved-bit"),
        pytest.param("echo", [frame(0x3, b"x")], 1002, id="unknown-opcode"),
        pytest.param("echo", [frame(BINARY, b"x" * 1025)], 1009, id="too-big"),
    ],
)
def test_a_protocol_error_fails_the_connection_without_waiting_for_the_client(
    ws, kind: str, frames: list[bytes], code: int
) -> None:
    """Was a bug. After a protocol error Brubeck sends its close frame, then waits up to
    ``close_timeout`` (5 s) for the client to answer before hanging up.

    These errors are the cases where RFC 6455 says the endpoint "MUST _Fail the WebSocket
    Connection_" (sections 5.2 for reserved bits and opcodes, 8.1 for UTF-8; 1009 in 7.4.1).
    Section 7.1.7: to fail it, the server "MUST _Close the WebSocket Connection_" (close TCP,
    section 7.1.1), after a close frame it SHOULD send, and "MUST NOT continue to attempt to
    process data (including a responding Close frame) from the remote endpoint". Brubeck
    instead starts an ordinary closing handshake (``websocket.py:WebSocketHandler._receive``
    calls ``self.close``): a client that sent garbage keeps its socket, and Mongrel2 keeps
    reading and forwarding its frames, for 5 more seconds, and ``on_close`` is given the
    client's answer (or 1006) rather than the code the server failed the connection with.
    """
    conn, _name = ws(kind)
    conn.send(*frames)
    opcode, payload = conn.recv_frame()
    assert (opcode, code_of(payload)) == (CLOSE, code)
    assert conn.closed_within(1.5), "TCP still open: the server waits for a close answer"


# Liveness versus Mongrel2's reassembly


def send_slowly(conn: RawWS, data: bytes, seconds: float) -> None:
    """``data`` in 20 pieces over about ``seconds``; OSError if the server hung up."""
    chunk = len(data) // 20 + 1
    for i in range(0, len(data), chunk):
        conn.send(data[i : i + chunk])
        time.sleep(seconds / 20)


def test_fact_a_message_slower_than_ping_timeout_gets_the_client_taken_as_gone(ws) -> None:
    """Mongrel2's doing, documented (docs/websockets.md, "Idle connections"); Brubeck cannot
    tell this client from a vanished one without asking Mongrel2's control port.

    Mongrel2 forwards a frame only once it has all of it, so while a big message is on its way
    Brubeck sees nothing; after ``ping_interval`` it pings, and the client's pong can only
    leave after the frame it is sending (control frames go between frames, RFC 6455 section
    5.4, and browsers never fragment). ``ping_timeout`` later the client is taken as gone.
    Here: 0.3 s + 0.5 s, and 300 kB sent over 2.5 s: the server hangs up mid-message, with no
    close frame, and ``on_close`` gets 1006. Hence the rule in the docs: ``ping_timeout`` must
    allow the largest message accepted at the slowest client served.
    """
    conn, name = ws("quick")
    with contextlib.suppress(OSError):  # the hang-up may reach the client mid-message
        send_slowly(conn, frame(BINARY, b"z" * 300_000), 2.5)
    assert all(opcode == PING for opcode, _ in conn.frames_until_eof())
    assert wait_for_close_of(name) == (1006, "")
    assert events_of(name, "message") == []


def test_a_ping_timeout_that_allows_for_the_slowest_message_keeps_the_client(ws) -> None:
    """The documented remedy: 300 kB over 1.5 s again, but with 3 s to answer a ping. The
    pings sent meanwhile are answered after the message, and nobody is hung up on."""
    conn, name = ws("patient")
    send_slowly(conn, frame(BINARY, b"z" * 300_000), 1.5)
    while True:  # answer the pings sent meanwhile, and wait for the message's answer
        got = conn.recv_frame()
        assert got is not None, f"hung up mid-message: on_close {events_of(name, 'close')}"
        if got[0] == PING:
            conn.send(frame(PONG, got[1]))
            continue
        assert got == (TEXT, b"300000")
        break
    conn.send(frame(PING, b"still here"))
    assert conn.recv_frame() == (PONG, b"still here")
    assert events_of(name, "close") == []


# The handshake (RFC 6455 section 4.2.1)


def test_an_http_10_upgrade_is_refused(ws) -> None:
    """Was a bug. ``GET /x HTTP/1.0`` with the upgrade headers gets a 101 and a socket.

    RFC 6455 section 4.2.1 item 1: the client's handshake is "An HTTP/1.1 or higher GET
    request"; a server that reads one that is not "MUST stop processing the client's
    handshake and return an HTTP response with an appropriate error code (such as 400 Bad
    Request)". Mongrel2 does not look at the version; it passes ``VERSION: HTTP/1.0`` on, so
    ``websocket.py:WebSocketHandler._check_handshake`` can refuse it.
    """
    conn, name = ws(version="HTTP/1.0")
    assert conn.status != 101
    assert 400 <= conn.status < 500
    assert events_of(name, "open") == []


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"abc", id="three-characters"),
        pytest.param(b"AAAA", id="three-bytes"),
        pytest.param(b"!!!!!!!!!!!!!!!!!!!!!!==", id="not-base64"),
        pytest.param(base64.b64encode(b"k" * 32), id="thirty-two-bytes"),
    ],
)
def test_a_key_that_is_not_16_bytes_of_base64_is_refused(ws, key: bytes) -> None:
    """Was a bug. Any ``Sec-WebSocket-Key`` is accepted: Mongrel2 hashes whatever it gets.

    RFC 6455 section 4.2.1 item 5: the handshake has "A |Sec-WebSocket-Key| header field with a
    base64-encoded ... value that, when decoded, is 16 bytes in length"; otherwise the server
    MUST answer with an error such as 400. The key arrives among the headers, so
    ``websocket.py:WebSocketHandler._check_handshake`` can check it.
    """
    conn, name = ws(key=key)
    assert conn.status == 400
    assert events_of(name, "open") == []


def test_a_repeated_key_is_refused(ws) -> None:
    """Was a bug. Two ``Sec-WebSocket-Key`` lines get a 101 (Mongrel2 answers the first).

    RFC 6455 section 11.3.1: "The |Sec-WebSocket-Key| header field MUST NOT appear more than
    once in an HTTP request", and section 4.2.1 wants such a handshake refused (400). Mongrel2
    passes both on as a list (``getlist`` sees two), so ``_check_handshake`` can refuse it.
    """
    conn, name = ws(extra=b"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n")
    assert conn.status == 400
    assert events_of(name, "open") == []


def test_a_valid_handshake_gets_mongrel2s_accept_key(ws) -> None:
    conn, name = ws(upgrade=b"WebSocket")  # Mongrel2 1.12.2 matches the token in any case
    assert conn.status == 101
    assert conn.header(b"Sec-WebSocket-Accept") == [accept_key(KEY)]
    assert events_of(name, "open") == [("open",)]


def test_a_handshake_without_a_key_is_plain_http_and_gets_426(ws) -> None:
    """Without the key Mongrel2 does not see an upgrade: the GET reaches ``get`` → 426."""
    conn, _name = ws(key=None)
    assert conn.status == 426
    assert conn.header(b"Upgrade") == [b"websocket"]
    assert conn.header(b"Sec-WebSocket-Version") == [b"13"]  # RFC 6455 section 4.2.2


def test_fact_mongrel2_turns_any_method_into_a_handshake(ws) -> None:
    """Mongrel2's doing: it checks the headers, not the method (section 4.2.1 wants GET), and
    replaces METHOD with ``WEBSOCKET_HANDSHAKE``, so the handler cannot tell a POST apart."""
    conn, _name = ws(method="POST")
    assert conn.status == 101


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (b"http://evil.example", 403),
        (b"null", 403),
        (b"http://127.0.0.1:{port}", 101),
        (b"HTTP://127.0.0.1:{port}/some/page", 101),
        (b"http://127.0.0.1:{port}@evil.example", 403),
    ],
)
def test_origin_checks(ws, port: int, origin: bytes, status: int) -> None:
    conn, _name = ws(extra=b"Origin: " + origin.replace(b"{port}", b"%d" % port) + b"\r\n")
    assert conn.status == status


def test_subprotocol_offers_are_split_trimmed_and_joined_across_lines(ws) -> None:
    conn, _name = ws(
        "proto",
        extra=b"Sec-WebSocket-Protocol: , a ,,b\r\nSec-WebSocket-Protocol: c\r\n",
    )
    assert conn.status == 101
    assert Rec.events["offered"][-1] == ("a", "b", "c")
    assert conn.header(b"Sec-WebSocket-Protocol") == [b"c"]


def test_an_empty_subprotocol_header_offers_nothing(ws) -> None:
    conn, _name = ws("proto", extra=b"Sec-WebSocket-Protocol: \r\n")
    assert conn.status == 101
    assert conn.header(b"Sec-WebSocket-Protocol") == []


@pytest.mark.parametrize(
    "offer",
    [
        pytest.param(b"chat v2", id="space"),
        pytest.param(b'"chat"', id="quoted"),
        pytest.param(b"chat;q=1", id="semicolon"),
        pytest.param(b"a, b/c", id="slash-in-the-second"),
    ],
)
def test_a_subprotocol_offer_that_is_not_a_token_is_refused(ws, offer: bytes) -> None:
    """``Sec-WebSocket-Protocol`` is a list of RFC 9110 tokens (RFC 6455 section 4.3):
    anything else is a malformed handshake, answered 400 before ``select_subprotocol``."""
    conn, name = ws("proto", extra=b"Sec-WebSocket-Protocol: " + offer + b"\r\n")
    assert conn.status == 400
    assert events_of(name, "open") == []
