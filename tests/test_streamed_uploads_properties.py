"""Streamed uploads (``upload.stream=1``) under generated input: whatever the order and the
content of Mongrel2's messages, the body arrives whole or the upload ends cleanly.

Driven without an event loop, through ``handle_message`` and a recording connection, so that
hundreds of cases run in a second or two.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import tnetstring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brubeck import Brubeck
from brubeck.request import Request

SENDER = b"m2"
#: tmp_path_factory is used per example on purpose: each gets a fresh spool directory
FIXTURE = HealthCheck.function_scoped_fixture


class Recording:
    """Stands in for Mongrel2Connection: keeps what the app sends."""

    sender_id = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sent.append(data)

    def ctl(self, sender: bytes, conn_id: bytes, **ctl: Any) -> None:
        self.sent.append(b"ctl %r" % sorted(ctl))

    def close_connection(self, request: Request) -> None:
        self.sent.append(b"")


def make_app(spool: Path) -> tuple[Brubeck, list[bytes]]:
    app = Brubeck(upload_dir=str(spool), upload_stream_window=1 << 20, max_upload_size=1 << 16)
    bodies: list[bytes] = []

    @app.add_route(r"^/up$", method="POST")
    def store(application: Brubeck, request: Request) -> str:
        bodies.append(request.body)
        return "stored"

    app.msg_conn = Recording()  # type: ignore[assignment]
    return app, bodies


def message(conn_id: int, headers: dict[bytes, Any], body: bytes) -> bytes:
    return b"%s %d /up %s%s" % (SENDER, conn_id, tnetstring.dumps(headers), tnetstring.dumps(body))


def first(conn_id: int, body: bytes, length: int | None, done: bool = False) -> bytes:
    headers: dict[bytes, Any] = {
        b"METHOD": b"POST",
        b"VERSION": b"HTTP/1.1",
        b"PATH": b"/up",
        b"URI": b"/up",
        b"UPLOAD_STREAM": b"0",
    }
    if length is None:
        headers[b"transfer-encoding"] = b"chunked"
    else:
        headers[b"content-length"] = b"%d" % length
    if done:
        headers[b"UPLOAD_STREAM_DONE"] = b"1"
    return message(conn_id, headers, body)


def piece(conn_id: int, offset: bytes, body: bytes, done: bool) -> bytes:
    headers = {b"UPLOAD_STREAM": offset}
    if done:
        headers[b"UPLOAD_STREAM_DONE"] = b"1"
    return message(conn_id, headers, body)


def disconnect(conn_id: int) -> bytes:
    headers = tnetstring.dumps({b"METHOD": b"JSON"})
    return b"%s %d @* %s%s" % (SENDER, conn_id, headers, tnetstring.dumps(b'{"type":"disconnect"}'))


def spooled(spool: Path) -> list[Path]:
    return list(spool.glob("brubeck-upload.*"))


@st.composite
def split_body(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]], list[int]]:
    """A body, its pieces as (offset, bytes), and an order to send all but the first in."""
    body = draw(st.binary(max_size=3000))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=8)))
    edges = [0, *[c for c in cuts if c < len(body)], len(body)]
    pieces = [(start, body[start:end]) for start, end in itertools.pairwise(edges)]
    order = draw(st.permutations(range(1, len(pieces))))
    return body, pieces, list(order)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(split=split_body(), chunked=st.booleans())
def test_pieces_in_any_order_give_the_handler_the_whole_body(
    tmp_path_factory: Any, split: tuple[bytes, list[tuple[int, bytes]], list[int]], chunked: bool
) -> None:
    body, pieces, order = split
    spool = tmp_path_factory.mktemp("spool")
    app, bodies = make_app(spool)
    length = None if chunked else len(body)
    last = len(pieces) - 1
    app.handle_message(first(7, pieces[0][1], length, done=last == 0))
    for index in order:
        offset, data = pieces[index]
        app.handle_message(piece(7, b"%d" % offset, data, done=index == last))
    assert bodies == [body]
    assert spooled(spool) == [] and len(app._streams) == 0


EVENTS = st.one_of(
    st.tuples(
        st.just("first"),
        st.integers(1, 2),
        st.binary(max_size=40),
        st.one_of(st.none(), st.integers(0, 200)),
    ),
    st.tuples(
        st.just("piece"),
        st.integers(1, 3),
        st.one_of(
            st.integers(0, 200).map(lambda n: b"%d" % n),
            st.sampled_from([b"", b"-1", b"x", b"1e3", b" 5", b"9" * 30]),
        ),
        st.binary(max_size=40),
        st.booleans(),
    ),
    st.tuples(st.just("disconnect"), st.integers(1, 3)),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(EVENTS, max_size=25))
def test_any_sequence_of_messages_ends_cleanly(tmp_path_factory: Any, events: list[tuple]) -> None:
    spool = tmp_path_factory.mktemp("spool")
    app, _ = make_app(spool)
    for event in events:
        if event[0] == "first":
            _, conn_id, data, length = event
            app.handle_message(first(conn_id, data, length))
        elif event[0] == "piece":
            _, conn_id, offset, data, done = event
            app.handle_message(piece(conn_id, offset, data, done))
        else:
            app.handle_message(disconnect(event[1]))
    for conn_id in (1, 2, 3):
        app.handle_message(disconnect(conn_id))
    assert len(app._streams) == 0
    assert spooled(spool) == []
