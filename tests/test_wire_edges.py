"""The wire layer under hostile or unlucky conditions, through real ZeroMQ sockets.

Raw bytes go in through a PUSH socket playing Mongrel2 (``Mongrel2Side``); what comes out of
the app's publisher is read back as Mongrel2 would. What is owed: malformed input is dropped
with a log line and never stops the receive loop; a reply either reaches Mongrel2 well formed
or is refused loudly at once; nothing waits forever because of a reply that could not go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import tnetstring
import zmq

from brubeck import Brubeck, Mongrel2Connection
from brubeck.request import Request
from tests.test_connection import Mongrel2Side, handshaken, until


def request(conn_id: int | bytes, path: bytes = b"/a", sender: bytes = b"S") -> bytes:
    """A GET as Mongrel2 sends it (tnetstring protocol)."""
    headers = {
        b"METHOD": b"GET",
        b"VERSION": b"HTTP/1.1",
        b"PATH": path,
        b"URI": path,
        b"PATTERN": b"/",
        b"host": b"localhost",
    }
    cid = conn_id if isinstance(conn_id, bytes) else b"%d" % conn_id
    return b"%s %s %s %s0:," % (sender, cid, path, tnetstring.dumps(headers))


async def next_reply(side: Mongrel2Side, timeout: float = 1.0) -> bytes:
    return await asyncio.wait_for(side.received.get(), timeout)


async def serving(app: Brubeck) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(app.serve())
    await asyncio.sleep(0.01)
    return task


async def stopped(app: Brubeck, task: asyncio.Task[None]) -> None:
    app.stop()
    await asyncio.wait_for(task, 3)


# Malformed input through the real receive loop


async def test_malformed_frames_are_each_logged_and_the_loop_goes_on(
    new_mongrel2: Callable[..., Mongrel2Side], caplog: pytest.LogCaptureFixture
) -> None:
    """Every kind of junk a PULL socket can yield, then a good request that is answered."""
    side = new_mongrel2()
    app = Brubeck()

    @app.add_route(r"^/a$", method="GET")
    def page(application: Brubeck, req: Request) -> str:
        return "ok"

    app.msg_conn = side.connection()
    task = await serving(app)
    good = request(7)
    junk = [
        b"",  # an empty frame
        b"x" * 3_000_000,  # huge, no spaces at all
        b"S -1 /a " + good.split(b" ", 3)[3],  # a negative connection id
        b"S 1x /a " + good.split(b" ", 3)[3],  # not decimal
        b"S \xd9\xa1 /a " + good.split(b" ", 3)[3],  # a non-ASCII digit
        good[:-1],  # truncated body
        good + b"0:,",  # trailing data
        b"S 2 /a " + b"9" * 40 + b":}0:,",  # a length no tnetstring has
        b"S 3 @* 0:]0:,",  # a notice whose headers are a list, not a dict
    ]
    try:
        for raw in junk:
            await side.push.send(raw)
        await side.push.send_multipart([b"S 4 /a ", good.split(b" ", 3)[3]])  # split in frames
        await side.push.send(good)
        reply = await next_reply(side, 2)
    finally:
        await stopped(app, task)
    assert reply.startswith(b"S 1:7, HTTP/1.1 200 OK\r\n")
    dropped = [r for r in caplog.records if "dropped a malformed message" in r.getMessage()]
    assert len(dropped) == len(junk) + 2  # each frame of the multipart message too


# Replies Mongrel2 would refuse (MONGREL2.md §A4: logged there, dropped, 100 ms stall)


@pytest.mark.parametrize(
    ("how", "bad"), [("send", -1), ("send", b"abc"), ("ctl", b""), ("ctl", -5)], ids=repr
)
async def test_replies_to_ids_that_are_not_decimal_are_refused(
    new_mongrel2: Callable[..., Mongrel2Side], bad: Any, how: str
) -> None:
    """Was a bug. ``send`` and ``ctl`` formatted any id they were given (``S 2:-1, ...``,
    ``S 2:X , ...``): Mongrel2's reply grammar takes only ``digit+`` ids, so it logged the
    reply, dropped it and stalled its handler task for 100 ms, and nothing told the app.
    ``deliver`` and ``close_connections`` already refuse such ids with a ValueError
    (``format_deliver``); ``send`` and ``ctl`` must too, and publish nothing."""
    side = new_mongrel2()
    connection = side.connection(sender_id="S")
    connection.open()
    try:
        await until(lambda: connection._live, "the subscription")
        with pytest.raises(ValueError):
            if how == "send":
                connection.send(None, bad, b"HTTP/1.1 200 OK\r\n\r\n")
            else:
                connection.ctl(None, bad, cancel=True)
        await side.assert_quiet()
    finally:
        await connection.close(flush_timeout=0.1)


@pytest.mark.parametrize(
    ("where", "sender"),
    [("sender_id", b"my_app"), ("argument", b""), ("argument", b"two words")],
    ids=repr,
)
async def test_sender_tokens_mongrel2_refuses_are_refused(
    new_mongrel2: Callable[..., Mongrel2Side], sender: bytes, where: str
) -> None:
    """Was a bug. A reply's first token must match ``(alpha | digit | '-')+`` or Mongrel2
    drops the whole reply (and stalls 100 ms); yet ``Mongrel2Connection(sender_id=...)`` and
    ``send``/``deliver`` took any bytes (``my_app 1:1, ...``, `` 1:1, ...``), so every reply to
    ids was lost without a word on the app's side. Such a sender must be a ValueError, at
    construction or at the send, and nothing may be published."""
    side = new_mongrel2()
    with pytest.raises(ValueError):
        if where == "sender_id":
            connection = side.connection(sender_id=sender)
        else:
            connection = side.connection(sender_id="S")
        connection.open()
        try:
            await until(lambda: connection._live, "the subscription")
            if where == "sender_id":
                connection.deliver(None, [1, 2], b"news")
            else:
                connection.send(sender, 1, b"news")
        finally:
            await connection.close(flush_timeout=0.1)
    await side.assert_quiet()


# Reading in batches


async def test_a_max_batch_below_one_is_refused_or_still_reads(
    new_mongrel2: Callable[..., Mongrel2Side],
) -> None:
    """Was a bug. ``max_batch=0`` made ``_read`` read nothing and reschedule itself at once,
    for ever: 100% CPU and no message ever handled. Like ``reply_batch``, it must be refused
    with a ValueError (or else still read)."""
    side = new_mongrel2()
    try:
        connection = side.connection(max_batch=0)
    except ValueError:
        return
    connection.open()
    received: list[bytes] = []
    try:
        await side.push.send(b"hello")
        connection.start_reading(received.append)
        await until(lambda: received, "the message", timeout=0.5)
    finally:
        await connection.close(flush_timeout=0.1)


# A full socket: the backlog


async def test_a_backlog_waiting_for_a_stalled_mongrel2_does_not_spin(
    new_mongrel2: Callable[..., Mongrel2Side],
) -> None:
    """Was a bug. When Mongrel2 stops reading, replies wait in the backlog and the flusher
    awaits ``pub.poll(POLLOUT)``, but an XPUB socket always reports POLLOUT (libzmq's
    ``dist_t::has_out`` is true): the flusher retried the send thousands of times a second,
    holding the event loop's thread at 100% CPU for as long as Mongrel2 stalled. It must
    wait without burning the CPU (back off between retries), and still send everything, in
    order, once Mongrel2 reads again."""
    side = new_mongrel2()
    connection = side.connection(sender_id="S")
    connection.open()
    try:
        await until(lambda: connection._live, "the subscription")
        side.stop_reading()
        await asyncio.sleep(0.01)
        body = b"x" * 1000
        count = 4000
        for n in range(count):
            connection.send(None, n, body)
        await asyncio.sleep(0.05)
        assert connection.pending > 0, "the socket should have filled up"
        started = time.thread_time()
        await asyncio.sleep(0.4)
        busy = time.thread_time() - started
        assert side.sub is not None
        side._reader = asyncio.get_running_loop().create_task(side._read(side.sub))
        replies = [await next_reply(side, 2) for _ in range(count)]
    finally:
        await connection.close(flush_timeout=0.1)
    assert replies == [b"S %d:%d, %s" % (len(b"%d" % n), n, body) for n in range(count)]
    assert busy < 0.1, f"the event loop's thread was busy {busy:.2f}s of 0.4s idle"


async def test_a_reply_refused_with_buffer_error_does_not_leak_the_requests_slot(
    new_mongrel2: Callable[..., Mongrel2Side],
) -> None:
    """Was a bug. An awaiting handler's answer is sent from the task's done callback; when
    the backlog was full (Mongrel2 not reading yet), ``send_raw`` raised BufferError out of
    ``respond`` through ``AnswerOrder.release`` and ``_task_answered``, which then never
    reached ``_forget``: the finished task kept its ``max_in_flight`` slot for good. Once
    ``max_in_flight`` answers had been refused, every later request was held and never
    answered, even after Mongrel2 came up. The refused answer must be logged and dropped,
    and the slot freed."""
    side = new_mongrel2(bound=False)  # Mongrel2 has not subscribed yet: replies wait
    app = Brubeck(max_in_flight=1)

    @app.add_route(r"^/a$", method="GET")
    async def page(application: Brubeck, req: Request) -> str:
        await asyncio.sleep(0)
        return "ok"

    app.msg_conn = Mongrel2Connection(
        side.pull_addr, side.pub_addr, context=side.context, backlog_limit=1
    )
    task = await serving(app)
    try:
        for n in (1, 2):  # 1 waits in the backlog; 2's answer does not fit
            await side.push.send(request(n))
        await asyncio.sleep(0.1)
        side.bind_sub()  # Mongrel2 comes up and reads
        first = await next_reply(side)
        await side.push.send(request(3))
        third = await next_reply(side)
    finally:
        await stopped(app, task)
    assert first.startswith(b"S 1:1, HTTP/1.1 200 OK\r\n")
    assert third.startswith(b"S 1:3, HTTP/1.1 200 OK\r\n")


# Mongrel2 going away


@pytest.fixture
async def tcp_mongrel2(new_mongrel2: Callable[..., Mongrel2Side]) -> Mongrel2Side:
    """Over TCP: only there do ZeroMQ's monitors report a disconnect."""
    return new_mongrel2("tcp")


