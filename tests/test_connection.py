"""connection.py: the two ZeroMQ sockets, against raw sockets playing Mongrel2's side."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import zmq
import zmq.asyncio

from brubeck.connection import Mongrel2Connection
from tests import fixtures

_names = itertools.count()


class Mongrel2Side:
    """Mongrel2's sockets: it binds a PUSH for requests and a SUB for replies (MONGREL2.md §A1).

    Like Mongrel2, it reads its SUB socket all the time: an idle ZeroMQ socket does not even
    attach new peers, so it would never pass a subscription on.
    """

    def __init__(self, context: zmq.asyncio.Context, transport: str) -> None:
        name = f"m2-test-{next(_names)}"
        self.context = context
        self.push = context.socket(zmq.PUSH)
        self.push.linger = 0
        self.sub: zmq.asyncio.Socket | None = None
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        if transport == "inproc":
            self.push.bind(f"inproc://{name}-send")
            self.pull_addr = f"inproc://{name}-send"
            self.pub_addr = f"inproc://{name}-recv"
        else:
            self.push.bind("tcp://127.0.0.1:*")
            self.pull_addr = self.push.last_endpoint.decode()
            self.bind_sub("tcp://127.0.0.1:*")
            assert self.sub is not None
            self.pub_addr = self.sub.last_endpoint.decode()

    def bind_sub(self, address: str | None = None) -> None:
        self.sub = self.context.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.bind(address or self.pub_addr)
        self.sub.subscribe(b"")
        self._reader = asyncio.get_running_loop().create_task(self._read(self.sub))

    async def _read(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            self.received.put_nowait(await sub.recv())

    def connection(self, **options: object) -> Mongrel2Connection:
        return Mongrel2Connection(
            self.pull_addr,
            self.pub_addr,
            context=self.context,
            **options,  # type: ignore[arg-type]
        )

    async def replies(self, count: int) -> list[bytes]:
        assert self.sub is not None, "bind_sub() first"
        return [await asyncio.wait_for(self.received.get(), 2) for _ in range(count)]

    async def assert_quiet(self) -> None:
        await asyncio.sleep(0.05)
        assert self.received.empty(), "an unexpected reply was sent"

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for sock in (self.push, self.sub):
            if sock is not None:
                sock.close(linger=0)

    async def stop(self) -> None:
        """Mongrel2 goes away: both sockets close, whatever they still held is lost."""
        await self.close()
        self.sub = self._reader = None

    def start(self) -> None:
        """A new Mongrel2 binds the same addresses; ``received`` holds only what it gets."""
        self.push = self.context.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.bind(self.pull_addr)
        self.received = asyncio.Queue()
        self.bind_sub(self.pub_addr)

    def stop_reading(self) -> None:
        """Mongrel2 hangs: it reads no more replies, so they pile up in the sockets."""
        assert self._reader is not None
        self._reader.cancel()


@pytest.fixture
async def new_mongrel2() -> AsyncIterator[Callable[..., Mongrel2Side]]:
    """Make Mongrel2 sides on a private context; everything is closed afterwards."""
    context = zmq.asyncio.Context()
    sides: list[Mongrel2Side] = []

    def make(transport: str = "inproc", bound: bool = True) -> Mongrel2Side:
        side = Mongrel2Side(context, transport)
        sides.append(side)
        if bound and side.sub is None:
            side.bind_sub()
        return side

    yield make
    for side in sides:
        await side.close()
    context.destroy(linger=0)


@pytest.fixture
async def mongrel2(new_mongrel2: Callable[..., Mongrel2Side]) -> Mongrel2Side:
    return new_mongrel2()


@pytest.fixture
async def conn(mongrel2: Mongrel2Side) -> AsyncIterator[Mongrel2Connection]:
    connection = mongrel2.connection(sender_id="brubeck-1")
    connection.open()
    yield connection
    await connection.close(flush_timeout=0.5)


def targets(reply: bytes) -> list[int]:
    found = re.match(rb"[\w-]+ (\d+):([\d ]+), ", reply)
    assert found, reply
    assert int(found[1]) == len(found[2])
    return [int(i) for i in found[2].split(b" ")]


async def collect(connection: Mongrel2Connection, count: int) -> list[Any]:
    """What ``start_reading`` hands over until ``count`` messages arrived."""
    received: list[Any] = []
    arrived = asyncio.Event()

    def on_message(raw: bytes) -> None:
        received.append(raw)
        if sum(isinstance(item, bytes) for item in received) >= count:
            arrived.set()

    connection.start_reading(on_message)
    async with asyncio.timeout(2):
        await arrived.wait()
    return received


# Receiving


async def test_every_message_is_read_in_order(
    mongrel2: Mongrel2Side, conn: Mongrel2Connection
) -> None:
    messages = [fixtures.with_conn_id(fixtures.GET_QUERY, n) for n in range(1, 51)]
    for raw in messages:
        await mongrel2.push.send(raw)
    assert await collect(conn, len(messages)) == messages


async def test_a_wakeup_reads_at_most_max_batch_then_lets_others_run(
    mongrel2: Mongrel2Side,
) -> None:
    connection = mongrel2.connection(max_batch=3)
    connection.open()
    received: list[Any] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_message(raw: bytes) -> None:
        if not received:  # runs as soon as the loop gets a turn: after this wakeup's batch
            loop.call_soon(received.append, "other callback")
        received.append(raw)
        if raw == b"9":
            done.set()

    try:
        for n in range(10):
            await mongrel2.push.send(b"%d" % n)
        await asyncio.sleep(0.05)  # let all ten reach the PULL socket first
        connection.start_reading(on_message)
        async with asyncio.timeout(2):
            await done.wait()
    finally:
        await connection.close()
    assert received[:4] == [b"0", b"1", b"2", "other callback"]
    assert [r for r in received if isinstance(r, bytes)] == [b"%d" % n for n in range(10)]


async def test_paused_reading_leaves_messages_queued_until_resumed(
    mongrel2: Mongrel2Side, conn: Mongrel2Connection
) -> None:
    received: list[bytes] = []

    def on_message(raw: bytes) -> None:
        received.append(raw)
        if len(received) == 2:
            conn.pause_reading()

    for n in range(6):
        await mongrel2.push.send(b"%d" % n)
    conn.start_reading(on_message)
    await asyncio.sleep(0.2)
    assert received == [b"0", b"1"]  # paused inside a wakeup: the rest stayed in ZeroMQ
    await mongrel2.push.send(b"6")
    await asyncio.sleep(0.1)
    assert received == [b"0", b"1"]
    conn.resume_reading()
    async with asyncio.timeout(2):
        while len(received) < 7:
            await asyncio.sleep(0.01)
    assert received == [b"%d" % n for n in range(7)]


async def test_a_failing_callback_is_logged_and_reading_goes_on(
    mongrel2: Mongrel2Side, conn: Mongrel2Connection, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[bytes] = []

    def on_message(raw: bytes) -> None:
        received.append(raw)
        if raw == b"bad":
            raise ValueError("boom")

    for raw in (b"one", b"bad", b"two"):
        await mongrel2.push.send(raw)
    conn.start_reading(on_message)
    async with asyncio.timeout(2):
        while len(received) < 3:
            await asyncio.sleep(0.01)
    assert received == [b"one", b"bad", b"two"]
    assert "handling it failed" in caplog.text


# Replies held while a run of messages is handled


async def hold_and_count(
    mongrel2: Mongrel2Side, connection: Mongrel2Connection, count: int
) -> list[int]:
    """Reply to ``count`` messages from the receive loop; ``pending`` after each reply."""
    pending: list[int] = []
    for n in range(count):
        await mongrel2.push.send(b"%d" % n)
    await asyncio.sleep(0.05)  # all of them queued, so one wakeup reads them together

    def on_message(raw: bytes) -> None:
        connection.send(None, raw, b"answer " + raw)
        pending.append(connection.pending)

    connection.start_reading(on_message)
    async with asyncio.timeout(2):
        while len(pending) < count:
            await asyncio.sleep(0.01)
    return pending


async def test_replies_of_a_run_of_messages_leave_together_at_its_end(
    mongrel2: Mongrel2Side, conn: Mongrel2Connection
) -> None:
    pending = await hold_and_count(mongrel2, conn, 5)
    assert pending == [1, 2, 3, 4, 5]  # held, not yet handed to ZeroMQ
    replies = await mongrel2.replies(5)
    assert replies == [b"brubeck-1 1:%d, answer %d" % (n, n) for n in range(5)]
    assert conn.pending == 0


async def test_reply_batch_bounds_how_many_replies_wait(mongrel2: Mongrel2Side) -> None:
    connection = mongrel2.connection(sender_id="S", reply_batch=2)
    connection.open()
    try:
        assert await hold_and_count(mongrel2, connection, 5) == [1, 2, 1, 2, 1]
        assert await mongrel2.replies(5) == [b"S 1:%d, answer %d" % (n, n) for n in range(5)]
    finally:
        await connection.close(flush_timeout=0.5)


async def subscribed(mongrel2: Mongrel2Side, conn: Mongrel2Connection) -> None:
    conn.send(None, 1, b"first")
    assert await mongrel2.replies(1) == [b"brubeck-1 1:1, first"]


async def test_outside_the_receive_loop_replies_leave_at_the_next_turn(
    mongrel2: Mongrel2Side, conn: Mongrel2Connection
) -> None:
    await subscribed(mongrel2, conn)
    for n in range(3):  # as tasks finishing in the same turn of the event loop would
        conn.send(None, n, b"task %d" % n)
    assert conn.pending == 3
    await asyncio.sleep(0)
    assert conn.pending == 0
    assert await mongrel2.replies(3) == [b"brubeck-1 1:%d, task %d" % (n, n) for n in range(3)]


async def test_a_turns_replies_go_before_those_of_a_run_read_after_them(
    mongrel2: Mongrel2Side, conn: Mongrel2Connection
) -> None:
    await subscribed(mongrel2, conn)
    await mongrel2.push.send(b"request")
    await asyncio.sleep(0.05)  # queued, so the first read finds it
    conn.start_reading(lambda raw: conn.send(None, 1, b"answer to " + raw))
    conn.send(None, 1, b"from a task")  # its turn ends after the read scheduled above
    assert await mongrel2.replies(2) == [
        b"brubeck-1 1:1, from a task",
        b"brubeck-1 1:1, answer to request",
    ]


async def test_a_turn_holds_at_most_backlog_limit_replies(mongrel2: Mongrel2Side) -> None:
    connection = mongrel2.connection(sender_id="S", backlog_limit=3)
    connection.open()
    try:
        connection.send(None, 1, b"first")
        assert await mongrel2.replies(1) == [b"S 1:1, first"]
        for n in range(3):
            connection.send(None, n, b"x")
        with pytest.raises(BufferError, match="3 replies are waiting"):
            connection.send(None, 4, b"x")
        assert await mongrel2.replies(3) == [b"S 1:%d, x" % n for n in range(3)]
    finally:
        await connection.close()


async def test_a_held_reply_that_cannot_be_queued_is_logged_and_the_rest_still_go(
    mongrel2: Mongrel2Side, caplog: pytest.LogCaptureFixture
) -> None:
    connection = Mongrel2Connection(
        mongrel2.pull_addr,
        "inproc://nobody-listens",
        "S",
        context=mongrel2.context,
        backlog_limit=2,
    )
    connection.open()
    try:
        pending = await hold_and_count(mongrel2, connection, 3)
        assert pending == [1, 2, 3]
        assert connection.pending == 2  # two wait for a subscriber; the third had no room
        assert "dropped a reply of" in caplog.text
        assert "2 replies are waiting" in caplog.text
    finally:
        await connection.close(flush_timeout=0.01)


def test_reply_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="reply_batch must be at least 1"):
        Mongrel2Connection("inproc://a", "inproc://b", reply_batch=0)


# Sending


async def test_send_to_one_connection(mongrel2: Mongrel2Side, conn: Mongrel2Connection) -> None:
    conn.send(None, 7, b"HTTP/1.1 200 OK\r\n\r\n")
    conn.send(b"other-sender", b"8", b"x")
    conn.send("text-sender", 9, b"")
    assert await mongrel2.replies(3) == [
        b"brubeck-1 1:7, HTTP/1.1 200 OK\r\n\r\n",
        b"other-sender 1:8, x",
        b"text-sender 1:9, ",
    ]


async def test_reply_and_close_go_to_the_requests_connection(
    mongrel2: Mongrel2Side, conn: Mongrel2Connection
) -> None:
    request = SimpleNamespace(sender=fixtures.SENDER, conn_id=b"42")
    conn.reply(request, b"body")
    conn.close_connection(request)
    assert await mongrel2.replies(2) == [
        fixtures.SENDER + b" 2:42, body",
        fixtures.SENDER + b" 2:42, ",
    ]


async def test_deliver_to_many_ids(mongrel2: Mongrel2Side, conn: Mongrel2Connection) -> None:
    ids = list(range(1, 301))
    conn.deliver(None, ids, b"news")
    replies = await mongrel2.replies(3)
    assert [len(targets(r)) for r in replies] == [128, 128, 44]
    assert [i for r in replies for i in targets(r)] == ids
    assert all(r.startswith(b"brubeck-1 ") and r.endswith(b", news") for r in replies)
    await mongrel2.assert_quiet()


async def test_close_many_connections(mongrel2: Mongrel2Side, conn: Mongrel2Connection) -> None:
    conn.close_connections(b"S", [b"3", 4, 5])
    assert await mongrel2.replies(1) == [b"S 5:3 4 5, "]


async def test_ctl_messages(mongrel2: Mongrel2Side, conn: Mongrel2Connection) -> None:
    conn.ctl(fixtures.SENDER, 18, cancel=True)
    conn.ctl(None, b"19", keep_alive=True)
    cancel, keep_alive = await mongrel2.replies(2)
    assert cancel == fixtures.CTL_CANCEL
    assert keep_alive == b"brubeck-1 4:X 19, 31:3:ctl,21:10:keep-alive,4:true!}]"


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.send(None, 1, b"x"),
        lambda c: c.deliver(None, [1, 2], b"x"),
        lambda c: c.close_connections(None, [1]),
        lambda c: c.ctl(None, 1, cancel=True),
    ],
)
async def test_no_sender_id_is_a_clear_error(mongrel2: Mongrel2Side, send: object) -> None:
    connection = mongrel2.connection()
    connection.open()
    try:
        with pytest.raises(ValueError, match="no sender id known yet"):
            send(connection)  # type: ignore[operator]
    finally:
        await connection.close()


async def test_new_sender_id(mongrel2: Mongrel2Side) -> None:
    connection = mongrel2.connection()
    sender = connection.new_sender_id()
    assert re.fullmatch(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", sender)
    assert connection.sender_id == sender
    assert connection.new_sender_id() != sender


def test_sender_id_given_as_text_is_bytes() -> None:
    assert Mongrel2Connection("inproc://a", "inproc://b", "abc").sender_id == b"abc"


# Never dropping a reply


async def test_replies_sent_before_the_subscription_are_held_then_delivered_in_order(
    new_mongrel2: Callable[..., Mongrel2Side],
) -> None:
    mongrel2 = new_mongrel2(bound=False)
    connection = mongrel2.connection(sender_id="S")
    connection.open()
    try:
        for n in range(1, 6):
            connection.send(None, n, b"early %d" % n)
        assert connection.pending == 5
        await asyncio.sleep(0.02)
        mongrel2.bind_sub()  # Mongrel2 starts late: its SUB binds and subscribes now
        early = await mongrel2.replies(5)
        connection.send(None, 6, b"late")
        late = await mongrel2.replies(1)
        assert connection.pending == 0
    finally:
        await connection.close()
    assert early == [b"S 1:%d, early %d" % (n, n) for n in range(1, 6)]
    assert late == [b"S 1:6, late"]


@pytest.mark.parametrize("held", [False, True], ids=["one by one", "held run"])
async def test_a_full_socket_queues_replies_instead_of_dropping_them(
    mongrel2: Mongrel2Side, conn: Mongrel2Connection, held: bool
) -> None:
    conn.send(None, 1, b"first")
    assert await mongrel2.replies(1) == [b"brubeck-1 1:1, first"]
    body = b"x" * 100
    count = 5000  # well past the high-water marks of both sockets
    expected = [b"brubeck-1 %d:%d, %s" % (len(b"%d" % n), n, body) for n in range(count)]
    if held:  # the replies of one run of messages, handed to ZeroMQ together
        conn._send_held(list(expected))
    else:
        for n in range(count):
            conn.send(None, n, body)
    assert conn.pending > 0, "the socket should have filled up"
    assert await mongrel2.replies(count) == expected
    assert conn.pending == 0


async def test_backlog_limit_raises_instead_of_growing(mongrel2: Mongrel2Side) -> None:
    connection = Mongrel2Connection(
        mongrel2.pull_addr,
        "inproc://nobody-listens",
        "S",
        context=mongrel2.context,
        backlog_limit=3,
    )
    connection.open()
    try:
        for n in range(3):
            connection.send(None, n, b"x")
        with pytest.raises(BufferError, match="3 replies are waiting") as info:
            connection.send(None, 4, b"x")
        assert "inproc://nobody-listens" in str(info.value)
    finally:
        await connection.close(flush_timeout=0.01)


async def test_close_gives_up_on_unsent_replies_after_the_timeout(
    mongrel2: Mongrel2Side, caplog: pytest.LogCaptureFixture
) -> None:
    connection = Mongrel2Connection(
        mongrel2.pull_addr, "inproc://nobody-listens", "S", context=mongrel2.context
    )
    connection.open()
    connection.send(None, 1, b"lost")
    await asyncio.wait_for(connection.close(flush_timeout=0.05), 1)
    assert not connection.is_open
    assert "closing with 1 replies unsent" in caplog.text


@pytest.mark.parametrize("live", [False, True], ids=["not subscribed yet", "subscribed"])
async def test_close_flushes_what_is_queued(mongrel2: Mongrel2Side, live: bool) -> None:
    connection = mongrel2.connection(sender_id="S")
    connection.open()
    if live:  # then replies wait for the end of the turn, not in the backlog
        connection.send(None, 9, b"first")
        assert await mongrel2.replies(1) == [b"S 1:9, first"]
    for n in range(3):
        connection.send(None, n, b"bye")
    await connection.close()
    assert await mongrel2.replies(3) == [b"S 1:%d, bye" % n for n in range(3)]


# Life cycle


async def test_open_and_close_are_idempotent(mongrel2: Mongrel2Side) -> None:
    connection = mongrel2.connection()
    assert not connection.is_open
    await connection.close()
    connection.open()
    connection.open()
    assert connection.is_open
    await connection.close()
    await connection.close()
    assert not connection.is_open


@pytest.mark.parametrize("opened", [False, True])
async def test_sending_on_a_closed_connection_is_an_error(
    mongrel2: Mongrel2Side, opened: bool
) -> None:
    connection = mongrel2.connection(sender_id="S")
    if opened:
        connection.open()
        await connection.close()
    with pytest.raises(RuntimeError, match="closed"):
        connection.send(None, 1, b"x")


async def test_over_tcp_loopback(new_mongrel2: Callable[..., Mongrel2Side]) -> None:
    mongrel2 = new_mongrel2("tcp")
    connection = mongrel2.connection()
    connection.open()
    try:
        await mongrel2.push.send(fixtures.POST_FORM)
        received = await collect(connection, 1)
        connection.send(fixtures.SENDER, 2, b"HTTP/1.1 204 No Content\r\n\r\n")
        reply = await mongrel2.replies(1)
    finally:
        await connection.close()
    assert received == [fixtures.POST_FORM]
    assert reply == [fixtures.SENDER + b" 1:2, HTTP/1.1 204 No Content\r\n\r\n"]


def test_repr() -> None:
    assert repr(Mongrel2Connection("tcp://a:1", "tcp://b:2")) == (
        "Mongrel2Connection('tcp://a:1', 'tcp://b:2')"
    )


# Mongrel2 going away (over TCP: in-process sockets report no disconnects)


async def until(predicate: Callable[[], object], what: str, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
async def tcp_mongrel2(new_mongrel2: Callable[..., Mongrel2Side]) -> Mongrel2Side:
    return new_mongrel2("tcp")


@pytest.fixture
async def watched(tcp_mongrel2: Mongrel2Side) -> AsyncIterator[tuple[Mongrel2Connection, list]]:
    """An open connection that has talked to the (fake) Mongrel2, and its ``on_lost`` calls."""
    connection = tcp_mongrel2.connection(sender_id="S")
    lost: list[tuple[int, int]] = []
    connection.on_lost = lambda queued, unsent: lost.append((queued, unsent))
    connection.open()
    await handshaken(connection)
    yield connection, lost
    await connection.close(flush_timeout=0.1)


async def handshaken(connection: Mongrel2Connection) -> None:
    """Both sockets completed a handshake with a Mongrel2, and it subscribed."""
    await until(lambda: all(connection._handshaken) and connection._live, "a handshake")


async def test_a_lost_mongrel2_ends_the_epoch_once_per_loss(
    tcp_mongrel2: Mongrel2Side, watched: tuple[Mongrel2Connection, list]
) -> None:
    connection, lost = watched
    received: list[bytes] = []
    connection.start_reading(received.append)
    assert connection.epoch == 0
    for epoch in (1, 2):
        await tcp_mongrel2.stop()
        await until(lambda: connection.epoch == epoch, "the loss")  # noqa: B023
        tcp_mongrel2.start()
        await handshaken(connection)
        assert connection.epoch == epoch  # both sockets reported the loss: still one bump
        await tcp_mongrel2.push.send(b"request %d" % epoch)
        connection.send(None, 1, b"reply %d" % epoch)
        assert await tcp_mongrel2.replies(1) == [b"S 1:1, reply %d" % epoch]
    await until(lambda: len(received) == 2, "the requests")
    assert received == [b"request 1", b"request 2"]
    assert lost == [(0, 0), (0, 0)]


async def test_requests_queued_from_a_lost_mongrel2_are_discarded(
    tcp_mongrel2: Mongrel2Side, watched: tuple[Mongrel2Connection, list]
) -> None:
    connection, lost = watched
    for n in range(5):
        await tcp_mongrel2.push.send(b"old %d" % n)
    await asyncio.sleep(0.1)  # they reach this process's queue; nothing reads it yet
    await tcp_mongrel2.stop()
    await until(lambda: lost, "the loss")
    received: list[bytes] = []
    connection.start_reading(received.append)
    tcp_mongrel2.start()
    await handshaken(connection)
    await tcp_mongrel2.push.send(b"new")
    await until(lambda: received, "the new request")
    await asyncio.sleep(0.05)
    assert received == [b"new"]
    assert lost == [(5, 0)]


async def test_requests_still_arriving_from_a_lost_mongrel2_are_discarded(
    tcp_mongrel2: Mongrel2Side, watched: tuple[Mongrel2Connection, list]
) -> None:
    """A full queue hides the end of the stream: ZeroMQ reads on only as it drains."""
    connection, lost = watched
    sent = stalled = 0
    while sent < 20_000 and stalled < 3:  # until every queue on the way is full
        try:
            await tcp_mongrel2.push.send(b"old %d" % sent + b"." * 1000, zmq.NOBLOCK)
            sent, stalled = sent + 1, 0
        except zmq.Again:
            stalled += 1
            await asyncio.sleep(0.05)
    assert sent > 2000, "the queues should have filled up"
    await tcp_mongrel2.stop()
    await until(lambda: lost, "the loss")
    received: list[bytes] = []
    connection.start_reading(received.append)
    await asyncio.sleep(0.2)
    assert received == []
    tcp_mongrel2.start()
    await handshaken(connection)
    await tcp_mongrel2.push.send(b"new")
    await until(lambda: received, "the new request")
    assert received == [b"new"]


async def test_replies_held_for_a_lost_mongrel2_never_reach_the_next_one(
    tcp_mongrel2: Mongrel2Side, watched: tuple[Mongrel2Connection, list]
) -> None:
    connection, lost = watched
    tcp_mongrel2.stop_reading()
    body = b"x" * 2000
    for n in range(3000):  # past the kernel's buffers and both sockets' queues
        connection.send(None, n, body)
    assert connection.pending > 0, "the socket should have filled up"
    await tcp_mongrel2.stop()
    await until(lambda: lost, "the loss")
    assert connection.pending == 0  # discarded, here or (a lost peer's queue) by ZeroMQ
    tcp_mongrel2.start()
    await handshaken(connection)
    connection.send(None, 1, b"new")
    assert await tcp_mongrel2.replies(1) == [b"S 1:1, new"]
    await tcp_mongrel2.assert_quiet()


async def test_replies_of_a_turn_in_which_mongrel2_is_lost_are_discarded(
    tcp_mongrel2: Mongrel2Side, watched: tuple[Mongrel2Connection, list]
) -> None:
    connection, lost = watched
    connection.send(None, 1, b"made before the loss")  # held until the turn ends
    # The monitor's report of the loss is handled in the same turn, before the turn's replies
    # leave: they were for the old Mongrel2's clients, whose ids the next one reuses.
    connection._on_events([(1, zmq.EVENT_DISCONNECTED)])
    assert lost == [(0, 1)]
    assert connection.pending == 0
    await tcp_mongrel2.assert_quiet()  # the turn ended and sent nothing (this peer stayed up)


async def test_replies_sent_between_two_mongrel2s_wait_for_the_next_one(
    tcp_mongrel2: Mongrel2Side, watched: tuple[Mongrel2Connection, list]
) -> None:
    connection, lost = watched
    await tcp_mongrel2.stop()
    await until(lambda: lost and not connection._live, "the loss")
    connection.send(None, 1, b"for the next one")
    assert connection.pending == 1
    tcp_mongrel2.start()
    assert await tcp_mongrel2.replies(1) == [b"S 1:1, for the next one"]


async def test_no_reply_for_a_request_of_a_lost_mongrel2(
    tcp_mongrel2: Mongrel2Side, watched: tuple[Mongrel2Connection, list]
) -> None:
    connection, _ = watched
    old = SimpleNamespace(sender=b"S", conn_id=b"1", epoch=0)
    await tcp_mongrel2.stop()
    await until(lambda: connection.epoch == 1, "the loss")
    tcp_mongrel2.start()
    await handshaken(connection)
    new = SimpleNamespace(sender=b"S", conn_id=b"1", epoch=1)
    for request in (old, new):
        connection.reply(request, b"to %d" % request.epoch)
        connection.close_connection(request)
    assert await tcp_mongrel2.replies(2) == [b"S 1:1, to 1", b"S 1:1, "]
    await tcp_mongrel2.assert_quiet()
