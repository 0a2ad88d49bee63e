"""protocol.py: Mongrel2's wire format, checked against the bytes a real Mongrel2 sent."""

from __future__ import annotations

import json
import re

import pytest
import tnetstring
from hypothesis import given
from hypothesis import strategies as st

from brubeck.protocol import (
    MAX_TARGETS,
    Message,
    ProtocolError,
    format_close,
    format_ctl,
    format_deliver,
    format_reply,
    parse,
)
from tests import fixtures

SENDER = fixtures.SENDER


def message(headers: object, body: object = b"", head: bytes = b"S 1 /p ") -> bytes:
    """A raw message whose headers and body are any tnetstring-able values."""
    return head + tnetstring.dumps(headers) + tnetstring.dumps(body)


def json_message(headers_json: bytes) -> bytes:
    """A raw message in Mongrel2's JSON header protocol."""
    return message(headers_json)


def parse_error(raw: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        parse(raw)
    assert str(info.value), "a ProtocolError must say what was wrong"
    return str(info.value)


# Parsing the verified fixtures


def test_parse_get_with_query() -> None:
    msg = parse(fixtures.GET_QUERY)
    assert (msg.sender, msg.conn_id, msg.path, msg.body) == (SENDER, b"1", b"/hello/world", b"")
    assert msg.method == b"GET"
    assert msg.headers == {
        b"REMOTE_ADDR": b"127.0.0.1",
        b"METHOD": b"GET",
        b"URL_SCHEME": b"http",
        b"PATTERN": b"/",
        b"QUERY": b"a=1&b=two",
        b"URI": b"/hello/world?a=1&b=two",
        b"VERSION": b"HTTP/1.1",
        b"PATH": b"/hello/world",
        b"host": b"127.0.0.1:6767",
        b"user-agent": b"curl/7.88.1",
        b"accept": b"*/*",
        b"x-forwarded-for": b"127.0.0.1",
    }
    assert not msg.is_notice
    assert msg.notice_type() is None


def test_parse_post_with_body() -> None:
    msg = parse(fixtures.POST_FORM)
    assert (msg.conn_id, msg.path, msg.method) == (b"2", b"/post", b"POST")
    assert msg.body == b"name=value&x=y"
    assert msg.headers[b"content-length"] == b"14"
    assert msg.headers[b"content-type"] == b"application/x-www-form-urlencoded"
    assert b"QUERY" not in msg.headers


def test_parse_repeated_headers_become_lists() -> None:
    msg = parse(fixtures.REPEATED_HEADERS)
    assert msg.headers[b"x-dup"] == [b"one", b"two", b"three"]
    assert msg.headers[b"cookie"] == [b"a=1", b"b=2"]
    assert msg.headers[b"accept"] == b"*/*"


def test_parse_fragment() -> None:
    msg = parse(fixtures.FRAGMENT)
    assert (msg.conn_id, msg.path) == (b"5", b"/frag/x")
    assert msg.headers[b"FRAGMENT"] == b"top"
    assert msg.headers[b"URI"] == b"/frag/x?q=1"


def test_parse_websocket_handshake_body_is_the_accept_key() -> None:
    msg = parse(fixtures.WEBSOCKET_HANDSHAKE)
    assert (msg.conn_id, msg.method) == (b"26", b"WEBSOCKET_HANDSHAKE")
    assert msg.body == b"i7/c7XWCeQrSwxOumCFE1x/0KdY="
    assert msg.headers[b"sec-websocket-key"] == b"dMvTvJa4tS1UepA1Fn/DsA=="


@pytest.mark.parametrize(
    ("raw", "done"), [(fixtures.UPLOAD_START, False), (fixtures.UPLOAD_DONE, True)]
)
def test_parse_upload_steps(raw: bytes, done: bool) -> None:
    msg = parse(raw)
    assert msg.body == b""
    assert msg.headers[b"x-mongrel2-upload-start"] == b"/tmp/upload.C1CV4a"
    assert (b"x-mongrel2-upload-done" in msg.headers) is done


def test_json_variant_has_the_tnetstring_shape() -> None:
    msg = parse(fixtures.JSON_GET)
    assert (msg.sender, msg.conn_id, msg.path, msg.body) == (SENDER, b"1", b"/json/path", b"")
    assert all(isinstance(key, bytes) for key in msg.headers)
    assert msg.method == b"GET"
    assert msg.headers[b"x-dup"] == [b"one", b"two"]
    assert msg.headers[b"DOWNLOAD_CREDITS"] == b"102400"
    assert msg.headers[b"x-q"] == b'say "hi" \\back'


def test_json_and_tnetstring_variants_agree() -> None:
    headers = {b"METHOD": b"GET", b"PATH": b"/x", b"x-dup": [b"1", b"2"]}
    as_json = b'{"METHOD":"GET","PATH":"/x","x-dup":["1","2"]}'
    assert parse(json_message(as_json)).headers == parse(message(headers)).headers


def test_json_variant_with_a_raw_tab_in_a_header() -> None:
    # Mongrel2 does not escape control characters in JSON mode (MONGREL2.md §B9.10).
    msg = parse(json_message(b'{"METHOD":"GET","x-tab":"a\tb"}'))
    assert msg.headers[b"x-tab"] == b"a\tb"


def test_json_variant_gives_non_utf8_bytes_back_unchanged() -> None:
    msg = parse(json_message(b'{"METHOD":"GET","x-raw":"\xff\xfe ok"}'))
    assert msg.headers[b"x-raw"] == b"\xff\xfe ok"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (fixtures.DISCONNECT, "disconnect"),
        (fixtures.DISCONNECT_JSON, "disconnect"),
        (fixtures.CREDITS, "credits"),
        (fixtures.CREDITS_JSON, "credits"),
    ],
)
def test_notices_in_both_protocols(raw: bytes, kind: str) -> None:
    msg = parse(raw)
    assert msg.is_notice
    assert msg.path == b"@*"
    assert msg.method == b"JSON"
    assert msg.notice_type() == kind