async def test_a_loss_while_replies_are_being_sent_still_holds_replies_for_the_next_one(
    tcp_mongrel2: Mongrel2Side,
) -> None:
    """Was a bug. Mongrel2 stopped while this process answered a run of requests. Its
    unsubscription reached the XPUB socket while the receive loop's synchronous sends were
    processing the socket's commands, which consumed the descriptor's edge: the asyncio
    watcher (``_watch_subscriptions``) never woke, ``_live`` stayed True after the loss,
    and a reply sent before the next Mongrel2 subscribed went straight to a publisher with
    no subscriber, which discards it: silently lost, ``pending`` 0. Replies made between two
    Mongrel2s must wait for the next one (the loss is known from the monitors anyway)."""
    side = tcp_mongrel2
    connection = side.connection(sender_id="S", reply_batch=1)
    connection.on_lost = lambda queued, unsent: None
    connection.open()
    await handshaken(connection)
    for n in range(4):
        await side.push.send(b"request %d" % n)
    pull = connection._pull_sync
    assert pull is not None
    await until(lambda: int(pull.get(zmq.EVENTS)) & zmq.POLLIN, "queued")
    await asyncio.sleep(0.05)
    seen: list[bytes] = []

    def on_message(raw: bytes) -> None:
        if not seen:  # Mongrel2 is stopped now, its sockets closed
            assert side._reader is not None and side.sub is not None
            side._reader.cancel()
            side.sub.close(linger=0)
            side.push.close(linger=0)
        seen.append(raw)
        time.sleep(0.03)  # a handler's work, while ZeroMQ's threads see the loss
        connection.send(None, len(seen), b"answer")

    try:
        connection.start_reading(on_message)
        await until(lambda: connection.epoch == 1, "the loss")
        side.sub = side._reader = None
        await asyncio.sleep(0.05)
        connection.send(None, 9, b"for the next one")
        side.start()
        reply = await next_reply(side)
    finally:
        await connection.close(flush_timeout=0.1)
    assert reply == b"S 1:9, for the next one"


