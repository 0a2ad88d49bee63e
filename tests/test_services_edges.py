"""services: the error branches, driven by misbehaving peers and misuse of the public API.

Foreign brokers and workers are raw ZeroMQ sockets: what they send is what a buggy or
non-Brubeck peer could send, and each case must end in a clear error or a log line, never a
hang, a crash of the routing loop, or a reply given to the wrong caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from brubeck.services import (
    Broker,
    PayloadError,
    ServiceClient,
    ServiceError,
    ServiceUnavailable,
    mdp,
)
from tests.services_support import ROOT, eventually, free_tcp_address
from tests.test_services_broker import RID, Peer, take_request

# Long enough that no heartbeat tick runs during a test unless the test wants one.
NO_TICK = 60.0


@pytest.fixture
async def fake_broker() -> AsyncIterator[zmq.asyncio.Socket]:
    """A raw ROUTER where a broker should be: it answers whatever the test makes it answer."""
    router = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    router.bind("tcp://127.0.0.1:*")
    yield router
    router.close()


def address_of(sock: zmq.asyncio.Socket) -> str:
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


@contextlib.asynccontextmanager
async def running_broker(
    address: str = "tcp://127.0.0.1:*", **options: float
) -> AsyncIterator[Broker]:
    broker = Broker(address, **options)  # type: ignore[arg-type]
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


# The client, against a broker that misbehaves


@pytest.mark.parametrize(("timeout", "retries"), [(0, 1), (-1.0, 1), (1.0, -1)])
def test_client_settings_are_checked(timeout: float, retries: int) -> None:
    with pytest.raises(ValueError, match="need timeout > 0 and retries >= 0"):
        ServiceClient("tcp://127.0.0.1:1", timeout=timeout, retries=retries)


async def test_a_reply_that_is_not_a_payload_is_a_payload_error(fake_broker) -> None:
    """A foreign worker's answer that no payload encoding covers names the service."""
    async with ServiceClient(address_of(fake_broker), timeout=2.0, retries=0) as client:
        pending = asyncio.ensure_future(client.request("echo", "x"))
        identity, request_id, *_ = await fake_broker.recv_multipart()
        reply = [identity, request_id, b"", b"MDPC01", b"echo", b"yaml", b"a: 1"]
        await fake_broker.send_multipart(reply)
        with pytest.raises(PayloadError, match="service 'echo' sent a reply that is not"):
            await pending


async def test_a_strange_mmi_answer_is_a_service_error(fake_broker) -> None:
    async with ServiceClient(address_of(fake_broker), timeout=2.0) as client:
        pending = asyncio.ensure_future(client.service_exists("echo"))
        identity, request_id, *rest = await fake_broker.recv_multipart()
        assert rest == [b"", b"MDPC01", b"mmi.service", b"echo"]
        await fake_broker.send_multipart(
            [identity, request_id, b"", b"MDPC01", b"mmi.service", b"501"]
        )
        with pytest.raises(ServiceError, match=r"answered mmi\.service with"):
            await pending


async def test_a_malformed_reply_is_logged_and_the_real_one_still_answers(
    fake_broker, caplog: pytest.LogCaptureFixture
) -> None:
    async with ServiceClient(address_of(fake_broker), timeout=2.0, retries=0) as client:
        pending = asyncio.ensure_future(client.request("echo", "x"))
        identity, request_id, *_ = await fake_broker.recv_multipart()
        await fake_broker.send_multipart([identity, b"garbage"])
        await fake_broker.send_multipart([identity, request_id, b"", b"HTTP/1.1", b"echo", b"x"])
        await fake_broker.send_multipart(
            [identity, request_id, b"", b"MDPC01", b"echo", b"text", b"y"]
        )
        assert await pending == "y"
    malformed = [r for r in caplog.records if "malformed reply from the broker" in r.message]
    assert len(malformed) == 2
    assert client.late_replies == 0


