"""services/broker.py: the Majordomo broker, driven frame by frame from raw ZeroMQ sockets."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import zmq
import zmq.asyncio

from brubeck.services import Broker, mdp

HEARTBEAT = 0.05
#: Heartbeats a worker may miss here: 0.4 s. With 3 (0.15 s), a loaded machine stalled this
#: process long enough for the broker to drop a worker that was beating, and a test that
#: expected silence got a DISCONNECT.
LIVENESS = 8
RID = b"\x00\x00\x00\x00\x00\x00\x00\x01"


class Peer:
    """A raw DEALER (or REQ) socket connected to the broker, playing a client or a worker."""

    def __init__(self, address: str, kind: int = zmq.DEALER) -> None:
        self.sock = zmq.asyncio.Context.instance().socket(kind)
        self.sock.linger = 0
        self.sock.connect(address)
        self._beating: asyncio.Task[None] | None = None

    async def send(self, frames: list[bytes]) -> None:
        await self.sock.send_multipart(frames)

    async def recv(self, timeout: float = 2.0, skip_heartbeats: bool = True) -> list[bytes]:
        async with asyncio.timeout(timeout):
            while True:
                frames = await self.sock.recv_multipart()
                if not (skip_heartbeats and frames == mdp.heartbeat()):
                    return frames

    async def nothing(self, wait: float = 0.2) -> None:
        """Assert that nothing but heartbeats arrives within ``wait`` seconds."""
        with contextlib.suppress(TimeoutError):
            frames = await self.recv(wait)
            pytest.fail(f"expected nothing, got {frames!r}")

    async def ready(self, service: bytes = b"echo", beat: bool = True) -> None:
        await self.send(mdp.ready(service))
        if beat:
            self._beating = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self.send(mdp.heartbeat())

    def stop_beating(self) -> None:
        if self._beating is not None:
            self._beating.cancel()

    def close(self) -> None:
        self.stop_beating()
        self.sock.close(linger=0)


@pytest.fixture
async def broker():
    broker = Broker("tcp://127.0.0.1:*", heartbeat=HEARTBEAT, liveness=LIVENESS, queue_timeout=0.3)
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
def peer(broker):
    opened: list[Peer] = []

    def make(kind: int = zmq.DEALER) -> Peer:
        opened.append(Peer(broker.address, kind))
        return opened[-1]

    yield make
    for p in opened:
        p.close()


async def until(predicate, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def take_request(worker: Peer) -> tuple[bytes, list[bytes]]:
    frames = await worker.recv()
    assert frames[:4] == [b"", b"MDPW01", b"\x02", frames[3]] and frames[4] == b""
    return frames[3], frames[5:]


async def test_a_request_reaches_a_worker_and_the_reply_its_client(broker, peer):
    worker, client = peer(), peer()
    await worker.ready()
    await until(lambda: broker.worker_count("echo") == 1)
    await client.send([RID, b"", b"MDPC01", b"echo", b"text", b"hi"])
    token, body = await take_request(worker)
    assert len(token) == 8 and body == [b"text", b"hi"]
    await worker.send(mdp.reply(token, [b"text", b"HI"]))
    assert await client.recv() == [RID, b"", b"MDPC01", b"echo", b"text", b"HI"]


async def test_a_strict_req_client_is_served(broker, peer):
    worker, client = peer(), peer(zmq.REQ)
    await worker.ready()
    await client.send([b"MDPC01", b"echo", b"ping"])  # REQ adds the empty frame
    token, body = await take_request(worker)
    await worker.send(mdp.reply(token, body))
    assert await client.recv() == [b"MDPC01", b"echo", b"ping"]


async def test_requests_wait_for_a_worker_and_go_least_recently_used_first(broker, peer):
    client, a, b = peer(), peer(), peer()
    for n in range(3):
        await client.send([bytes([n + 1]), b"", b"MDPC01", b"echo", b"%d" % n])
    await until(lambda: broker.queue_length("echo") == 3)
    await a.ready()
    token, body = await take_request(a)
    assert body == [b"0"]
    await b.ready()
    _, body_b = await take_request(b)
    assert body_b == [b"1"]
    await a.send(mdp.reply(token, [b"r0"]))
    assert (await client.recv())[0] == b"\x01"
    # a is idle again and b is busy: the third request goes to a.
    token, body = await take_request(a)
    assert body == [b"2"]


async def test_a_retry_of_a_request_in_progress_is_ignored(broker, peer):
    worker, client = peer(), peer()
    await worker.ready()
    request = [RID, b"", b"MDPC01", b"echo", b"once"]
    await client.send(request)
    token, _ = await take_request(worker)
    await client.send(request)  # the client's retry
    await until(lambda: broker.duplicates == 1)
    await worker.send(mdp.reply(token, [b"done"]))
    assert (await client.recv())[-1] == b"done"
    await worker.nothing()
    await client.nothing()
    # Answered, so the same id may be used again.
    await client.send(request)
    await take_request(worker)


async def test_a_silent_worker_is_dropped_and_its_request_given_to_another(broker, peer):
    silent, healthy, client = peer(), peer(), peer()
    await silent.ready(beat=False)
    await until(lambda: broker.worker_count("echo") == 1)
    await client.send([RID, b"", b"MDPC01", b"echo", b"job"])
    old_token, _ = await take_request(silent)
    await healthy.ready()
    token, body = await take_request(
        healthy,
    )
    assert body == [b"job"] and token != old_token
    assert broker.worker_count("echo") == 1
    await silent.send(mdp.reply(old_token, [b"late"]))  # from a worker the broker forgot
    assert await silent.recv() == mdp.disconnect()
    await healthy.send(mdp.reply(token, [b"on time"]))
    assert (await client.recv())[-1] == b"on time"
    await client.nothing()


async def test_a_worker_that_disconnects_mid_request_hands_it_back(broker, peer):
    leaving, staying, client = peer(), peer(), peer()
    await leaving.ready()
    await until(lambda: broker.worker_count("echo") == 1)
    await client.send([RID, b"", b"MDPC01", b"echo", b"job"])
    await take_request(leaving)
    await staying.ready()
    await leaving.send(mdp.disconnect())
    token, body = await take_request(staying)
    await staying.send(mdp.reply(token, body))
    assert (await client.recv())[-1] == b"job"


async def test_a_reply_with_the_wrong_token_never_reaches_a_client(broker, peer):
    liar, client = peer(), peer()
    await liar.ready()
    await client.send([RID, b"", b"MDPC01", b"echo", b"job"])
    await take_request(liar)
    await liar.send(mdp.reply(b"\x00" * 8, [b"forged"]))
    assert await liar.recv() == mdp.disconnect()
    await client.nothing()
    assert broker.worker_count() == 0
    assert broker.queue_length("echo") == 1  # the request waits for an honest worker


async def test_protocol_errors_get_a_disconnect(broker, peer):
    stranger, twice = peer(), peer()
    await stranger.send(mdp.heartbeat())
    assert await stranger.recv() == mdp.disconnect()
    await twice.ready()
    await until(lambda: broker.worker_count() == 1)
    await twice.send(mdp.ready(b"echo"))
    assert await twice.recv() == mdp.disconnect()
    assert broker.worker_count() == 0


async def test_the_broker_heartbeats_its_workers(broker, peer):
    worker = peer()
    await worker.ready()
    assert await worker.recv(skip_heartbeats=False) == mdp.heartbeat()


async def test_a_request_nobody_serves_expires(broker, peer):
    client, worker = peer(), peer()
    await client.send([RID, b"", b"MDPC01", b"echo", b"job"])
    await until(lambda: broker.dropped == 1, timeout=3)
    await worker.ready()
    await worker.nothing()


async def test_max_redeliveries_bounds_a_request_that_kills_workers(peer):
    broker = Broker("tcp://127.0.0.1:*", heartbeat=HEARTBEAT, liveness=LIVENESS, max_redeliveries=1)
    await broker.start()
    try:
        client = Peer(broker.address)
        workers = [Peer(broker.address) for _ in range(3)]
        await client.send([RID, b"", b"MDPC01", b"echo", b"poison"])
        for worker in workers[:2]:
            await worker.ready()
            await take_request(worker)
            await worker.send(mdp.disconnect())
        await until(lambda: broker.dropped == 1)
        await workers[2].ready()
        await workers[2].nothing()
    finally:
        for p in [client, *workers]:
            p.close()
        await broker.stop()


async def test_mmi_service(broker, peer):
    client, worker = peer(), peer()
    await client.send([RID, b"", b"MDPC01", b"mmi.service", b"echo"])
    assert await client.recv() == [RID, b"", b"MDPC01", b"mmi.service", b"404"]
    await worker.ready()
    await until(lambda: broker.worker_count("echo") == 1)
    await client.send([RID, b"", b"MDPC01", b"mmi.service", b"echo"])
    assert (await client.recv())[-1] == b"200"
    await client.send([RID, b"", b"MDPC01", b"mmi.nope", b"x"])
    assert (await client.recv())[-1] == b"501"


async def test_malformed_messages_are_dropped_and_routing_goes_on(broker, peer):
    junk, worker, client = peer(), peer(), peer()
    for frames in ([b"garbage"], [b"", b"HTTP/1.1"], [b"", b"MDPW01", b"\x07"]):
        await junk.send(frames)
    await worker.ready()
    await client.send([RID, b"", b"MDPC01", b"echo", b"still works"])
    _, body = await take_request(worker)
    assert body == [b"still works"]


async def test_stop_tells_workers_to_reconnect(peer):
    broker = Broker("tcp://127.0.0.1:*", heartbeat=HEARTBEAT)
    await broker.start()
    worker = Peer(broker.address)
    try:
        await worker.ready()
        await until(lambda: broker.worker_count() == 1)
        await broker.stop()
        assert await worker.recv() == mdp.disconnect()
    finally:
        worker.close()


async def test_binding_a_taken_address_says_so(broker):
    with pytest.raises(OSError, match=f"cannot bind {broker.address}"):
        await Broker(broker.address).start()


async def test_serve_runs_until_cancelled():
    broker = Broker("tcp://127.0.0.1:*")
    task = asyncio.get_running_loop().create_task(broker.serve())
    await until(lambda: broker.running)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not broker.running
