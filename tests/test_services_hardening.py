"""services: adversarial tests of the MDP broker, client, workers, jobs and payloads.

Peers that misbehave are raw ZeroMQ sockets on 127.0.0.1. Every wait is bounded. A test whose
docstring starts with "Was a bug." fails until the bug it describes is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zmq
import zmq.asyncio

from brubeck.services import (
    Broker,
    JobQueue,
    JobWorker,
    PayloadError,
    RemoteError,
    ServiceClient,
    ServiceError,
    ServiceUnavailable,
    ServiceWorker,
    mdp,
)
from brubeck.services.payload import decode, encode

BEAT = 0.1
#: A heartbeat long enough that no broker tick runs during a test that does not want one.
NO_TICK = 60.0


class Raw:
    """A raw DEALER connected to an endpoint: a foreign client, worker or broker peer."""

    def __init__(self, address: str) -> None:
        self.sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(address)

    async def send(self, frames: list[bytes]) -> None:
        await self.sock.send_multipart(frames)

    async def recv(self, timeout: float = 2.0) -> list[bytes]:
        """The next message that is not a heartbeat."""
        async with asyncio.timeout(timeout):
            while True:
                frames = await self.sock.recv_multipart()
                if frames != mdp.heartbeat():
                    return frames

    async def nothing(self, wait: float = 0.3) -> None:
        """Fail if anything but heartbeats arrives within ``wait`` seconds."""
        with contextlib.suppress(TimeoutError):
            frames = await self.recv(wait)
            pytest.fail(f"expected nothing, got {frames!r}")

    async def take_request(self) -> tuple[bytes, list[bytes]]:
        """As a worker: the next REQUEST's client address and body."""
        frames = await self.recv()
        assert frames[:3] == [b"", mdp.WORKER, mdp.REQUEST], frames
        assert frames[4] == b""
        return frames[3], frames[5:]

    def close(self) -> None:
        self.sock.close(linger=0)


@contextlib.asynccontextmanager
async def a_broker(**options: Any) -> AsyncIterator[Broker]:
    options.setdefault("heartbeat", NO_TICK)
    broker = Broker("tcp://127.0.0.1:*", **options)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def raw_peers(address: str, count: int) -> AsyncIterator[list[Raw]]:
    peers = [Raw(address) for _ in range(count)]
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


@contextlib.asynccontextmanager
async def serving(*workers: ServiceWorker) -> AsyncIterator[None]:
    tasks = [asyncio.get_running_loop().create_task(w.serve()) for w in workers]
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        async with asyncio.timeout(5):
            await asyncio.gather(*tasks, return_exceptions=True)


async def until(predicate: Any, timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def rid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def fake_broker() -> tuple[zmq.asyncio.Socket, str]:
    router = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    router.bind("tcp://127.0.0.1:*")
    return router, router.getsockopt_string(zmq.LAST_ENDPOINT)


# Payloads


@pytest.mark.parametrize("document", [b"NaN", b"Infinity", b"-Infinity", b"[1e400]"])
def test_json_without_nan_or_infinity_is_enforced_on_decode(document: bytes) -> None:
    """Was a bug. docs/services.md: a json payload has "no NaN or infinities", and encode
    refuses them; decode accepted them (ujson reads NaN, Infinity and 1e400 as floats)."""
    with pytest.raises(TypeError):
        encode(float("nan"))
    with pytest.raises(PayloadError):
        decode([b"json", document])


def test_whatever_encodes_also_decodes_at_the_depth_limit() -> None:
    """Was a bug. Lists nested 1025 deep were encoded (ujson's encoder stops one level deeper
    than its decoder): the sender thought it sent a payload, the receiver raised PayloadError.
    Now the sender refuses it, and the deepest it sends comes back."""
    value: list[Any] = []
    for _ in range(1023):
        value = [value]
    frames = encode(value)  # 1024 deep: the most the receiver reads
    assert encode(decode(frames)) == frames
    with pytest.raises(TypeError, match="nests at most 1024"):
        encode([value])
    with pytest.raises(TypeError, match="nests at most 1024"):
        encode({"k": (value[0],)})  # a dict, a tuple and 1023 lists


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\xff" * 4096,
        "",
        "nul \x00 and é and 😀",
        2**64 + 1,
        -(2**70),
        5e-324,
        -0.0,
        {"nested": [{"k": [None, True, 1.5]}]},
    ],
)
def test_payload_round_trips(value: Any) -> None:
    """Values at the edges of each encoding come back equal and of the same type."""
    back = decode(encode(value))
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize(
    "frames",
    [
        [b"json", b"\xff"],
        [b"text", b"\xc3("],
        [b"json", b"1 2"],
        [b"JSON", b"1"],
        [b"bytes", b"a", b"b"],
        [],
    ],
)
def test_malformed_payloads_are_payload_errors(frames: list[bytes]) -> None:
    """Bad UTF-8, bad JSON, unknown tags and wrong frame counts: PayloadError with a message."""
    with pytest.raises(PayloadError, match=r"\w"):
        decode(frames)