def test_credits_notice_carries_the_byte_count() -> None:
    assert parse(fixtures.CREDITS).headers[b"DOWNLOAD_CREDITS"] == b"50"
    assert parse(fixtures.CREDITS_JSON).headers[b"DOWNLOAD_CREDITS"] == b"56"


@pytest.mark.parametrize(
    "body",
    [b"not json", b'["disconnect"]', b'{"type": 5}', b"{}", b"[" * 100_000, b"\xff"],
)
def test_notice_type_of_an_odd_notice_body_is_none(body: bytes) -> None:
    msg = parse(message({b"METHOD": b"JSON"}, body, head=b"S 9 @* "))
    assert msg.is_notice
    assert msg.notice_type() is None


def test_notice_type_is_none_for_a_json_message_on_a_normal_path() -> None:
    msg = parse(message({b"METHOD": b"JSON"}, b'{"type":"disconnect"}', head=b"S 9 /chat "))
    assert not msg.is_notice
    assert msg.notice_type() is None


def test_method_of_a_repeated_method_header_is_the_last() -> None:
    assert parse(message({b"METHOD": [b"GET", b"POST"]})).method == b"POST"
    assert parse(message({})).method == b""


def test_path_is_not_percent_decoded() -> None:
    assert parse(message({}, head=b"S 1 /a%20b/c ")).path == b"/a%20b/c"


def test_body_may_hold_spaces_and_any_byte() -> None:
    body = bytes(range(256)) + b" , ] }"
    assert parse(message({b"METHOD": b"POST"}, body)).body == body


def test_message_repr_names_sender_id_and_path() -> None:
    assert repr(parse(fixtures.FRAGMENT)) == f"<Message {SENDER!r} b'5' b'/frag/x'>"


