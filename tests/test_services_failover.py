"""Services when processes die: workers killed with SIGKILL mid-request, restarted, all gone;
a broker killed and restarted; and a thousand requests at once from one process.

Workers are child processes (tests/services_support.py); the broker runs in the test's loop
unless it is the one to kill. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time

import pytest

from brubeck.services import Broker, ServiceClient, ServiceUnavailable, ServiceWorker
from tests.services_support import Processes, eventually, free_tcp_address

HEARTBEAT = 0.1


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
async def broker():
    broker = Broker("tcp://127.0.0.1:*", heartbeat=HEARTBEAT)
    await broker.start()
    yield broker
    await broker.stop()


async def start_workers(procs: Processes, broker: Broker, count: int, heartbeat=HEARTBEAT):
    workers = [procs.mdp_worker(broker.address, heartbeat) for _ in range(count)]
    await eventually(
        lambda: broker.worker_count("echo") == count, timeout=15, what=f"{count} workers"
    )
    return workers


async def test_a_worker_killed_mid_request_is_replaced_and_the_caller_gets_one_reply(
    broker, procs, tmp_path
):
    workers = await start_workers(procs, broker, 2)
    marker = tmp_path / "hung"
    async with ServiceClient(broker.address, timeout=5.0, retries=2) as client:
        pending = asyncio.ensure_future(client.request("echo", {"hang": str(marker)}))
        await eventually(lambda: marker.exists() and marker.read_text(), what="a hung worker")
        victim = int(marker.read_text())
        started = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        reply = await pending
        recovered = time.monotonic() - started
        survivor = next(w.pid for w in workers if w.pid != victim)
        assert reply == {"pid": survivor, "payload": {"hang": str(marker)}}
        # Found dead by heartbeat (3 x 0.1 s), not by the client's 1.67 s attempt timeout.
        assert recovered < 1.5
        await asyncio.sleep(0.3)
        assert client.late_replies == 0
    assert broker.worker_count("echo") == 1


async def test_all_workers_gone_is_a_clear_error_within_the_timeout(broker, procs):
    workers = await start_workers(procs, broker, 2)
    for worker in workers:
        Processes.kill(worker)
    async with ServiceClient(broker.address) as client:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="'echo' did not answer within 1s"):
            await client.request("echo", "anyone?", timeout=1.0)
        assert time.monotonic() - started < 1.5
    assert broker.worker_count("echo") == 0  # found dead by heartbeat meanwhile


async def test_a_restarted_worker_rejoins_and_serves(broker, procs):
    (first,) = await start_workers(procs, broker, 1)
    Processes.kill(first)
    await eventually(lambda: broker.worker_count("echo") == 0, what="the dead worker's expiry")
    async with ServiceClient(broker.address, timeout=10) as client:
        # Asked while no worker lives: the request waits in the broker's queue.
        pending = asyncio.ensure_future(client.request("echo", "welcome back"))
        await asyncio.sleep(0.2)
        (second,) = await start_workers(procs, broker, 1)
        assert await pending == {"pid": second.pid, "payload": "welcome back"}


async def test_workers_find_a_broker_that_was_killed_and_restarted(procs):
    address = free_tcp_address()
    broker_args = ("-m", "brubeck.services.broker", address, "--heartbeat", str(HEARTBEAT))
    broker = procs.python(*broker_args)
    worker = ServiceWorker(address, "echo", lambda p: p, heartbeat=HEARTBEAT, reconnect=0.1)
    task = asyncio.get_running_loop().create_task(worker.serve())
    try:
        async with ServiceClient(address, timeout=10) as client:
            assert await client.request("echo", "before") == "before"
            Processes.kill(broker)  # no DISCONNECT: only the silence tells
            procs.python(*broker_args)
            assert await client.request("echo", "after") == "after"
    finally:
        worker.stop()
        async with asyncio.timeout(5):
            await task
    assert worker.handled == 2


async def test_a_thousand_concurrent_requests_from_one_process(procs):
    # Slower heartbeats than the other tests: this process sends 1000 requests in one burst,
    # and a loaded machine must not make the broker take busy workers for dead.
    async with Broker("tcp://127.0.0.1:*", heartbeat=0.5) as broker:
        workers = await start_workers(procs, broker, 3, heartbeat=0.5)
        async with ServiceClient(broker.address, timeout=20) as client:
            started = time.monotonic()
            replies = await asyncio.gather(*(client.request("echo", {"n": n}) for n in range(1000)))
            elapsed = time.monotonic() - started
            assert [r["payload"] for r in replies] == [{"n": n} for n in range(1000)]
            assert client.late_replies == 0
    served = collections.Counter(r["pid"] for r in replies)
    assert set(served) <= {w.pid for w in workers}
    print(f"1000 requests in {elapsed:.2f}s, served by {sorted(served.values())}")