async def test_a_client_used_from_a_second_event_loop_says_so(fake_broker) -> None:
    """Its socket is watched by the loop that opened it; another loop would never be woken."""
    client = ServiceClient(address_of(fake_broker), timeout=0.2, retries=0)
    try:
        with pytest.raises(ServiceUnavailable):
            await client.request("echo", "x")  # opens the socket in this loop
        caught: list[BaseException] = []

        def elsewhere() -> None:
            try:
                asyncio.run(client.request("echo", "x"))
            except BaseException as exc:
                caught.append(exc)

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(10)
        assert len(caught) == 1 and isinstance(caught[0], RuntimeError)
        assert "the event loop that opened it" in str(caught[0])
    finally:
        await client.close()


async def full_client() -> ServiceClient:
    """A client whose socket takes one message: no broker reads, so the next send is refused.

    A high-water mark of 1 stands in for the 100,000 requests a real client queues first.
    """
    client = ServiceClient(free_tcp_address(), timeout=0.3, retries=0)
    client._open()
    assert client._socket is not None
    client._socket.setsockopt(zmq.SNDHWM, 1)
    with pytest.raises(ServiceUnavailable):
        await client.request("echo", "fills the socket")
    return client


async def test_a_socket_that_stays_full_is_unavailable_within_the_timeout() -> None:
    client = await full_client()
    try:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailable, match=r"did not answer within 0\.3s"):
            await client.request("echo", "x")
        assert time.monotonic() - start < 2.0
        assert client.resends == 0
    finally:
        await client.close()


async def test_closing_a_client_while_it_waits_for_room_fails_the_request(caplog) -> None:
    client = await full_client()
    pending = asyncio.ensure_future(client.request("echo", "x", timeout=30.0))
    await asyncio.sleep(0.05)  # it is waiting for room in the socket
    await client.close()
    with pytest.raises(ServiceUnavailable, match="closed"):
        await asyncio.wait_for(pending, 2.0)
    del pending
    gc.collect()  # a failed future nobody looked at is reported when it is collected
    assert "never retrieved" not in caplog.text


# The broker: settings and life cycle


@pytest.mark.parametrize(("heartbeat", "liveness"), [(0, 3), (-1.0, 3), (1.0, 0)])
def test_broker_settings_are_checked(heartbeat: float, liveness: int) -> None:
    with pytest.raises(ValueError, match="need heartbeat > 0 and liveness >= 1"):
        Broker(heartbeat=heartbeat, liveness=liveness)


async def test_starting_a_started_broker_keeps_its_socket() -> None:
    async with running_broker(heartbeat=NO_TICK) as broker:
        address = broker.address
        await broker.start()
        assert broker.address == address  # a second bind of "*" would have moved it
        client = Peer(address)
        try:
            await client.send([RID, b"", b"MDPC01", b"mmi.service", b"echo"])
            assert (await client.recv())[-1] == b"404"
        finally:
            client.close()


async def test_serve_raises_what_broke_the_routing_loop(caplog) -> None:
    """A crashed heartbeat loop must not leave serve() waiting forever on a dead broker."""
    broker = Broker("tcp://127.0.0.1:*", heartbeat=0.01)

    def broken_tick(now: float, expire: bool = True) -> None:
        raise RuntimeError("tick failed")

    broker._tick = broken_tick  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="tick failed"):
        await asyncio.wait_for(broker.serve(), 5)
    assert not broker.running
    # The socket was closed all the same: its port is free for the next broker.
    async with running_broker(broker.address, heartbeat=NO_TICK) as again:
        assert again.address == broker.address


async def test_the_command_line_broker_stops_on_sigterm_and_tells_its_workers() -> None:
    address = free_tcp_address()
    command = [sys.executable, "-m", "brubeck.services.broker", address, "--heartbeat", "0.2"]
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
    worker = client = None
    try:
        worker, client = Peer(address), Peer(address)
        await worker.send(mdp.ready(b"echo"))

        async def registered() -> bool:
            await client.send([RID, b"", b"MDPC01", b"mmi.service", b"echo"])
            with contextlib.suppress(TimeoutError):
                return (await client.recv(timeout=0.5))[-1] == b"200"
            return False

        deadline = time.monotonic() + 15
        while not await registered():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the broker never registered the worker"
        proc.send_signal(signal.SIGTERM)
        assert await worker.recv(timeout=10) == mdp.disconnect()
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        for peer in (worker, client):
            if peer is not None:
                peer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


# The broker, against misbehaving workers and clients