def test_a_lone_surrogate_is_refused_when_encoded() -> None:
    """A str that UTF-8 cannot carry fails at the sender, before anything is sent."""
    with pytest.raises(ValueError, match="surrogate"):
        encode("\ud800")


# The broker, against foreign clients and workers


@pytest.mark.parametrize(
    "service", [b"\xff\xfe", b"", b"with space", b"x" * 300], ids=["utf8", "empty", "space", "long"]
)
async def test_a_foreign_client_with_an_invalid_service_name_does_not_break_routing(
    service: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A request naming a service no Brubeck worker can have is never run; the broker keeps
    routing the requests that come after it."""
    async with (
        a_broker(heartbeat=BEAT, liveness=50, queue_timeout=0.2) as broker,
        raw_peers(broker.address, 2) as (client, worker),
    ):
        await client.send([rid(1), b"", mdp.CLIENT, service, b"text", b"odd"])
        await worker.send(mdp.ready(b"echo"))
        await client.send([rid(2), b"", mdp.CLIENT, b"echo", b"text", b"fine"])
        address, body = await worker.take_request()
        assert body == [b"text", b"fine"]
        await worker.send(mdp.reply(address, body))
        assert await client.recv() == [rid(2), b"", mdp.CLIENT, b"echo", b"text", b"fine"]
        await until(lambda: broker.dropped == 1, what="the odd request dropped")
        await client.nothing(0.1)
        assert "failed to handle a message" not in caplog.text


async def test_a_worker_ready_for_an_invalid_service_name_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Was a bug. A foreign worker registering for a name that is not printable ASCII (here,
    not even UTF-8) is accepted silently: no client can name that service, and
    ``broker.worker_count(name)`` raises for it. Expected: DISCONNECT and a warning, as for
    a worker that asks for ``mmi.*``."""
    async with a_broker() as broker, raw_peers(broker.address, 1) as (worker,):
        await worker.send(mdp.ready(b"\xff\xfeup per"))
        try:
            answer = await worker.recv(1.0)
        except TimeoutError:
            pytest.fail(f"no DISCONNECT; registered {broker.worker_count()} worker(s)")
        assert answer == mdp.disconnect()
        assert broker.worker_count() == 0
    assert "service name" in caplog.text


@pytest.mark.parametrize(
    "frames",
    [
        [b"", b"MDPW02", mdp.READY, b"echo"],
        [b"", mdp.WORKER, b"\x06"],
        [b"", mdp.WORKER, mdp.REQUEST, b"addr", b"", b"x"],
        [b"", mdp.WORKER, mdp.REPLY],
        [b"", mdp.WORKER, mdp.HEARTBEAT, b"extra"],
        [b"", mdp.WORKER],
    ],
    ids=["header", "unknown", "request", "truncated-reply", "long-heartbeat", "no-command"],
)
async def test_a_busy_worker_that_breaks_the_protocol_loses_its_request_to_another(
    frames: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """The broken worker is told DISCONNECT; the request it held is answered by another
    worker, exactly once."""
    async with a_broker() as broker, raw_peers(broker.address, 3) as (client, bad, good):
        await bad.send(mdp.ready(b"echo"))
        await until(lambda: broker.worker_count("echo") == 1, what="bad registered")
        await client.send([rid(1), b"", mdp.CLIENT, b"echo", b"text", b"job"])
        await bad.take_request()
        await bad.send(frames)
        assert await bad.recv() == mdp.disconnect()
        await good.send(mdp.ready(b"echo"))
        address, _ = await good.take_request()
        await good.send(mdp.reply(address, [b"text", b"done"]))
        assert (await client.recv())[-1] == b"done"
        await client.nothing(0.1)
    assert "disconnecting it" in caplog.text


async def test_a_duplicate_reply_reaches_the_client_once() -> None:
    """A worker that answers twice: the client gets the first answer only, and the worker,
    which broke the one-request-one-reply rule, is told to reconnect."""
    async with a_broker() as broker, raw_peers(broker.address, 2) as (client, worker):
        await worker.send(mdp.ready(b"echo"))
        await until(lambda: broker.worker_count("echo") == 1, what="worker registered")
        await client.send([rid(7), b"", mdp.CLIENT, b"echo", b"text", b"once"])
        address, _ = await worker.take_request()
        await worker.send(mdp.reply(address, [b"text", b"first"]))
        await worker.send(mdp.reply(address, [b"text", b"second"]))
        assert (await client.recv())[-1] == b"first"
        assert await worker.recv() == mdp.disconnect()
        await client.nothing()


async def test_a_late_reply_from_a_worker_taken_for_dead_is_discarded() -> None:
    """The request went to a second worker when the first went silent; the first one's late
    answer is dropped and only the second's reaches the client."""
    async with (
        a_broker(heartbeat=0.05, liveness=2) as broker,
        raw_peers(broker.address, 3) as (client, slow, second),
    ):
        await slow.send(mdp.ready(b"echo"))
        await until(lambda: broker.worker_count("echo") == 1, what="slow registered")
        await client.send([rid(1), b"", mdp.CLIENT, b"echo", b"text", b"job"])
        slow_address, _ = await slow.take_request()
        await until(lambda: broker.worker_count("echo") == 0, what="slow taken for dead")
        beating = asyncio.ensure_future(_beat(second))
        try:
            await second.send(mdp.ready(b"echo"))
            second_address, _ = await second.take_request()
            await slow.send(mdp.reply(slow_address, [b"text", b"late"]))
            assert await slow.recv() == mdp.disconnect()
            await second.send(mdp.reply(second_address, [b"text", b"fresh"]))
            assert (await client.recv())[-1] == b"fresh"
            await client.nothing(0.2)
        finally:
            beating.cancel()


async def _beat(peer: Raw) -> None:
    while True:
        await asyncio.sleep(0.02)
        await peer.send(mdp.heartbeat())


async def test_a_reply_to_a_client_that_is_gone_does_not_stop_the_broker() -> None:
    """ROUTER_MANDATORY refuses the send; the worker goes back to idle and takes the next."""
    async with a_broker() as broker, raw_peers(broker.address, 2) as (worker, other):
        gone = Raw(broker.address)
        await worker.send(mdp.ready(b"echo"))
        await until(lambda: broker.worker_count("echo") == 1, what="worker registered")
        await gone.send([rid(1), b"", mdp.CLIENT, b"echo", b"text", b"a"])
        address, _ = await worker.take_request()
        gone.close()
        await asyncio.sleep(0.05)
        await worker.send(mdp.reply(address, [b"text", b"nobody"]))
        await other.send([rid(2), b"", mdp.CLIENT, b"echo", b"text", b"b"])
        address, body = await worker.take_request()
        assert body == [b"text", b"b"]
        await worker.send(mdp.reply(address, body))
        assert (await other.recv())[-1] == b"b"


async def test_an_oversized_request_is_routed_whole() -> None:
    """A 16 MB body frame is carried unchanged, not truncated or split."""
    big = bytes(range(256)) * (16 * 4096)
    async with a_broker() as broker, raw_peers(broker.address, 2) as (client, worker):
        await worker.send(mdp.ready(b"echo"))
        await until(lambda: broker.worker_count("echo") == 1, what="worker registered")
        await client.send([rid(1), b"", mdp.CLIENT, b"echo", b"bytes", big])
        address, body = await worker.take_request()
        assert body == [b"bytes", big]
        await worker.send(mdp.reply(address, body))
        assert (await client.recv(5.0))[-1] == big


# The client


@pytest.mark.parametrize("options", [{"retries": -1}, {"timeout": 0.0}, {"timeout": -1.0}], ids=str)
async def test_per_call_settings_are_checked_like_the_constructors(options: Any) -> None:
    """Was a bug. ``ServiceClient(retries=-1)`` or ``timeout=0`` is a ValueError, but the same
    values given to ``request()`` are not checked: ``retries=-1`` makes zero attempts and at
    once raises a ServiceUnavailable that blames the broker ("0 attempt"); ``timeout<=0``
    sends the request three times and gives up at once."""
    router, address = fake_broker()
    try:
        async with ServiceClient(address, timeout=1.0, retries=2) as client:
            with pytest.raises(ValueError, match=r"timeout|retries"):
                await client.request("echo", "x", **options)
    finally:
        router.close()


def test_a_nan_timeout_is_refused() -> None:
    """Was a bug. ``timeout=float("nan")`` passes the ``timeout <= 0`` check; every request
    then gives up at once with "did not answer within nans"."""
    with pytest.raises(ValueError, match="timeout"):
        ServiceClient("tcp://127.0.0.1:1", timeout=float("nan"))


async def test_replies_for_unknown_timed_out_and_answered_requests_are_dropped() -> None:
    """A reply nobody waits for, a reply after the timeout and a second reply are counted in
    ``late_replies``; none is taken by another call."""
    router, address = fake_broker()
    try:
        async with ServiceClient(address, timeout=0.2, retries=0) as client:
            with pytest.raises(ServiceUnavailable):
                await client.request("echo", "first")
            identity, first_id, *_ = await router.recv_multipart()
            pending = asyncio.ensure_future(client.request("echo", "second", timeout=2.0))
            _, second_id, *_ = await router.recv_multipart()
            assert first_id != second_id
            for stale in (first_id, rid(999_999)):
                await router.send_multipart([identity, stale, b"", mdp.CLIENT, b"echo", b"x"])
            answer = [identity, second_id, b"", mdp.CLIENT, b"echo", b"text", b"yes"]
            await router.send_multipart(answer)
            await router.send_multipart([*answer[:-1], b"twice"])
            assert await asyncio.wait_for(pending, 2.0) == "yes"
            await until(lambda: client.late_replies == 3, what="three late replies")
            assert client._pending == {}
    finally:
        router.close()


async def test_cancelled_callers_leave_nothing_behind() -> None:
    """Many callers cancelled while they wait: no pending entry is left, their replies that
    come later are counted as late, and the client keeps working."""
    router, address = fake_broker()
    try:
        async with ServiceClient(address, timeout=5.0, retries=0) as client:
            calls = [asyncio.ensure_future(client.request("echo", n)) for n in range(200)]
            received = [await asyncio.wait_for(router.recv_multipart(), 2.0) for _ in calls]
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            assert client._pending == {}
            for identity, request_id, *_ in received:
                await router.send_multipart([identity, request_id, b"", mdp.CLIENT, b"echo", b"x"])
            await until(lambda: client.late_replies == 200, what="200 late replies")
            after = asyncio.ensure_future(client.request("echo", "after"))
            identity, request_id, *_ = await asyncio.wait_for(router.recv_multipart(), 2.0)
            reply = [identity, request_id, b"", mdp.CLIENT, b"echo", b"text", b"ok"]
            await router.send_multipart(reply)
            assert await asyncio.wait_for(after, 2.0) == "ok"
    finally:
        router.close()


async def test_closing_fails_every_waiting_caller_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """close() while 50 requests wait: each raises ServiceUnavailable saying the client was
    closed, well before its timeout; nothing is left unretrieved."""
    router, address = fake_broker()
    try:
        client = ServiceClient(address, timeout=30.0)
        calls = [asyncio.ensure_future(client.request("echo", n)) for n in range(50)]
        for _ in calls:
            await asyncio.wait_for(router.recv_multipart(), 2.0)
        start = time.monotonic()
        await client.close()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2.0)
        assert time.monotonic() - start < 1.0
        assert all(isinstance(r, ServiceUnavailable) and "closed" in str(r) for r in results)
        with pytest.raises(ServiceError, match="closed"):
            await client.request("echo", "again")
        del calls, results
        gc.collect()
        assert "never retrieved" not in caplog.text
    finally:
        router.close()


async def test_a_request_is_answered_within_its_timeout_when_nobody_serves() -> None:
    """No worker: ServiceUnavailable (a TimeoutError) after the timeout, not much later."""
    async with (
        a_broker(heartbeat=BEAT) as broker,
        ServiceClient(broker.address, timeout=0.3, retries=2) as client,
    ):
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"'nobody' did not answer within 0\.3s"):
            await client.request("nobody", "x")
        assert 0.25 < time.monotonic() - start < 1.0
        assert client.resends == 2


