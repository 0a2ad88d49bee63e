"""Adversarial checks of job queues, service clients and workers, payloads, WebSocket ownership
and the supervisor's settings: each test names what it expects."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
import uuid
from typing import Any

import pytest
import zmq
import zmq.asyncio

from brubeck import Brubeck, WebSocketHandler
from brubeck.ownership import Ownership
from brubeck.services import (
    JobQueue,
    JobWorker,
    PayloadError,
    ServiceClient,
    ServiceUnavailable,
    ServiceWorker,
)
from brubeck.services.payload import decode
from brubeck.supervisor import Backoff, Supervisor
from brubeck.testing import TestClient

NAN = float("nan")
INF = float("inf")


@contextlib.asynccontextmanager
async def serving(worker: JobWorker) -> Any:
    task = asyncio.get_running_loop().create_task(worker.serve())
    try:
        async with asyncio.timeout(2):
            await worker.started()
        yield worker
    finally:
        worker.stop()
        async with asyncio.timeout(2):
            await task


# JobQueue: per-call timeouts


@pytest.mark.parametrize("timeout", [INF, NAN, -1.0], ids=["inf", "nan", "negative"])
async def test_push_checks_its_timeout_like_the_constructor(timeout: float) -> None:
    """Was a bug. ``JobQueue(timeout=inf/nan/-1)`` is a ValueError, but ``push(timeout=...)``
    was not checked: inf raised OverflowError, NaN and -1 a ServiceUnavailable "within nans"
    / "within -1s" blaming the workers; expected: the same ValueError as the constructor's."""
    queue = JobQueue("tcp://127.0.0.1:*", timeout=0.1)
    queue.open()
    try:
        with pytest.raises(ValueError, match="timeout"):
            await queue.push("job", timeout=timeout)
    finally:
        await queue.close(linger=0)


async def test_wait_for_workers_with_a_nan_timeout_does_not_wait_forever() -> None:
    """Was a bug. ``wait_for_workers(timeout=nan)`` waited forever for a worker that never
    came; expected: a ValueError at once, as the constructor gives for a NaN timeout."""
    queue = JobQueue("tcp://127.0.0.1:*", timeout=0.1)
    try:
        async with asyncio.timeout(1):
            with pytest.raises(ValueError, match="timeout"):
                await queue.wait_for_workers(1, timeout=NAN)
    finally:
        await queue.close(linger=0)


# Counts that are not whole numbers


def _fractional_counts() -> list[Any]:
    return [
        pytest.param(lambda: JobQueue("tcp://127.0.0.1:*", hwm=1.5), "hwm", id="JobQueue.hwm"),
        pytest.param(
            lambda: JobWorker("tcp://127.0.0.1:1", print, concurrency=1.5),
            "concurrency",
            id="JobWorker.concurrency",
        ),
        pytest.param(
            lambda: ServiceWorker("tcp://127.0.0.1:1", "s", print, concurrency=1.5),
            "concurrency",
            id="ServiceWorker.concurrency",
        ),
        pytest.param(
            lambda: ServiceClient("tcp://127.0.0.1:1", retries=1.5),
            "retries",
            id="ServiceClient.retries",
        ),
    ]


@pytest.mark.parametrize(("make", "name"), _fractional_counts())
def test_fractional_counts_are_refused_by_the_constructor(make: Any, name: str) -> None:
    """Was a bug. ``hwm=1.5``, ``concurrency=1.5`` or ``retries=1.5`` passed the ``>= 1``
    checks, then ``open``/``serve``/``request`` failed with an unrelated TypeError
    ("expected int", "'float' object cannot be interpreted as an integer"); expected: the
    constructor refuses it, naming the argument."""
    with pytest.raises((TypeError, ValueError), match=name):
        make()


async def test_a_fractional_retries_per_call_is_refused_naming_it() -> None:
    """Was a bug. ``request(..., retries=0.5)`` passed the per-call check and then failed with
    "'float' object cannot be interpreted as an integer"; expected: an error naming retries."""
    client = ServiceClient("tcp://127.0.0.1:1", timeout=0.2)
    try:
        with pytest.raises((TypeError, ValueError), match="retries"):
            await client.request("s", "x", retries=0.5)
    finally:
        await client.close()


# Jobs when workers come and go


