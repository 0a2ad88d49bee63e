"""services: failure modes of the broker, clients and workers.

Broker restarts, workers that die or stall, resends that race replies, callers that gave up,
thread-bound handlers and shutdown. Peers are real sockets (tcp on 127.0.0.1, inproc) or real
processes; every wait is bounded. A test whose docstring starts with "Was a bug." fails until
the bug it describes is fixed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from brubeck.services import (
    Broker,
    JobQueue,
    JobWorker,
    ServiceClient,
    ServiceError,
    ServiceUnavailable,
    ServiceWorker,
    mdp,
)
from tests.services_support import ROOT, free_tcp_address
from tests.test_services_hardening import Raw, a_broker, raw_peers, rid, serving, until

BEAT = 0.1


# The broker's memory of requests: resends must not run a request again


async def test_a_poison_request_is_not_given_to_more_workers_when_its_client_resends() -> None:
    """Was a bug. docs/services.md: a request that kills every worker it meets "is dropped
    after the third" (``max_redeliveries=2``), and "a resend makes a request run again only
    when its first copy was really lost (a broker restart)". But dropping it also forgets its
    envelope, so the client's next resend (same request id) is taken as a new request and
    kills three more workers: with ``retries=r`` a poison request kills ``3 * (r + 1)``.
    Expected: the broker remembers a request it dropped after ``max_redeliveries`` (its
    envelope, service and body, for ``queue_timeout`` say) and ignores its resends like
    duplicates."""
    deliveries = 0

    async def dying_workers(address: str) -> None:
        """Workers that die (say DISCONNECT) as soon as they are given the request."""
        nonlocal deliveries
        while True:
            peer = Raw(address)
            try:
                await peer.send(mdp.ready(b"echo"))
                await peer.take_request()
                deliveries += 1
                await peer.send(mdp.disconnect())
                # Closed only once the broker has read the DISCONNECT (linger is 0).
                await until(lambda: broker.worker_count("echo") == 0, what="the death seen")
            finally:
                peer.close()

    async with a_broker(max_redeliveries=2) as broker:
        pool = asyncio.ensure_future(dying_workers(broker.address))
        try:
            async with ServiceClient(broker.address, timeout=1.0, retries=1) as client:
                with pytest.raises(ServiceUnavailable):
                    await client.request("echo", "poison")
                assert client.resends == 1
        finally:
            pool.cancel()
            await asyncio.gather(pool, return_exceptions=True)
        assert deliveries == 3, f"the poison request was given to {deliveries} workers"


async def test_a_resend_is_not_swallowed_by_a_copy_that_already_expired() -> None:
    """Was a bug. The first copy waited past ``queue_timeout`` but the heartbeat tick that
    purges expired requests has not run yet (it runs once per ``heartbeat``). The client's
    resend is then counted as a duplicate of that dead copy and thrown away; a worker that
    comes a moment later finds only the expired copy, drops it, and sits idle while the
    caller times out. Expected: a resend of a copy older than ``queue_timeout`` (or of a
    queued copy at all) is queued again / refreshes it, and the worker answers it."""
    async with (
        a_broker(heartbeat=1.0, queue_timeout=0.3) as broker,
        ServiceClient(broker.address, timeout=1.4, retries=1) as client,
    ):
        call = asyncio.ensure_future(client.request("echo", "still wanted"))
        await asyncio.sleep(0.8)  # the resend (at 0.7 s) has reached the broker
        assert client.resends == 1
        late = ServiceWorker(broker.address, "echo", lambda p: p, heartbeat=1.0)
        async with serving(late):
            await until(lambda: broker.worker_count("echo") == 1, what="worker registered")
            assert await asyncio.wait_for(call, 2.0) == "still wanted"


async def test_a_request_whose_caller_gave_up_is_not_run_when_the_broker_comes_back() -> None:
    """Was a bug. With no broker listening, ``request()`` raises ServiceUnavailable after its
    timeout, as documented. But its three attempts stay queued in the client's DEALER
    (ZeroMQ queues for a peer that is not connected yet) and are delivered when a broker
    binds the address, however much later: the work runs for a caller that was told it
    failed, outside every timeout and ``queue_timeout``. Expected: nothing of a call
    outlives it; e.g. the client's socket sets ``ZMQ_IMMEDIATE`` so that a send with no
    broker connected is refused (``_send`` already waits for room until the deadline)."""
    address = free_tcp_address()
    ran: list[Any] = []
    client = ServiceClient(address, timeout=0.3, retries=2)
    try:
        with pytest.raises(ServiceUnavailable):
            await client.request("echo", "gave up")
        broker = Broker(address, heartbeat=BEAT)
        await broker.start()
        try:
            echo = ServiceWorker(address, "echo", lambda p: ran.append(p) or p, heartbeat=BEAT)
            async with serving(echo):
                await until(lambda: broker.worker_count("echo") == 1, what="worker registered")
                await asyncio.sleep(0.3)
                assert await client.request("echo", "fresh", timeout=2.0) == "fresh"
                assert ran == ["fresh"], f"the abandoned call ran too: {ran}"
        finally:
            await broker.stop()
    finally:
        await client.close()


async def test_a_client_reaches_a_restarted_broker_over_inproc() -> None:
    """Was a bug. Over ``inproc://`` ZeroMQ does not reconnect a connecting socket after the
    bound one closes. Workers recover from a broker restart (they open a new socket when the
    broker goes silent or says DISCONNECT), but a ServiceClient keeps its dead socket: every
    later request times out for good, although the new broker has the worker. Expected: the
    client recovers too, e.g. reopens its socket when an attempt goes unanswered over inproc
    (or watches its socket's DISCONNECTED event)."""
    address = f"inproc://round2-{os.getpid()}-{id(object())}"
    first = Broker(address, heartbeat=BEAT)
    await first.start()
    second = Broker(address, heartbeat=BEAT)
    echo = ServiceWorker(address, "echo", lambda p: p, heartbeat=BEAT, reconnect=0.05)
    try:
        async with serving(echo), ServiceClient(address, timeout=1.0) as client:
            await until(lambda: first.worker_count("echo") == 1, what="worker registered")
            assert await client.request("echo", "before") == "before"
            await first.stop()
            await second.start()
            await until(lambda: second.worker_count("echo") == 1, what="worker back")
            assert await client.request("echo", "after", timeout=2.0) == "after"
    finally:
        await first.stop()
        await second.stop()


async def test_a_broker_killed_mid_request_and_restarted_answers_the_caller_once() -> None:
    """The broker process dies (no DISCONNECT) while a worker runs a request and the client
    waits; a new one binds the same address. The worker notices, abandons the request and
    registers again; the client's resend is answered once, with no stray reply."""
    address = free_tcp_address()
    command = [sys.executable, "-m", "brubeck.services.broker", address, "--heartbeat", str(BEAT)]
    started: list[Any] = []

    async def slow(payload: Any) -> Any:
        started.append(payload)
        await asyncio.sleep(0.4)
        return payload

    echo = ServiceWorker(address, "echo", slow, heartbeat=BEAT, reconnect=0.05)
    first = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    second = None
    try:
        async with serving(echo), ServiceClient(address, timeout=4.0, retries=3) as client:
            assert await client.request("echo", "warm up") == "warm up"
            call = asyncio.ensure_future(client.request("echo", "in flight"))
            await until(lambda: "in flight" in started, what="the request running")
            first.kill()
            first.wait(5)
            second = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
            assert await asyncio.wait_for(call, 4.0) == "in flight"
            await asyncio.sleep(0.3)
            assert client.late_replies == 0
            assert started == ["warm up", "in flight", "in flight"]  # at least once, as documented
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)