async def test_a_malformed_message_from_a_registered_worker_disconnects_it(caplog) -> None:
    async with running_broker(heartbeat=NO_TICK) as broker:
        worker, client = Peer(broker.address), Peer(broker.address)
        try:
            await worker.ready(beat=False)
            await client.send([RID, b"", b"MDPC01", b"echo", b"job"])
            await take_request(worker)
            await worker.send([b"", b"MDPW01", mdp.REPLY])  # a REPLY with no address or body
            assert await worker.recv() == mdp.disconnect()
            assert broker.worker_count() == 0
            # Its request was not lost with it: it waits for the next worker.
            assert broker.queue_length("echo") == 1
            honest = Peer(broker.address)
            try:
                await honest.ready(beat=False)
                _, body = await take_request(honest)
                assert body == [b"job"]
            finally:
                honest.close()
        finally:
            worker.close()
            client.close()
    assert "sent a malformed message: disconnecting it" in caplog.text


async def test_a_worker_may_not_serve_an_mmi_service(caplog) -> None:
    async with running_broker(heartbeat=NO_TICK) as broker:
        worker, client = Peer(broker.address), Peer(broker.address)
        try:
            await worker.ready(b"mmi.service", beat=False)
            assert await worker.recv() == mdp.disconnect()
            assert broker.worker_count() == 0
            # The management interface still answers, from the broker itself.
            await client.send([RID, b"", b"MDPC01", b"mmi.service", b"mmi.service"])
            assert (await client.recv())[-1] == b"404"
        finally:
            worker.close()
            client.close()
    assert "mmi.* is reserved" in caplog.text


async def test_max_queue_drops_the_newest_requests_and_keeps_the_rest(caplog) -> None:
    async with running_broker(heartbeat=NO_TICK, max_queue=2) as broker:
        client, worker = Peer(broker.address), Peer(broker.address)
        try:
            for n in range(3):
                await client.send([b"%8d" % n, b"", b"MDPC01", b"echo", b"job %d" % n])
            await eventually(lambda: broker.dropped == 1, 5, "the third request dropped")
            assert broker.queue_length("echo") == 2
            await worker.ready(beat=False)
            for n in range(2):
                address, body = await take_request(worker)
                assert body == [b"job %d" % n]
                await worker.send(mdp.reply(address, [b"done %d" % n]))
            await worker.nothing()
        finally:
            client.close()
            worker.close()
    assert "2 already wait for a worker" in caplog.text


async def test_a_request_expired_before_a_worker_came_is_never_run(caplog) -> None:
    """No heartbeat ran to expire it: the worker's arrival finds it too old and drops it."""
    async with running_broker(heartbeat=NO_TICK, queue_timeout=0.05) as broker:
        client, worker = Peer(broker.address), Peer(broker.address)
        try:
            await client.send([RID, b"", b"MDPC01", b"echo", b"stale"])
            await eventually(lambda: broker.queue_length("echo") == 1, 5, "the request queued")
            await asyncio.sleep(0.2)
            await worker.ready(beat=False)
            await eventually(lambda: broker.dropped == 1, 5, "the stale request dropped")
            await worker.nothing()
            assert broker.worker_count("echo") == 1  # idle, still waiting for work
        finally:
            client.close()
            worker.close()
    assert "waited too long for a worker" in caplog.text


async def test_the_heartbeat_expires_old_requests_and_keeps_young_ones(caplog) -> None:
    caplog.set_level(logging.WARNING)
    async with running_broker(heartbeat=0.05, liveness=100, queue_timeout=1.0) as broker:
        client, worker = Peer(broker.address), Peer(broker.address)
        try:
            await client.send([b"old-----", b"", b"MDPC01", b"echo", b"old"])
            await asyncio.sleep(0.6)
            await client.send([b"young---", b"", b"MDPC01", b"echo", b"young"])
            await eventually(lambda: broker.dropped == 1, 5, "the old request dropped")
            # The young one has about 0.6 s left: plenty for a worker to arrive and take it.
            await worker.ready(beat=False)
            _, body = await take_request(worker)
            assert body == [b"young"]
        finally:
            client.close()
            worker.close()
    assert "waited over 1.0s for a worker" in caplog.text