async def test_the_learned_sender_id_follows_a_restarted_mongrel2(
    tcp_mongrel2: Mongrel2Side,
) -> None:
    """Was a bug. With no ``sender_id`` given, the app learns it from the first request,
    documented as suiting any ``recv_ident``; but it was learned once for good. A Mongrel2
    restarted with another ``send_ident`` (and ``recv_ident = send_ident``) subscribes only
    to replies starting with the new one, so every ``deliver``/``ctl``/WebSocket broadcast
    to ids (``sender=None``) went out under the old ident and was filtered away without a
    trace. A new epoch's requests must teach the new sender id."""
    side = tcp_mongrel2
    app = Brubeck()

    @app.add_route(r"^/a$", method="GET")
    def page(application: Brubeck, req: Request) -> str:
        return "ok"

    app.msg_conn = side.connection()
    task = await serving(app)
    try:
        await handshaken(app.msg_conn)
        await side.push.send(request(1, sender=b"old-ident"))
        assert (await next_reply(side)).startswith(b"old-ident 1:1, HTTP/1.1 200 OK")
        await side.stop()
        await until(lambda: app.epoch == 1, "the loss")
        side.start()
        await handshaken(app.msg_conn)
        await side.push.send(request(1, sender=b"new-ident"))
        assert (await next_reply(side)).startswith(b"new-ident 1:1, HTTP/1.1 200 OK")
        app.msg_conn.deliver(None, [1], b"news")
        news = await next_reply(side)
    finally:
        await stopped(app, task)
    assert news == b"new-ident 1:1, news"