# Malformed messages: always ProtocolError, with the reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "space-separated fields"),
        (b"S 1 /p", "space-separated fields"),
        (b"S 1", "space-separated fields"),
        (b" 1 /p 0:}0:,", "empty sender"),
        (b"S x1 /p 0:}0:,", "decimal digits"),
        (b"S -1 /p 0:}0:,", "decimal digits"),
        (b"S \xff /p 0:}0:,", "decimal digits"),
        (b"S 1 /p 99:}0:,", "tnetstring"),
        (b"S 1 /p 0:}", "tnetstring"),
        (b"S 1 /p 0:}5:ab,", "tnetstring"),
        (b"S 1 /p 0:}0:", "tnetstring"),
        (b"S 1 /p x:}0:,", "tnetstring"),
        (b"S 1 /p 3:1.x^0:,", "tnetstring"),
        (b"S 1 /p 0:]0:,", "headers must be a dict"),
        (b"S 1 /p 1:5#0:,", "headers must be a dict"),
        (b"S 1 /p 0:~0:,", "headers must be a dict"),
        (b"S 1 /p 0:}0:}", "body must be a string"),
        (b"S 1 /p 0:}1:1#", "body must be a string"),
        (b"S 1 /p 0:}0:,x", "trailing"),
        (b"S 1 /p 0:}0:,0:,", "trailing"),
        (b"\xff\xfe \xff /\xff 0:}0:,", "decimal digits"),
        (b"\x80\x81\x82\x83", "space-separated fields"),
    ],
)
def test_malformed_message(raw: bytes, reason: str) -> None:
    assert reason in parse_error(raw)


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe \xff\xff \xfe \xff", b"\xc3( \xa0\xa1 \xe2\x28\xa1 \xf0\x90\x28\xbc", b"GARBAGE"],
)
def test_non_utf8_garbage_is_a_protocol_error(raw: bytes) -> None:
    parse_error(raw)


@pytest.mark.parametrize(
    ("headers_json", "reason"),
    [
        (b"{not json", "bad JSON headers"),
        (b'["METHOD", "GET"]', "must be an object"),
        (b'"METHOD"', "must be an object"),
        (b'{"METHOD": 1}', "must be strings"),
        (b'{"METHOD": null}', "must be strings"),
        (b'{"x": ["a", {"b": 1}]}', "must be strings"),
        (b'{"x": {"\xc3\xa9": 1}}', "must be strings"),
        (b'{"\\ud800": "x"}', "lone surrogate"),
        (b'{"x": "\\udfff"}', "lone surrogate"),
        (b"[" * 100_000, "bad JSON headers"),
    ],
)
def test_malformed_json_headers(headers_json: bytes, reason: str) -> None:
    assert reason in parse_error(json_message(headers_json))


def test_deeply_nested_tnetstring_is_a_protocol_error() -> None:
    nested = b"0:,"
    for _ in range(5000):
        nested = b"%d:%s]" % (len(nested), nested)
    assert "tnetstring" in parse_error(b"S 1 /p " + nested + b"0:,")


@pytest.mark.parametrize("name", sorted(fixtures.ALL))
def test_every_truncation_of_a_fixture_is_a_protocol_error(name: str) -> None:
    raw = fixtures.ALL[name]
    for end in range(len(raw)):
        with pytest.raises(ProtocolError):
            parse(raw[:end])


def _tnetstring_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.binary(max_size=8), st.integers(), st.booleans(), st.none(), st.floats(width=32)
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.binary(max_size=6), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _parses_or_refuses(raw: bytes) -> None:
    try:
        msg = parse(raw)
    except ProtocolError as exc:
        assert str(exc)
    else:
        assert isinstance(msg, Message)
        assert isinstance(msg.headers, dict)
        assert isinstance(msg.body, bytes)
        assert msg.conn_id.isdigit()


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_protocol_error(raw: bytes) -> None:
    _parses_or_refuses(raw)


@given(
    st.sampled_from(sorted(fixtures.ALL.values())),
    st.integers(min_value=0, max_value=500),
    st.binary(max_size=4),
)
def test_corrupted_fixtures_parse_or_raise_protocol_error(raw: bytes, at: int, junk: bytes) -> None:
    at %= len(raw)
    _parses_or_refuses(raw[:at] + junk + raw[at + 1 :])