# Workers, through a real broker


def worker(broker: Broker, handler: Any, **options: Any) -> ServiceWorker:
    options.setdefault("heartbeat", BEAT)
    options.setdefault("reconnect", 0.05)
    return ServiceWorker(broker.address, "echo", handler, **options)


async def test_a_handler_that_raises_cancelled_error_still_answers() -> None:
    """Was a bug. An async handler that awaits something cancelled under it (here a future
    someone else cancelled) ends with CancelledError, which ``_answer`` does not catch: the
    worker sends no reply, yet the broker keeps the request held by that live, heartbeating
    link forever. The caller times out, its resends are ignored as duplicates, and the link
    never gets another request. Expected: a RemoteError, and the next request served."""
    calls = 0

    async def handler(payload: Any) -> Any:
        nonlocal calls
        calls += 1
        if payload == "cancel me":
            gone = asyncio.get_running_loop().create_future()
            gone.cancel()
            await gone
        return payload

    async with (
        a_broker(heartbeat=BEAT) as broker,
        serving(worker(broker, handler)),
        ServiceClient(broker.address, timeout=1.0) as client,
    ):
        with pytest.raises(RemoteError):
            await client.request("echo", "cancel me")
        assert await client.request("echo", "next") == "next"


async def test_a_handler_error_whose_message_cannot_be_made_still_answers() -> None:
    """Was a bug. A handler raises an exception whose ``str()`` itself raises: formatting
    the error reply raises inside ``_answer``'s except clause, the job task fails, and the
    done-callback's ``job.result()`` raises in the event loop. No reply is sent and the link
    is wedged as above. Expected: a RemoteError naming at least the exception type."""

    class Opaque(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    def handler(payload: Any) -> Any:
        if payload == "opaque":
            raise Opaque()
        return payload

    async with (
        a_broker(heartbeat=BEAT) as broker,
        serving(worker(broker, handler)),
        ServiceClient(broker.address, timeout=1.0) as client,
    ):
        with pytest.raises(RemoteError, match="Opaque"):
            await client.request("echo", "opaque")
        assert await client.request("echo", "next") == "next"


async def test_a_request_that_is_not_a_payload_is_answered_with_an_error() -> None:
    """A foreign client's body with an unknown tag reaches the worker, which answers with an
    ``error`` payload naming the problem, and goes on serving."""
    async with (
        a_broker(heartbeat=BEAT) as broker,
        serving(worker(broker, lambda p: p)),
        raw_peers(broker.address, 1) as (client,),
    ):
        await until(lambda: broker.worker_count("echo") == 1, what="worker registered")
        await client.send([rid(1), b"", mdp.CLIENT, b"echo", b"yaml", b"a: 1"])
        reply = await client.recv()
        assert reply[-2] == b"error" and b"PayloadError" in reply[-1]
        await client.send([rid(2), b"", mdp.CLIENT, b"echo", b"a", b"b", b"c"])
        assert (await client.recv())[-2] == b"error"
        await client.send([rid(3), b"", mdp.CLIENT, b"echo", b"raw"])
        assert (await client.recv())[-2:] == [b"bytes", b"raw"]


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00" * (4 * 1024 * 1024), "ünïcode " * 1000, {"k": list(range(10_000))}, 2**80],
    ids=["empty", "4MB", "text", "json", "bigint"],
)
async def test_payloads_survive_the_whole_trip(payload: Any) -> None:
    """Client to broker to worker and back: the value and its type survive."""
    async with (
        a_broker(heartbeat=BEAT) as broker,
        serving(worker(broker, lambda p: p)),
        ServiceClient(broker.address, timeout=3.0) as client,
    ):
        back = await client.request("echo", payload)
        assert back == payload and type(back) is type(payload)


