"""services/client.py and worker.py: requests and replies through a real broker, in one process.

Killing workers needs processes: that is tests/test_services_failover.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import zmq
import zmq.asyncio

from brubeck.services import (
    Broker,
    RemoteError,
    ServiceClient,
    ServiceError,
    ServiceUnavailable,
    ServiceWorker,
    mdp,
)
from tests.services_support import eventually

HEARTBEAT = 0.2


@pytest.fixture
async def broker():
    broker = Broker("tcp://127.0.0.1:*", heartbeat=HEARTBEAT)
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
async def client(broker):
    client = ServiceClient(broker.address, timeout=3.0)
    yield client
    await client.close()


@pytest.fixture
async def serving():
    """``serving(worker)`` runs a worker for the test; all are stopped at teardown."""
    running: list[tuple[ServiceWorker, asyncio.Task[None]]] = []

    def start(worker: ServiceWorker) -> ServiceWorker:
        task = asyncio.get_running_loop().create_task(worker.serve())
        running.append((worker, task))
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    async with asyncio.timeout(5):
        await asyncio.gather(*(task for _, task in running))


def echo_worker(broker: Broker, handler=None, **options) -> ServiceWorker:
    options.setdefault("heartbeat", HEARTBEAT)
    return ServiceWorker(broker.address, "echo", handler or (lambda payload: payload), **options)


@pytest.mark.parametrize("payload", [b"\x00bytes", "text é", {"json": [1, None]}, [], 7, None])
async def test_a_round_trip_keeps_the_payload_type(broker, client, serving, payload):
    serving(echo_worker(broker))
    assert await client.request("echo", payload) == payload


async def test_async_and_sync_handlers(broker, client, serving):
    threads = []

    def sync(payload):
        threads.append(threading.current_thread())
        return payload.upper()

    async def asynchronous(payload):
        await asyncio.sleep(0)
        return payload[::-1]

    serving(ServiceWorker(broker.address, "upper", sync, heartbeat=HEARTBEAT))
    serving(ServiceWorker(broker.address, "reverse", asynchronous, heartbeat=HEARTBEAT))
    assert await client.request("upper", "abc") == "ABC"
    assert await client.request("reverse", "abc") == "cba"
    assert threads[0] is not threading.main_thread()  # a plain def runs off the loop


async def test_decorator_and_subclass(broker, client, serving):
    worker = ServiceWorker(broker.address, "double", heartbeat=HEARTBEAT)

    @worker.handler
    def double(payload):
        return payload * 2

    class Adder(ServiceWorker):
        async def handle(self, payload):
            return sum(payload)

    serving(worker)
    serving(Adder(broker.address, "add", heartbeat=HEARTBEAT))
    assert await client.request("double", 21) == 42
    assert await client.request("add", [1, 2, 3]) == 6


async def test_a_worker_without_a_handler_says_how_to_give_one(broker):
    with pytest.raises(TypeError, match=r"@worker\.handler"):
        await ServiceWorker(broker.address, "echo").serve()


async def test_a_failing_handler_raises_remote_error_once(broker, client, serving):
    calls = []

    def fail(payload):
        calls.append(payload)
        raise ValueError(f"cannot handle {payload!r}")

    serving(echo_worker(broker, fail))
    with pytest.raises(RemoteError, match=r"service 'echo' failed: ValueError: cannot handle 'x'"):
        await client.request("echo", "x")
    assert calls == ["x"]  # an error is an answer: not retried


async def test_an_unsendable_result_is_a_remote_error(broker, client, serving):
    serving(echo_worker(broker, lambda payload: object()))
    with pytest.raises(RemoteError, match="JSON-able"):
        await client.request("echo", "x")


async def test_a_slow_sync_handler_keeps_its_worker_alive(broker, client, serving):
    worker = serving(echo_worker(broker, lambda payload: time.sleep(1.2) or payload))
    await eventually(lambda: broker.worker_count("echo") == 1, what="registration")
    # 1.2 s is twice the 0.6 s the broker waits for a heartbeat: they must flow meanwhile.
    assert await client.request("echo", "slow") == "slow"
    assert broker.worker_count("echo") == 1
    assert worker.handled == 1


async def test_no_worker_is_a_clear_error_within_the_timeout(broker, client):
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        await client.request("nobody", "x", timeout=0.6, retries=2)
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 1.0
    message = str(caught.value)
    assert "'nobody' did not answer within 0.6s (3 attempts" in message
    assert "no worker for it is running" in message
    assert isinstance(caught.value, TimeoutError)
    assert client.resends == 2
    assert broker.duplicates == 2  # the resends found the first copy still queued


async def test_no_broker_is_the_same_clear_error():
    with zmq.asyncio.Context.instance().socket(zmq.ROUTER) as probe:
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    async with ServiceClient(f"tcp://127.0.0.1:{port}") as client:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="the broker is down"):
            await client.request("echo", "x", timeout=0.3)
        assert time.monotonic() - start < 0.6


async def test_a_lost_request_is_resent_with_the_same_id():
    """A broker that loses the first copy: the retry carries the same id and is answered."""
    router = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = ServiceClient(f"tcp://127.0.0.1:{port}", timeout=1.5, retries=2)
    try:
        pending = asyncio.ensure_future(client.request("echo", "x"))
        first = await router.recv_multipart()  # dropped on the floor
        second = await router.recv_multipart()
        assert first == second
        identity, request_id = second[0], second[1]
        assert second[2:] == [b"", b"MDPC01", b"echo", b"text", b"x"]
        await router.send_multipart([identity, request_id, b"", b"MDPC01", b"echo", b"text", b"y"])
        assert await pending == "y"
        assert client.resends == 1
        # A second answer to the same request is not delivered to anyone.
        await router.send_multipart([identity, request_id, b"", b"MDPC01", b"echo", b"text", b"z"])
        await eventually(lambda: client.late_replies == 1, what="the late reply")
    finally:
        await client.close()
        router.close()


async def test_a_reply_for_another_service_is_not_taken():
    router = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = ServiceClient(f"tcp://127.0.0.1:{port}", timeout=0.5, retries=0)
    try:
        pending = asyncio.ensure_future(client.request("echo", "x"))
        identity, request_id, *_ = await router.recv_multipart()
        await router.send_multipart([identity, request_id, b"", b"MDPC01", b"other", b"y"])
        with pytest.raises(ServiceUnavailable):
            await pending
        assert client.late_replies == 1
    finally:
        await client.close()
        router.close()


async def test_concurrent_requests_each_get_their_own_reply(broker, client, serving):
    async def slow_echo(payload):
        await asyncio.sleep(0.01 * (payload % 5))
        return payload

    for _ in range(4):
        serving(echo_worker(broker, slow_echo))
    replies = await asyncio.gather(*(client.request("echo", n) for n in range(200)))
    assert replies == list(range(200))
    # A reply can only come late for a request that was resent (a busy machine may resend).
    assert client.late_replies <= client.resends


async def test_service_exists(broker, client, serving):
    assert await client.service_exists("echo") is False
    serving(echo_worker(broker))
    await eventually(lambda: broker.worker_count("echo") == 1, what="registration")
    assert await client.service_exists("echo") is True


async def test_closing_fails_the_requests_still_waiting(broker, client):
    pending = asyncio.ensure_future(client.request("nobody", "x", timeout=5))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(ServiceUnavailable, match="closed"):
        await pending
    with pytest.raises(ServiceError, match="closed"):
        await client.request("echo", "x")


async def test_stop_finishes_the_request_in_progress_then_disconnects(broker, client, serving):
    started = asyncio.Event()

    async def slow(payload):
        started.set()
        await asyncio.sleep(0.3)
        return payload

    worker = echo_worker(broker, slow)
    task = asyncio.get_running_loop().create_task(worker.serve())
    pending = asyncio.ensure_future(client.request("echo", "last"))
    await started.wait()
    worker.stop()
    assert await pending == "last"
    async with asyncio.timeout(2):
        await task
    await eventually(lambda: broker.worker_count("echo") == 0, what="the DISCONNECT")


async def test_workers_register_again_with_a_restarted_broker(broker, serving):
    worker = serving(echo_worker(broker, reconnect=0.05))
    await eventually(lambda: broker.worker_count("echo") == 1, what="registration")
    address = broker.address
    await broker.stop()
    again = Broker(address, heartbeat=HEARTBEAT)
    await again.start()
    try:
        await eventually(lambda: again.worker_count("echo") == 1, what="registration again")
        async with ServiceClient(address, timeout=2) as client:
            assert await client.request("echo", "back") == "back"
        assert worker.handled == 1
    finally:
        await again.stop()


async def test_concurrency_opens_that_many_links(broker, client, serving):
    in_flight, peak = 0, 0

    async def track(payload):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return payload

    serving(echo_worker(broker, track, concurrency=3))
    await eventually(lambda: broker.worker_count("echo") == 3, what="three links")
    await asyncio.gather(*(client.request("echo", n) for n in range(9)))
    assert peak == 3


def test_service_names_are_checked_early():
    with pytest.raises(ValueError, match="service name"):
        ServiceWorker("tcp://127.0.0.1:1", "bad name")
    assert mdp.service_name("fine") == b"fine"