async def test_a_worker_stopping_gracefully_loses_the_jobs_queued_for_it_and_only_those() -> None:
    """The documented limit of PUSH/PULL (docs/services.md, "Lost when a worker leaves"): the
    jobs ZeroMQ has queued for a worker (up to ``hwm`` at the producer's link, what the
    connection holds in transit, up to ``concurrency`` at the worker) are lost when it
    disconnects, even when it stops gracefully, though ``push`` returned for each. The loss is
    bounded: a worker that takes no more jobs is dealt only so many before ``push`` refuses,
    and the jobs pushed after it left all reach the workers still connected."""
    queue = JobQueue("tcp://127.0.0.1:*", hwm=2, timeout=0.3)
    queue.open()
    ran: list[int] = []
    release = asyncio.Event()

    async def handle(job: list[Any]) -> None:
        ran.append(job[0])
        if job[0] == 0:
            await release.wait()  # the first worker is busy with its first job till it stops

    filler = "x" * 65536  # large jobs: the connection's buffers hold few of them
    try:
        first = JobWorker(queue.address, handle, concurrency=1)
        async with serving(first):
            await queue.wait_for_workers(1, timeout=1)
            dealt = 0
            with pytest.raises(ServiceUnavailable, match="have 2 jobs waiting"):
                while dealt < 10_000:
                    await queue.push([dealt, filler])
                    dealt += 1
            # The one running, one waiting at the worker, two at the producer, the rest (if
            # any) in transit: all but the first are lost when the worker stops.
            assert ran == [0] and dealt >= 1 + 1 + 2
            first.stop()  # stops taking jobs, then waits for the one running
            release.set()
        assert first.done == 1
        deadline = time.monotonic() + 1
        while queue.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        async with serving(JobWorker(queue.address, handle)):
            await queue.wait_for_workers(1, timeout=1)
            for n in range(dealt, dealt + 20):
                await queue.push([n, ""])
            deadline = time.monotonic() + 1.5
            while len(ran) < 21 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        assert ran == [0, *range(dealt, dealt + 20)]
    finally:
        await queue.close(linger=0)


async def test_a_tcp_probe_does_not_hide_a_connected_worker() -> None:
    """Was a bug. A plain TCP connection (a health-check probe) open when a worker connected
    took the worker's handshake; when the probe closed, ``workers`` fell to 0 and
    ``wait_for_workers(1)`` failed with a worker still connected; expected: ``workers == 1``."""
    queue = JobQueue("tcp://127.0.0.1:*", timeout=1.0)
    queue.open()
    port = int(queue.address.rsplit(":", 1)[1])
    probe = socket.create_connection(("127.0.0.1", port))
    try:
        await asyncio.sleep(0.05)
        async with serving(JobWorker(queue.address, lambda job: None)):
            await queue.wait_for_workers(1, timeout=1)
            probe.close()
            await asyncio.sleep(0.2)
            assert queue.workers == 1
            await queue.wait_for_workers(1, timeout=0.5)
    finally:
        probe.close()
        await queue.close(linger=0)


async def test_workers_are_counted_right_whoever_of_probe_and_worker_leaves_first() -> None:
    """A handshake event does not name its connection, so a worker's success behind an open
    probe is first credited to the probe; each disconnect must put that right: a worker that
    leaves while the probe stays counts as gone, a worker that comes next counts, and the
    probe leaving does not take that worker's place."""
    queue = JobQueue("tcp://127.0.0.1:*", timeout=1.0)
    queue.open()
    port = int(queue.address.rsplit(":", 1)[1])
    probe = socket.create_connection(("127.0.0.1", port))

    async def workers_become(count: int) -> None:
        deadline = time.monotonic() + 1
        while queue.workers != count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # and stay so
        assert queue.workers == count

    try:
        await asyncio.sleep(0.05)
        async with serving(JobWorker(queue.address, lambda job: None)):
            await workers_become(1)
        await workers_become(0)
        async with serving(JobWorker(queue.address, lambda job: None)):
            await workers_become(1)
            probe.close()
            await workers_become(1)
            late_probe = socket.create_connection(("127.0.0.1", port))
            await asyncio.sleep(0.05)
            late_probe.close()
            await workers_become(1)
        await workers_become(0)
    finally:
        probe.close()
        await queue.close(linger=0)


# Service client: the whole call within its timeout