async def test_many_concurrent_requests_each_get_their_own_reply_once() -> None:
    """500 requests from one client over 2 workers of 4 links: each answered once, with its
    own payload; the broker saw no duplicate and dropped nothing."""
    seen: dict[int, int] = {}

    async def handler(n: int) -> int:
        seen[n] = seen.get(n, 0) + 1
        await asyncio.sleep(0)
        return n * 2

    async with a_broker(heartbeat=BEAT) as broker:
        workers = [worker(broker, handler, concurrency=4) for _ in range(2)]
        async with serving(*workers), ServiceClient(broker.address, timeout=4.0) as client:
            results = await asyncio.gather(*(client.request("echo", n) for n in range(500)))
            assert results == [n * 2 for n in range(500)]
            assert set(seen.values()) == {1} and len(seen) == 500
            assert client.late_replies == 0 and client.resends == 0
            assert broker.duplicates == 0 and broker.dropped == 0


async def test_a_worker_lost_mid_request_is_replaced_and_the_caller_answered_once() -> None:
    """A worker whose link is closed under it (as if its process died) never answers; the
    broker takes it for dead and a second worker answers. The caller sees one reply."""
    started = asyncio.Event()

    async def hang(payload: Any) -> Any:
        started.set()
        await asyncio.sleep(3600)

    async with (
        a_broker(heartbeat=0.05, liveness=3) as broker,
        raw_peers(broker.address, 1) as (dying,),
    ):
        await dying.send(mdp.ready(b"echo"))
        await until(lambda: broker.worker_count("echo") == 1, what="dying registered")
        async with ServiceClient(broker.address, timeout=3.0, retries=2) as client:
            call = asyncio.ensure_future(client.request("echo", "job"))
            await dying.take_request()
            dying.close()  # dies holding the request
            async with serving(worker(broker, lambda p: f"{p} done", heartbeat=0.05)):
                assert await asyncio.wait_for(call, 3.0) == "job done"
            await asyncio.sleep(0.1)
            assert client.late_replies == 0