async def test_a_worker_cannot_answer_a_request_held_by_another_even_with_its_token() -> None:
    """Tokens are a counter, so easy to guess: a registered idle worker, or a peer that never
    sent READY, replying with the token the broker gave another worker is told DISCONNECT,
    and the client gets only the real worker's answer."""
    async with (
        a_broker() as broker,
        raw_peers(broker.address, 4) as (client, honest, idle, stranger),
    ):
        await honest.send(mdp.ready(b"echo"))
        await until(lambda: broker.worker_count("echo") == 1, what="honest registered")
        await client.send([rid(1), b"", mdp.CLIENT, b"echo", b"text", b"job"])
        token, _ = await honest.take_request()
        await idle.send(mdp.ready(b"echo"))
        await until(lambda: broker.worker_count("echo") == 2, what="idle registered")
        for forger in (idle, stranger):
            await forger.send(mdp.reply(token, [b"text", b"forged"]))
            assert await forger.recv() == mdp.disconnect()
        await client.nothing(0.1)
        await honest.send(mdp.reply(token, [b"text", b"real"]))
        assert (await client.recv())[-1] == b"real"
        assert broker.worker_count("echo") == 1


# Workers: configuration the broker will never accept


def test_a_worker_for_an_mmi_service_is_refused_when_made() -> None:
    """Was a bug. The broker answers READY for ``mmi.*`` with DISCONNECT (the name is its
    own), so ``ServiceWorker(address, "mmi.echo")`` registers, is refused and registers again
    every ``reconnect`` seconds forever, serving nothing, with only a warning per round in
    the log. Invalid names are refused by the constructor ("checked early"); expected: so is
    an ``mmi.`` name, with a ValueError saying it is reserved."""
    with pytest.raises(ValueError, match="mmi"):
        ServiceWorker("tcp://127.0.0.1:1", "mmi.echo", lambda p: p)


