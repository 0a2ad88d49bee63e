"""The WebSocket codec, checked against the bytes Mongrel2 and the client exchanged (§B7)."""

from __future__ import annotations

import pytest

from brubeck.wsframes import (
    CloseCode,
    FrameError,
    Opcode,
    accept_key,
    decode_frame,
    decode_text,
    encode_close,
    encode_frame,
    encode_message,
    handshake_reply,
    is_accept_key,
    is_valid_close_code,
    parse_close,
    parse_flags,
    parse_subprotocols,
)

# §B7: the client's key, the body Mongrel2 sent, and the 101 that was answered.
KEY = b"dMvTvJa4tS1UepA1Fn/DsA=="
ACCEPT = b"i7/c7XWCeQrSwxOumCFE1x/0KdY="
REPLY_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: i7/c7XWCeQrSwxOumCFE1x/0KdY=\r\n\r\n"
)


def test_accept_key_is_what_mongrel2_computes() -> None:
    assert accept_key(KEY) == ACCEPT
    assert accept_key(KEY.decode()) == ACCEPT
    assert is_accept_key(ACCEPT)


@pytest.mark.parametrize("body", [b"", b"short=", ACCEPT[:-1] + b"!", b"x" * 28])
def test_not_an_accept_key(body: bytes) -> None:
    assert not is_accept_key(body)


def test_handshake_reply_matches_the_verified_bytes() -> None:
    assert handshake_reply(ACCEPT) == REPLY_101


def test_handshake_reply_with_subprotocol_and_headers() -> None:
    reply = handshake_reply(ACCEPT, "chat.v1", [("Set-Cookie", "a=1")])
    assert reply == REPLY_101[:-2] + b"Sec-WebSocket-Protocol: chat.v1\r\nSet-Cookie: a=1\r\n\r\n"


@pytest.mark.parametrize(
    ("opcode", "payload", "wire"),
    [  # what the handler sent in §B7
        (Opcode.TEXT, b"echo:hello text", b"\x81\x0fecho:hello text"),
        (Opcode.BINARY, b"echo:\x00\x01binary", b"\x82\recho:\x00\x01binary"),
        (Opcode.PONG, b"pingdata", b"\x8a\x08pingdata"),
        (Opcode.CLOSE, b"\x03\xe8", b"\x88\x02\x03\xe8"),
    ],
)
def test_encode_frame_verified_bytes(opcode: int, payload: bytes, wire: bytes) -> None:
    assert encode_frame(opcode, payload) == wire


def test_encode_frame_64_bit_length_as_verified() -> None:
    frame = encode_frame(Opcode.TEXT, b"echo:" + b"x" * 70000)
    assert frame[:10] == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11u"
    assert len(frame) == 10 + 70005


@pytest.mark.parametrize(
    ("size", "head_size", "second_byte"),
    [(0, 2, 0), (125, 2, 125), (126, 4, 126), (65535, 4, 126), (65536, 10, 127)],
)
def test_length_encodings_at_their_boundaries(size: int, head_size: int, second_byte: int) -> None:
    frame = encode_frame(Opcode.BINARY, b"a" * size)
    assert len(frame) == head_size + size
    assert frame[1] == second_byte
    assert decode_frame(frame) == (True, Opcode.BINARY, b"a" * size, len(frame))


def test_decode_frame_unmasks_and_waits_for_the_rest() -> None:
    mask = b"\x01\x02\x03\x04"
    payload = b"Hello"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    frame = b"\x81\x85" + mask + masked
    assert decode_frame(frame) == (True, Opcode.TEXT, b"Hello", len(frame))
    for cut in range(len(frame)):
        assert decode_frame(frame[:cut]) is None
    two = encode_frame(Opcode.TEXT, b"a") + encode_frame(Opcode.PING, b"b", fin=False)
    first = decode_frame(two)
    assert first is not None
    assert decode_frame(two, first[3]) == (False, Opcode.PING, b"b", len(two))


def test_encode_message_picks_the_opcode() -> None:
    assert encode_message("hé") == b"\x81\x03h\xc3\xa9"
    assert encode_message(b"\x00") == b"\x82\x01\x00"
    assert encode_message("x", binary=True) == b"\x82\x01x"


@pytest.mark.parametrize(
    ("flags", "opcode"),
    [
        (b"0x81", Opcode.TEXT),
        (b"0x82", Opcode.BINARY),
        (b"0x88", Opcode.CLOSE),
        (b"0x89", Opcode.PING),
        (b"0x8A", Opcode.PONG),
        (b"0x8a", Opcode.PONG),
        (b"0x1", Opcode.TEXT),  # FIN is not required: Mongrel2 reassembled the message
        ([b"0x81", b"0x82"], Opcode.BINARY),
    ],
)
def test_parse_flags(flags: bytes | list[bytes], opcode: int) -> None:
    assert parse_flags(flags) == opcode


@pytest.mark.parametrize(
    "flags", [None, b"", b"81", b"0x", b"0xZZ", b"0xC1", b"0x91", b"0x83", b"0x8B", b"0x80", []]
)
def test_bad_flags_are_protocol_errors(flags: bytes | None) -> None:
    with pytest.raises(FrameError) as error:
        parse_flags(flags)
    assert error.value.code == CloseCode.PROTOCOL_ERROR


def test_decode_text_refuses_invalid_utf8() -> None:
    assert decode_text("✓".encode()) == "✓"
    for bad in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x9c"):  # overlong, surrogate, cut
        with pytest.raises(FrameError) as error:
            decode_text(bad)
        assert error.value.code == CloseCode.INVALID_DATA


def test_encode_close() -> None:
    assert encode_close() == b"\x03\xe8"
    assert encode_close(4000, "bye") == b"\x0f\xa0bye"
    assert encode_close(None) == b""
    with pytest.raises(ValueError, match="needs a close code"):
        encode_close(None, "why")
    with pytest.raises(ValueError, match="123 bytes"):
        encode_close(1000, "é" * 62)
    encode_close(1000, "x" * 123)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_codes_that_may_not_be_sent(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(ValueError):
        encode_close(code)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_codes_that_may_be_sent(code: int) -> None:
    assert parse_close(encode_close(code, "r")) == (code, "r")


def test_parse_close() -> None:
    assert parse_close(b"") == (CloseCode.NO_STATUS, "")
    assert parse_close(b"\x03\xe8") == (1000, "")
    for payload, code in (
        (b"\x03", CloseCode.PROTOCOL_ERROR),
        (b"\x03\xed", CloseCode.PROTOCOL_ERROR),  # 1005 is never on the wire
        (b"\x00\x01", CloseCode.PROTOCOL_ERROR),
        (b"\x03\xe8\xff", CloseCode.INVALID_DATA),
    ):
        with pytest.raises(FrameError) as error:
            parse_close(payload)
        assert error.value.code == code


def test_parse_subprotocols() -> None:
    assert parse_subprotocols(["a, b", "c", " ,"]) == ["a", "b", "c"]
    assert parse_subprotocols([]) == []