async def test_a_broker_restart_mid_request_is_recovered_by_the_resend() -> None:
    """The broker stops while a worker works on a request: the worker drops it, registers
    with the next broker on the same address, and the client's resend is answered once."""
    entered = asyncio.Event()

    async def slow(payload: Any) -> Any:
        entered.set()
        await asyncio.sleep(0.3)
        return payload

    first = Broker("tcp://127.0.0.1:*", heartbeat=BEAT)
    await first.start()
    address = first.address
    second = Broker(address, heartbeat=BEAT)
    try:
        async with (
            serving(ServiceWorker(address, "echo", slow, heartbeat=BEAT, reconnect=0.05)),
            ServiceClient(address, timeout=3.0, retries=5) as client,
        ):
            call = asyncio.ensure_future(client.request("echo", "survives"))
            await asyncio.wait_for(entered.wait(), 2.0)
            await first.stop()
            await second.start()
            assert await asyncio.wait_for(call, 4.0) == "survives"
            await asyncio.sleep(0.4)
            assert client.late_replies == 0
    finally:
        await first.stop()
        await second.stop()


async def test_a_worker_stopped_past_its_shutdown_timeout_hands_its_request_on() -> None:
    """``stop()`` with a handler that outlasts ``shutdown_timeout``: the worker says
    DISCONNECT, the broker gives the request to another worker, the caller gets one reply."""
    entered = asyncio.Event()

    async def stuck(payload: Any) -> Any:
        entered.set()
        await asyncio.sleep(3600)

    async with a_broker(heartbeat=BEAT) as broker:
        first = worker(broker, stuck, shutdown_timeout=0.1)
        async with serving(first), ServiceClient(broker.address, timeout=3.0) as client:
            call = asyncio.ensure_future(client.request("echo", "job"))
            await asyncio.wait_for(entered.wait(), 2.0)
            first.stop()
            await until(lambda: broker.worker_count("echo") == 0, what="first gone")
            assert broker.queue_length("echo") == 1
            async with serving(worker(broker, lambda p: f"{p} done")):
                assert await asyncio.wait_for(call, 3.0) == "job done"
            assert client.late_replies == 0 and first.handled == 0