@given(_tnetstring_values(), _tnetstring_values())
def test_any_tnetstring_pair_parses_or_raises_protocol_error(headers: object, body: object) -> None:
    _parses_or_refuses(message(headers, body))


@given(st.text(max_size=40), st.text(max_size=40))
def test_any_json_headers_parse_or_raise_protocol_error(key: str, value: str) -> None:
    text = json.dumps({key: value, "METHOD": [value]}).encode()
    _parses_or_refuses(json_message(text))
    _parses_or_refuses(json_message(text[: len(text) // 2]))


# Replies


def test_format_reply() -> None:
    assert format_reply(SENDER, b"12", b"HTTP/1.1 200 OK\r\n\r\n") == (
        SENDER + b" 2:12, HTTP/1.1 200 OK\r\n\r\n"
    )


def test_format_reply_with_an_empty_body_is_a_close() -> None:
    assert format_reply(b"S", b"7", b"") == b"S 1:7, "


def test_format_deliver_to_a_few_ids() -> None:
    # The shape Mongrel2 accepted to answer three long-polls at once (MONGREL2.md §B9.2).
    assert format_deliver(SENDER, [b"22", 23, b"24"], b"hi") == [SENDER + b" 8:22 23 24, hi"]


def _targets(reply: bytes) -> list[bytes]:
    found = re.fullmatch(rb"S (\d+):([\d ]+), body", reply)
    assert found, reply
    length, targets = found.groups()
    assert int(length) == len(targets), "the length prefix must count the id list exactly"
    return targets.split(b" ")


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        (1, [1]),
        (127, [127]),
        (128, [128]),
        (129, [128, 1]),
        (256, [128, 128]),
        (300, [128, 128, 44]),
    ],
)
def test_format_deliver_splits_at_128_ids(count: int, sizes: list[int]) -> None:
    ids = list(range(1, count + 1))
    replies = format_deliver(b"S", ids, b"body")
    assert [len(_targets(r)) for r in replies] == sizes
    assert [int(i) for r in replies for i in _targets(r)] == ids
    assert MAX_TARGETS == 128


def test_format_deliver_to_no_ids_sends_nothing() -> None:
    assert format_deliver(b"S", [], b"x") == []


@pytest.mark.parametrize("bad", [b"1a", b"", b"-1", b"1 2", b"X 1"])
def test_format_deliver_refuses_ids_that_are_not_numbers(bad: bytes) -> None:
    with pytest.raises(ValueError, match="decimal"):
        format_deliver(b"S", [b"1", bad], b"x")


def test_format_close() -> None:
    assert format_close(b"S", [3, b"4"]) == [b"S 3:3 4, "]
    replies = format_close(b"S", range(1, 201))
    assert len(replies) == 2
    assert all(r.endswith(b", ") for r in replies)


def test_format_ctl_cancel_is_byte_exact() -> None:
    assert format_ctl(SENDER, b"18", cancel=True) == fixtures.CTL_CANCEL


@pytest.mark.parametrize(
    ("ctl", "payload"),
    [
        ({"keep_alive": True}, {b"keep-alive": True}),
        ({"credits": 4096}, {b"credits": 4096}),
        ({"cancel": True, "keep_alive": 1}, {b"cancel": True, b"keep-alive": 1}),
    ],
)
def test_format_ctl_payloads(ctl: dict[str, object], payload: dict[bytes, object]) -> None:
    reply = format_ctl(b"S", b"5", **ctl)
    head, body = reply[: len(b"S 3:X 5, ")], reply[len(b"S 3:X 5, ") :]
    assert head == b"S 3:X 5, "
    assert tnetstring.loads(body) == [b"ctl", payload]


def test_format_ctl_length_counts_the_x_prefix() -> None:
    assert format_ctl(b"S", b"12345", credits=1).startswith(b"S 7:X 12345, ")


def test_format_ctl_needs_a_control() -> None:
    with pytest.raises(ValueError, match="at least one control"):
        format_ctl(b"S", b"1")
