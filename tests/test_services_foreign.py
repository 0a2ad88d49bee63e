"""Workers written without Brubeck speak to Brubeck's broker and client: the examples in
examples/services/, a plain pyzmq script and a C program built here with gcc and libzmq.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from brubeck.services import Broker, JobWorker, ServiceClient
from tests.services_support import ROOT, Processes, build_c_worker, eventually

HEARTBEAT = 0.1


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture(scope="module")
def c_worker(tmp_path_factory):
    return build_c_worker(tmp_path_factory.mktemp("c-worker"))


@pytest.fixture
async def broker():
    broker = Broker("tcp://127.0.0.1:*", heartbeat=HEARTBEAT)
    await broker.start()
    yield broker
    await broker.stop()


async def test_the_plain_pyzmq_worker(broker, procs):
    script = ROOT / "examples" / "services" / "echo_worker.py"
    worker = procs.python(script, broker.address, "--heartbeat", str(HEARTBEAT))
    await eventually(lambda: broker.worker_count("echo") == 1, what="the pyzmq worker")
    async with ServiceClient(broker.address, timeout=3) as client:
        for payload in (b"\x00\x01", "héllo", {"list": [1, 2]}):
            assert await client.request("echo", payload) == payload
        replies = await asyncio.gather(*(client.request("echo", n) for n in range(50)))
        assert replies == list(range(50))
    worker.send_signal(signal.SIGTERM)  # it says DISCONNECT: no waiting for its heartbeats
    await eventually(lambda: broker.worker_count("echo") == 0, timeout=1, what="DISCONNECT")
    assert worker.wait(5) == 0


async def test_the_c_worker(broker, procs, c_worker):
    worker = procs.start(c_worker, broker.address, "upper", str(int(HEARTBEAT * 1000)))
    await eventually(lambda: broker.worker_count("upper") == 1, what="the C worker")
    async with ServiceClient(broker.address, timeout=3) as client:
        assert await client.request("upper", "hello from C") == "HELLO FROM C"
        assert await client.request("upper", b"raw bytes") == b"RAW BYTES"
        replies = await asyncio.gather(*(client.request("upper", f"n{n}") for n in range(50)))
        assert replies == [f"N{n}" for n in range(50)]
        # Heartbeats both ways keep it registered through a quiet spell.
        await asyncio.sleep(5 * HEARTBEAT)
        assert broker.worker_count("upper") == 1
        assert await client.request("upper", "still here") == "STILL HERE"
    worker.send_signal(signal.SIGTERM)
    await eventually(lambda: broker.worker_count("upper") == 0, timeout=1, what="DISCONNECT")
    assert worker.wait(5) == 0


async def test_the_c_worker_registers_again_after_a_broker_restart(procs, c_worker):
    broker = Broker("tcp://127.0.0.1:*", heartbeat=HEARTBEAT)
    await broker.start()
    address = broker.address
    procs.start(c_worker, address, "upper", str(int(HEARTBEAT * 1000)))
    await eventually(lambda: broker.worker_count("upper") == 1, what="the C worker")
    await broker.stop()  # sends DISCONNECT: the worker opens a new socket and says READY
    broker = Broker(address, heartbeat=HEARTBEAT)
    await broker.start()
    try:
        await eventually(lambda: broker.worker_count("upper") == 1, what="registration again")
        async with ServiceClient(address, timeout=3) as client:
            assert await client.request("upper", "again") == "AGAIN"
    finally:
        await broker.stop()


async def test_a_job_for_a_brubeck_worker_from_a_plain_pyzmq_producer(procs):
    """The job framing from another program: two frames, tag then data."""
    got: list = []
    worker = JobWorker("tcp://127.0.0.1:*", got.append, bind=True)
    task = asyncio.get_running_loop().create_task(worker.serve())
    address = await worker.started()
    code = (
        "import sys, zmq; s = zmq.Context.instance().socket(zmq.PUSH); s.connect(sys.argv[1]); "
        "s.send_multipart([b'json', b'{\"from\": \"elsewhere\"}']); s.close(linger=2000)"
    )
    producer = procs.python("-c", code, address)
    try:
        await eventually(lambda: got, what="the job")
        assert got == [{"from": "elsewhere"}]
        assert producer.wait(5) == 0
    finally:
        worker.stop()
        await task