async def test_a_broker_stopped_with_requests_queued_fails_them_within_the_timeout() -> None:
    """Queued requests are lost when the broker stops; their callers get ServiceUnavailable
    by their timeout, never a hang."""
    async with a_broker(heartbeat=BEAT) as broker:
        client = ServiceClient(broker.address, timeout=0.5, retries=1)
        calls = [asyncio.ensure_future(client.request("nobody", n)) for n in range(20)]
        await until(lambda: broker.queue_length("nobody") == 20, what="20 queued")
    try:
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2.0)
        assert all(isinstance(r, ServiceUnavailable) for r in results)
        assert client._pending == {}
    finally:
        await client.close()


# Jobs


async def test_a_job_handler_that_raises_cancelled_error_does_not_stop_the_worker() -> None:
    """Was a bug. A job handler that awaits something cancelled under it ends its lane with
    CancelledError (``_run_one`` catches only Exception): with concurrency 1 the worker
    still looks alive but never takes another job. Expected: the job counted as failed, and
    the next job run."""
    done: list[Any] = []

    async def handler(payload: Any) -> None:
        if payload == "cancel me":
            gone = asyncio.get_running_loop().create_future()
            gone.cancel()
            await gone
        done.append(payload)

    async with JobQueue("tcp://127.0.0.1:*", timeout=2.0) as queue:
        job_worker = JobWorker(queue.address, handler)
        task = asyncio.get_running_loop().create_task(job_worker.serve())
        try:
            await asyncio.wait_for(job_worker.started(), 2.0)
            await queue.wait_for_workers(1, timeout=2.0)
            await queue.push("cancel me")
            await queue.push("next")
            await until(lambda: done == ["next"], 2.0, "the job after the cancelled one")
            assert job_worker.failed == 1
        finally:
            job_worker.stop()
            await asyncio.wait_for(task, 5.0)


async def test_a_job_that_is_not_a_payload_is_logged_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A foreign producer's three-frame job is dropped with a warning; the worker goes on."""
    caplog.set_level(logging.WARNING)
    done: list[Any] = []
    job_worker = JobWorker("tcp://127.0.0.1:*", done.append, bind=True)
    task = asyncio.get_running_loop().create_task(job_worker.serve())
    push = zmq.asyncio.Context.instance().socket(zmq.PUSH)
    push.linger = 0
    try:
        push.connect(await asyncio.wait_for(job_worker.started(), 2.0))
        await push.send_multipart([b"text", b"a", b"b"])
        await push.send_multipart([b"json", b"{bad"])
        await push.send_multipart([b"text", b"fine"])
        await until(lambda: done == ["fine"], 2.0, "the good job")
        assert "not a payload" in caplog.text
    finally:
        push.close()
        job_worker.stop()
        await asyncio.wait_for(task, 5.0)
