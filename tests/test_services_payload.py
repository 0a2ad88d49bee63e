"""services/payload.py: the frames of bytes, text and JSON payloads, byte for byte."""

import pytest

from brubeck.services import PayloadError
from brubeck.services.payload import decode, encode, encode_error, error_message


@pytest.mark.parametrize(
    ("value", "frames"),
    [
        (b"\x00\xffraw", [b"bytes", b"\x00\xffraw"]),
        (b"", [b"bytes", b""]),
        ("héllo", [b"text", "héllo".encode()]),
        ("", [b"text", b""]),
        ({"a/b": [1, 2.5, None, True]}, [b"json", b'{"a/b":[1,2.5,null,true]}']),
        ([], [b"json", b"[]"]),
        (None, [b"json", b"null"]),
        (42, [b"json", b"42"]),
        ({"é": "ü"}, [b"json", '{"é":"ü"}'.encode()]),
    ],
)
def test_encode_and_decode(value, frames):
    assert encode(value) == frames
    assert decode(frames) == value


def test_bytearray_and_memoryview_are_bytes():
    assert encode(bytearray(b"ab")) == [b"bytes", b"ab"]
    assert encode(memoryview(b"cd")) == [b"bytes", b"cd"]


def test_an_untagged_single_frame_is_bytes():
    assert decode([b"plain"]) == b"plain"


@pytest.mark.parametrize("value", [object(), {1, 2}, float("nan"), {"k": b"bytes inside"}])
def test_what_json_cannot_carry_is_a_type_error(value):
    with pytest.raises(TypeError, match="bytes, str or a JSON-able value"):
        encode(value)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "1 frame or 2"),
        ([b"text", b"a", b"b"], "1 frame or 2"),
        ([b"yaml", b"a: 1"], "unknown payload encoding"),
        ([b"text", b"\xff"], "text payload that does not decode"),
        ([b"json", b"{nope"], "json payload that does not decode"),
    ],
)
def test_malformed_payloads(frames, message):
    with pytest.raises(PayloadError, match=message):
        decode(frames)


def test_error_replies():
    frames = encode_error("ValueError: bad input")
    assert frames == [b"error", b"ValueError: bad input"]
    assert error_message(frames) == "ValueError: bad input"
    assert error_message(encode("fine")) is None
    with pytest.raises(PayloadError):
        decode(frames)  # an error is not a value