async def test_a_request_with_many_retries_still_ends_within_its_timeout() -> None:
    """Was a bug. The retry loop runs ``retries + 1`` times whatever the clock says: with
    ``retries=10**6`` and a broker that reads (and ignores) the resends, a 0.2 s request spun
    for seconds sending resends; expected: ServiceUnavailable within about the timeout."""
    router = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    router.bind("tcp://127.0.0.1:*")
    address = router.getsockopt_string(zmq.LAST_ENDPOINT)

    async def drain() -> None:
        while True:
            await router.recv_multipart()

    drainer = asyncio.get_running_loop().create_task(drain())
    client = ServiceClient(address, timeout=0.2, retries=10**6)
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable):
            async with asyncio.timeout(1.2):
                await client.request("s", "x")
        assert time.monotonic() - started < 0.8
    finally:
        await client.close()
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
        router.close()


# Payloads


@pytest.mark.parametrize(
    "document",
    [b'"\xed\xa0\x80"', b'{"\xed\xbf\xbf": 1}', b'"\xed\xa0\xbd\xed\xb8\x80"'],
    ids=["lone-high", "lone-low-key", "cesu8-pair"],
)
def test_json_holding_utf8_encoded_surrogates_is_a_payload_error(document: bytes) -> None:
    """Was a bug. UTF-8 never encodes U+D800-U+DFFF, and a ``text`` payload with those bytes
    is a PayloadError, but a ``json`` one was decoded into lone surrogates (ujson accepts
    them); expected: PayloadError, as docs/services.md says for bad UTF-8."""
    with pytest.raises(PayloadError):
        decode([b"text", document])
    with pytest.raises(PayloadError):
        decode([b"json", document])


def test_a_duplicate_key_keeps_the_last_and_a_non_dict_document_is_a_value() -> None:
    """JSON payloads need not be objects; a repeated key keeps its last value (as json does)."""
    assert decode([b"json", b'{"a": 1, "a": 2}']) == {"a": 2}
    assert decode([b"json", b'"just text"']) == "just text"
    assert decode([b"json", b"1" + b"0" * 400]) == 10**400  # a big int is not an infinity


# WebSocket ownership


class RoomMember(WebSocketHandler):
    def open(self) -> None:
        self.join("\ud800 room")

    def on_message(self, message: str | bytes) -> None:
        pass


async def test_a_room_name_utf8_cannot_carry_broadcasts_across_processes_too() -> None:
    """Was a bug. A room name holding a lone surrogate (JSON's "\\ud800" from a client) works in
    one process, but with ``websocket_peers`` the broadcast raised UnicodeEncodeError
    (``fanout`` encodes names as strict UTF-8); expected: it reaches the local member."""
    peers = [f"inproc://hunt-peer-{uuid.uuid4().hex}-{i}" for i in range(2)]
    app = Brubeck(
        handler_tuples=[(r"^/room$", RoomMember)],
        settings={"websocket_peers": peers, "websocket_peer_index": 1},
    )
    async with TestClient(app) as client:
        ws = await client.websocket_connect("/room")  # connection 1: owned by peer 1, here
        assert app.websockets.ownership is not None
        assert app.websockets.broadcast("hello", to="\ud800 room") == 1
        assert await ws.receive_text() == "hello"


def test_websocket_peers_in_no_fixed_order_are_refused() -> None:
    """Was a bug. A set of endpoints passed the check, but its order follows string hashing,
    which differs from process to process: processes disagree on owners and may bind the same
    endpoint; expected: ValueError asking for a list, like for a str."""
    with pytest.raises(ValueError, match="list"):
        Ownership(Any, {"ipc://hunt-a", "ipc://hunt-b", "ipc://hunt-c"}, 0)  # type: ignore[arg-type]


# Supervisor settings


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Backoff(healthy_after=NAN), id="Backoff.healthy_after-nan"),
        pytest.param(
            lambda: Supervisor([sys.executable, "-c", "pass"], 1, shutdown_timeout=NAN),
            id="shutdown_timeout-nan",
        ),
        pytest.param(
            lambda: Supervisor([sys.executable, "-c", "pass"], 1, poll_interval=-1.0),
            id="poll_interval-negative",
        ),
        pytest.param(
            lambda: Supervisor([sys.executable, "-c", "pass"], 1, poll_interval=NAN),
            id="poll_interval-nan",
        ),
    ],
)
def test_supervisor_timings_that_break_it_later_are_refused(make: Any) -> None:
    """Was a bug. ``healthy_after=nan`` never resets a worker's failures (ten crashes in its
    lifetime end the supervisor), ``shutdown_timeout=nan`` never kills a worker that ignores
    SIGTERM, and a negative or NaN ``poll_interval`` makes ``run()`` raise after starting the
    workers; expected: ValueError when constructed."""
    with pytest.raises(ValueError):
        make()
