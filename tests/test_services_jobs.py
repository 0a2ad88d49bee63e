"""services/jobs.py: fire-and-forget jobs over PUSH/PULL, dealt round robin to worker processes."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest
import zmq
import zmq.asyncio

from brubeck.services import JobQueue, JobWorker, ServiceUnavailable
from tests.services_support import Processes, eventually


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
async def running():
    """``running(worker)`` serves a JobWorker for the test; all are stopped at teardown."""
    started: list[tuple[JobWorker, asyncio.Task[None]]] = []

    async def start(worker: JobWorker) -> JobWorker:
        task = asyncio.get_running_loop().create_task(worker.serve())
        started.append((worker, task))
        async with asyncio.timeout(5):
            await worker.started()
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    async with asyncio.timeout(5):
        await asyncio.gather(*(task for _, task in started))


@pytest.fixture
async def queue():
    jobs = JobQueue("tcp://127.0.0.1:*", timeout=2.0)
    jobs.open()
    yield jobs
    await jobs.close(linger=0)


async def test_three_worker_processes_share_300_jobs(procs, queue, running):
    results: list[dict] = []
    sink = await running(JobWorker("tcp://127.0.0.1:*", results.append, bind=True))
    for _ in range(3):
        procs.python("-m", "tests.services_support", "jobs", queue.address, sink.address)
    await queue.wait_for_workers(3, timeout=15)
    for n in range(300):
        await queue.push({"n": n})
    await eventually(lambda: len(results) >= 300, timeout=15, what="300 results")
    await asyncio.sleep(0.1)  # anything done twice would show up now
    assert sorted(r["job"]["n"] for r in results) == list(range(300))  # each exactly once
    per_worker = collections.Counter(r["pid"] for r in results)
    assert len(per_worker) == 3
    assert min(per_worker.values()) >= 50, per_worker


async def test_a_new_worker_joins_the_round_robin(queue, running):
    seen: dict[str, list[int]] = {"a": [], "b": []}
    await running(JobWorker(queue.address, seen["a"].append))
    await queue.wait_for_workers(1)
    for n in range(4):
        await queue.push(n)
    await eventually(lambda: len(seen["a"]) == 4, what="a's jobs")
    await running(JobWorker(queue.address, seen["b"].append))
    await queue.wait_for_workers(2)
    for n in range(4, 12):
        await queue.push(n)
    await eventually(lambda: len(seen["a"]) + len(seen["b"]) == 12, what="all jobs")
    assert seen["b"], "the new worker got no job"
    assert sorted(seen["a"] + seen["b"]) == list(range(12))


@pytest.mark.parametrize("payload", [b"\x00raw", "text é", {"k": [1, None]}, 3.5, None])
async def test_payloads_arrive_as_they_left(queue, running, payload):
    got: list = []
    await running(JobWorker(queue.address, got.append))
    await queue.push(payload)
    await eventually(lambda: got, what="the job")
    assert got == [payload]


async def test_no_worker_is_service_unavailable_after_the_timeout(queue):
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="no worker is connected") as caught:
        await queue.push("lonely", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 0.8
    assert isinstance(caught.value, TimeoutError)
    assert queue.address in str(caught.value)


async def test_the_queue_is_bounded_when_workers_do_not_keep_up():
    queue = JobQueue("tcp://127.0.0.1:*", hwm=5, timeout=0.2)
    queue.open()
    stuck = zmq.asyncio.Context.instance().socket(zmq.PULL)  # connected, never reads
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.linger = 0
    stuck.connect(queue.address)
    try:
        await queue.wait_for_workers(1)
        pushed = 0
        big = b"x" * 256 * 1024  # large, so the kernel's socket buffers hold few of them
        with pytest.raises(ServiceUnavailable, match="have 5 jobs waiting"):
            for _ in range(1000):
                await queue.push(big)
                pushed += 1
        assert 5 <= pushed < 100
    finally:
        stuck.close()
        await queue.close(linger=0)


async def test_a_failing_job_does_not_stop_the_worker(queue, running):
    done: list[int] = []

    def handle(n):
        if n == 1:
            raise RuntimeError("job 1 fails on purpose")
        done.append(n)

    worker = await running(JobWorker(queue.address, handle))
    for n in range(3):
        await queue.push(n)
    await eventually(lambda: worker.done == 3, what="three jobs")
    assert done == [0, 2] and worker.failed == 1


async def test_decorator_subclass_and_concurrency(queue, running):
    decorated = JobWorker(queue.address, concurrency=4)
    active, peak = 0, 0

    @decorated.job
    async def track(payload):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1

    await running(decorated)
    for n in range(8):
        await queue.push(n)
    await eventually(lambda: decorated.done == 8, what="eight jobs")
    assert peak > 1

    class Collector(JobWorker):
        def __init__(self, address):
            super().__init__(address)
            self.items = []

        async def handle(self, payload):
            self.items.append(payload)

    async with JobQueue("tcp://127.0.0.1:*") as other:
        collector = await running(Collector(other.address))
        await other.push("via a subclass")
        await eventually(lambda: collector.items, what="the subclass's job")
        assert collector.items == ["via a subclass"]


async def test_stop_lets_the_running_job_finish(queue):
    finished = []
    started = asyncio.Event()

    async def slow(payload):
        started.set()
        await asyncio.sleep(0.2)
        finished.append(payload)

    worker = JobWorker(queue.address, slow)
    task = asyncio.get_running_loop().create_task(worker.serve())
    await queue.push("in progress")
    async with asyncio.timeout(3):
        await started.wait()
    worker.stop()
    async with asyncio.timeout(3):
        await task
    assert finished == ["in progress"]


async def test_a_results_collector_binds_and_producers_connect(running):
    got: list = []
    collector = await running(JobWorker("tcp://127.0.0.1:*", got.append, bind=True))
    async with JobQueue(collector.address, bind=False, timeout=2) as producer:
        await producer.push({"done": 1})
    await eventually(lambda: got, what="the result")
    assert got == [{"done": 1}]


async def test_a_foreign_producer_may_send_one_untagged_frame(queue, running):
    got: list = []
    sink = await running(JobWorker("tcp://127.0.0.1:*", got.append, bind=True))
    push = zmq.asyncio.Context.instance().socket(zmq.PUSH)
    push.linger = 1000
    push.connect(sink.address)
    await push.send(b"from C, say")
    push.close()
    await eventually(lambda: got, what="the job")
    assert got == [b"from C, say"]


async def test_wait_for_workers_times_out_clearly(queue):
    with pytest.raises(ServiceUnavailable, match="0 of 2 job workers connected"):
        await queue.wait_for_workers(2, timeout=0.1)


async def test_a_taken_or_unusable_address_says_whose_and_which(queue):
    with pytest.raises(OSError, match=f"the job queue cannot bind {queue.address}") as taken:
        JobQueue(queue.address).open()
    assert taken.value.errno == zmq.EADDRINUSE
    worker = JobWorker("nowhere://x", lambda payload: None)
    with pytest.raises(OSError, match="the job worker cannot connect to nowhere://x"):
        await worker.serve()