# Sync handlers: threads


def _more_than_the_default_pool() -> int:
    """One more than asyncio's default executor runs at once (3.8+: min(32, cpus + 4))."""
    return min(32, (os.cpu_count() or 1) + 4) + 1


async def test_a_service_worker_runs_concurrency_sync_handlers_at_once() -> None:
    """Was a bug. docs/services.md: "concurrency=8 is eight requests at once", and a ``def``
    handler runs in a thread. The threads are asyncio's default executor, shared by the whole
    process and capped at ``min(32, cpus + 4)``: with more links than that (here one more),
    the extra requests wait in the executor's queue while the broker counts their links busy,
    and handlers that need to run together never do. Expected: the worker runs its sync
    handlers on threads of its own, ``concurrency`` of them."""
    count = _more_than_the_default_pool()
    together = threading.Barrier(count, timeout=1.0)

    def handler(n: int) -> int:
        together.wait()  # returns once all ``count`` handlers run at the same time
        return n

    async with a_broker(heartbeat=BEAT) as broker:
        pool = ServiceWorker(broker.address, "echo", handler, heartbeat=BEAT, concurrency=count)
        async with serving(pool), ServiceClient(broker.address, timeout=3.0) as client:
            await until(lambda: broker.worker_count("echo") == count, what=f"{count} links")
            results = await asyncio.gather(
                *(client.request("echo", n) for n in range(count)), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            assert not failed, f"{len(failed)} of {count} failed, first: {failed[0]!r}"


async def test_a_job_worker_runs_concurrency_sync_jobs_at_once() -> None:
    """Was a bug. The same for ``JobWorker(concurrency=n)``: "jobs run at once by this
    process" is capped by asyncio's default executor, so ``n`` jobs that need to run
    together time out one by one."""
    count = _more_than_the_default_pool()
    together = threading.Barrier(count, timeout=1.0)
    met: list[int] = []

    def handler(n: int) -> None:
        together.wait()
        met.append(n)

    async with JobQueue("tcp://127.0.0.1:*", timeout=2.0) as queue:
        jobs = JobWorker(queue.address, handler, concurrency=count, shutdown_timeout=2.0)
        task = asyncio.get_running_loop().create_task(jobs.serve())
        try:
            await queue.wait_for_workers(1, timeout=2.0)
            for n in range(count):
                await queue.push(n)
            await until(lambda: jobs.done == count, 3.0, "every job run")
            assert jobs.failed == 0 and sorted(met) == list(range(count))
        finally:
            jobs.stop()
            await asyncio.wait_for(task, 5.0)


_STUCK_WORKER = textwrap.dedent(
    """
    import pathlib, sys, time
    from brubeck.services import JobWorker, ServiceWorker

    kind, address, flag = sys.argv[1:4]

    def stuck(payload):
        pathlib.Path(flag).write_text("running")
        time.sleep(20)

    if kind == "jobs":
        JobWorker(address, stuck, shutdown_timeout=0.2).run()
    else:
        ServiceWorker(address, "echo", stuck, heartbeat=0.1, shutdown_timeout=0.2).run()
    """
)


@pytest.mark.parametrize("kind", ["jobs", "service"])
async def test_run_ends_soon_after_sigterm_even_with_a_stuck_sync_handler(
    kind: str, tmp_path: Path
) -> None:
    """Was a bug. ``worker.run()`` stops on SIGTERM, waiting for handlers "up to
    ``shutdown_timeout``". ``serve()`` does give up on a ``def`` handler after it, but the
    handler's thread is asyncio's default executor, and ``asyncio.Runner.close()`` (like
    interpreter exit, for any ThreadPoolExecutor) joins it: the process lives until the
    handler returns (here 20 s; forever for a handler that hangs), and a supervisor has to
    SIGKILL it. Expected: the process exits shortly after ``shutdown_timeout``, abandoning
    the thread (run sync handlers on daemon threads the runner does not join)."""
    flag = tmp_path / "running"
    if kind == "jobs":
        queue = JobQueue("tcp://127.0.0.1:*", timeout=5.0)
        queue.open()
        address = queue.address
    else:
        broker = Broker("tcp://127.0.0.1:*", heartbeat=BEAT)
        await broker.start()
        address = broker.address
        client = ServiceClient(address, timeout=5.0, retries=0)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _STUCK_WORKER,
            "jobs" if kind == "jobs" else "mdp",
            address,
            str(flag),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    call = None
    try:
        if kind == "jobs":
            await queue.wait_for_workers(1, timeout=5.0)
            await queue.push("work")
        else:
            call = asyncio.ensure_future(client.request("echo", "work"))
        await until(flag.exists, 5.0, "the handler running")
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        try:
            await asyncio.to_thread(proc.wait, 2.0)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {time.monotonic() - start:.1f}s after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if kind == "jobs":
            await queue.close(linger=0)
        else:
            if call is not None:
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
            await client.close()
            await broker.stop()


# Jobs: the producer and the worker's life cycle


async def test_started_raises_when_the_job_worker_cannot_bind() -> None:
    """Was a bug. ``await worker.started()`` waits "until the socket is bound or connected".
    When ``serve()`` fails to bind (the address is taken) it raises, but ``started()`` is
    never released: whoever waits for the address hangs forever. Expected: ``started()``
    raises the same OSError (or a ServiceError naming the address)."""
    taken = zmq.asyncio.Context.instance().socket(zmq.PULL)
    taken.linger = 0
    taken.bind("tcp://127.0.0.1:*")
    address = taken.getsockopt_string(zmq.LAST_ENDPOINT)
    jobs = JobWorker(address, lambda job: None, bind=True)
    task = asyncio.get_running_loop().create_task(jobs.serve())
    try:
        try:
            await asyncio.wait_for(jobs.started(), 1.0)
        except TimeoutError:
            pytest.fail(f"started() still waits; serve() raised {task.exception()!r}")
        except (OSError, ServiceError) as exc:
            assert "cannot bind" in str(exc)
        else:
            pytest.fail("started() returned, but nothing was bound")
    finally:
        taken.close()
        jobs.stop()
        await asyncio.gather(task, return_exceptions=True)


async def test_closing_a_job_queue_fails_a_waiting_push_without_cancelling_it() -> None:
    """Was a bug. ``push`` waits for room (no worker connected); ``close()`` closes the
    socket under it, pyzmq cancels the poll, and ``push`` raises CancelledError into a task
    nobody cancelled: ``except Exception`` misses it and asyncio treats the caller as
    cancelled. ServiceClient does this right ("the ServiceClient was closed"). Expected: a
    ServiceError (ServiceUnavailable) saying the queue was closed."""
    queue = JobQueue("tcp://127.0.0.1:*", timeout=3.0)
    queue.open()
    push = asyncio.ensure_future(queue.push("never delivered"))
    await asyncio.sleep(0.1)  # it is waiting for a worker
    await queue.close(linger=0)
    await asyncio.wait({push}, timeout=2.0)
    assert push.done(), "push still waits on a closed queue"
    assert not push.cancelled(), "push raised CancelledError, though nobody cancelled it"
    assert isinstance(push.exception(), ServiceError), push.exception()
