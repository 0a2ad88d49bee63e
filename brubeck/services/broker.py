"""A Majordomo (MDP/0.1) broker: each request goes to an idle worker of the service it names.

Rules of this module:
- one ROUTER socket serves clients and workers, drained by a loop callback (``sockets.py``);
  handling a message never awaits: routing is a few dict and deque operations;
- a worker holds at most one request. The broker remembers which, and the opaque token it gave
  the worker as the client address; a reply is routed by that memory, never by what the worker
  echoes, and a reply whose token does not match is dropped: no reply reaches the wrong client;
- a worker is dead when nothing came from it for ``liveness`` heartbeats; its request goes back
  to the front of its queue, at most ``max_redeliveries`` times;
- a retry of a request that is still queued or still held by a live worker (same envelope:
  client identity and request id) is ignored, so a client's retries never run a request twice
  while its first copy is alive; a retry of a queued copy restarts its wait for a worker, as a
  new copy would. A request dropped after ``max_redeliveries`` (it kills workers) is
  remembered for ``queue_timeout``, and its retries are ignored too;
- a request waiting longer than ``queue_timeout`` for a worker is dropped: its client has given
  up by then;
- sends never block and never vanish silently: ROUTER_MANDATORY turns a gone or full peer into
  an error, handled here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from ..loops import run_until_signal
from . import mdp
from .sockets import LoopSocket, bind_or_connect

log = logging.getLogger("brubeck.services.broker")


@dataclass(eq=False, slots=True)
class _Request:
    envelope: tuple[bytes, ...]
    service: bytes
    body: list[bytes]
    queued_at: float
    deliveries: int = 0


@dataclass(eq=False, slots=True)
class _Service:
    name: bytes
    requests: deque[_Request] = field(default_factory=deque)
    #: Idle workers by identity; insertion order makes the first the least recently used.
    idle: dict[bytes, _Worker] = field(default_factory=dict)
    workers: int = 0


@dataclass(eq=False, slots=True)
class _Worker:
    identity: bytes
    service: _Service
    expires: float
    sent_at: float
    request: _Request | None = None
    token: bytes = b""


class Broker:
    """Routes MDP/0.1 requests from clients to workers, by service name.

    Args:
        address: the endpoint to bind, e.g. ``tcp://127.0.0.1:5555`` (``tcp://127.0.0.1:*``
            picks a free port; read ``address`` after ``start()``).
        heartbeat: seconds between heartbeats to each worker; workers should use the same.
        liveness: heartbeats a worker may miss before it is taken for dead.
        queue_timeout: seconds a request may wait for a worker before it is dropped.
        max_queue: most requests waiting per service; beyond it new ones are dropped.
        max_redeliveries: how many times a request whose worker died is given to another.
        context: the ZeroMQ context (by default the shared asyncio one).
    """

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5555",
        *,
        heartbeat: float = 1.0,
        liveness: int = 3,
        queue_timeout: float = 30.0,
        max_queue: int = 10_000,
        max_redeliveries: int = 2,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if not (0 < heartbeat < math.inf and liveness >= 1):  # NaN fails every comparison
            raise ValueError(
                f"need heartbeat > 0 and liveness >= 1, got {heartbeat}, {liveness}: the "
                f"heartbeat is a finite number of seconds"
            )
        if not queue_timeout >= 0:
            raise ValueError(f"need queue_timeout >= 0 (seconds), got {queue_timeout}")
        self.address = address
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.queue_timeout = queue_timeout
        self.max_queue = max_queue
        self.max_redeliveries = max_redeliveries
        self.max_batch = 1024
        #: Requests ignored because the same request was already queued or held by a worker,
        #: or was dropped after ``max_redeliveries`` less than ``queue_timeout`` ago.
        self.duplicates = 0
        #: Requests dropped unanswered: expired in the queue, over ``max_queue``, or after
        #: ``max_redeliveries``.
        self.dropped = 0
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._wire: LoopSocket | None = None
        self._task: asyncio.Task[None] | None = None
        self._services: dict[bytes, _Service] = {}
        self._workers: dict[bytes, _Worker] = {}
        self._pending: dict[tuple[bytes, ...], _Request] = {}
        #: Envelopes of requests dropped after ``max_redeliveries``, oldest first: until when
        #: their retries are ignored.
        self._poisoned: dict[tuple[bytes, ...], float] = {}
        self._tokens = itertools.count(1)
        self._loop_time = time.monotonic

    # Life cycle

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Bind and start routing; returns at once (use it as an app's ``on_startup`` hook)."""
        if self._task is not None:
            return
        ctx = self._context or zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.LINGER, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while True:
            try:
                self.address = bind_or_connect(sock, self.address, bind=True, owner="the broker")
                break
            except OSError as exc:
                # A broker stopped a moment ago frees its port in ZeroMQ's I/O thread, soon.
                if exc.errno == zmq.EADDRINUSE and loop.time() < deadline:
                    await asyncio.sleep(0.02)
                    continue
                sock.close()
                raise
        self._socket = sock
        self._loop_time = loop.time
        self._wire = LoopSocket(sock, self._on_message, self.max_batch)
        self._task = loop.create_task(self._run(), name="mdp-broker")
        beat = (self.heartbeat, self.liveness)
        log.info("MDP broker on %s (heartbeat %gs, liveness %d)", self.address, *beat)

    async def stop(self) -> None:
        """Tell every worker to reconnect (DISCONNECT), then close; queued requests are lost."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # serve() raises it; stop() must still close, or the port stays bound
            log.exception("the broker's routing loop failed")
        for identity in self._workers:
            self._send(mdp.to_worker(identity, mdp.DISCONNECT))
        self._workers.clear()
        self._services.clear()
        self._pending.clear()
        self._poisoned.clear()
        assert self._socket is not None and self._wire is not None
        self._wire.detach()
        self._socket.close(linger=200)  # long enough for the DISCONNECTs to leave
        self._socket = self._wire = None

    async def serve(self) -> None:
        """Start, then route until ``stop()`` (or until this coroutine is cancelled)."""
        await self.start()
        task = self._task
        assert task is not None
        try:
            await asyncio.wait({task})
        finally:
            await self.stop()
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    def run(self) -> None:
        """Route in a new event loop until SIGINT or SIGTERM."""

        def stop() -> None:
            if self._task is not None:
                self._task.cancel()  # serve() then closes

        run_until_signal(self.serve, stop)

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    # What the broker knows

    def worker_count(self, service: str | bytes | None = None) -> int:
        """Workers registered, for one service or for all."""
        if service is None:
            return len(self._workers)
        found = self._services.get(mdp.service_name(service))
        return found.workers if found is not None else 0

    def queue_length(self, service: str | bytes) -> int:
        """Requests waiting for a worker of ``service``."""
        found = self._services.get(mdp.service_name(service))
        return len(found.requests) if found is not None else 0

    # The loop

    async def _run(self) -> None:
        """The heartbeat; messages are handled by the socket's callback meanwhile."""
        assert self._wire is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat)
            # Expire workers only with nothing left unread: a heartbeat may be waiting.
            self._tick(loop.time(), expire=not self._wire.backlog)

    def _on_message(self, frames: list[bytes]) -> None:
        self._handle(frames, self._loop_time())

    def _send(self, frames: list[bytes]) -> bool:
        """Send without blocking; False when the peer is gone or its queue is full."""
        assert self._wire is not None
        return self._wire.send(frames)

    def _handle(self, frames: list[bytes], now: float) -> None:
        try:
            message = mdp.parse_at_broker(frames)
        except mdp.MDPError as exc:
            worker = self._workers.get(frames[0])
            log.warning("dropped a malformed message from %s: %s", frames[0].hex(), exc)
            if worker is not None:
                self._reject(worker, now, "sent a malformed message")
            return
        if isinstance(message, mdp.ClientRequest):
            self._on_request(message, now)
        else:
            self._on_worker(message, now)

    # Clients

    def _on_request(self, message: mdp.ClientRequest, now: float) -> None:
        if message.service.startswith(b"mmi."):
            answer = self._mmi(message)
            self._send(mdp.to_client(message.envelope, message.service, [answer]))
            return
        key = message.envelope if len(message.envelope) > 1 else None
        if key is not None and (key in self._pending or key in self._poisoned):
            self.duplicates += 1
            if (pending := self._pending.get(key)) is not None:
                # Queued, it waits anew; held, it gets a new time if it is queued again.
                pending.queued_at = now
            return
        service = self._service(message.service)
        if len(service.requests) >= self.max_queue:
            self.dropped += 1
            log.warning(
                "dropped a request to %r: %d already wait for a worker",
                _shown(message.service),
                len(service.requests),
            )
            return
        request = _Request(message.envelope, message.service, message.body, now)
        if key is not None:
            self._pending[key] = request
        service.requests.append(request)
        self._dispatch(service, now)

    def _mmi(self, message: mdp.ClientRequest) -> bytes:
        """The Majordomo management interface: ``mmi.service`` answers 200 or 404."""
        if message.service == b"mmi.service":
            found = self._services.get(message.body[0])
            return b"200" if found is not None and found.workers else b"404"
        return b"501"

    def _forget(self, request: _Request) -> None:
        if len(request.envelope) > 1 and self._pending.get(request.envelope) is request:
            del self._pending[request.envelope]

    def _service(self, name: bytes) -> _Service:
        service = self._services.get(name)
        if service is None:
            service = self._services[name] = _Service(name)
        return service

    def _dispatch(self, service: _Service, now: float) -> None:
        """Give queued requests to idle workers, least recently used first."""
        requests, idle = service.requests, service.idle
        while requests and idle:
            request = requests.popleft()
            if now - request.queued_at > self.queue_timeout:
                self._drop(request, "waited too long for a worker")
                continue
            identity = next(iter(idle))
            worker = idle.pop(identity)
            token = next(self._tokens).to_bytes(8, "big")
            if self._send(mdp.request_to_worker(identity, token, request.body)):
                worker.request, worker.token, worker.sent_at = request, token, now
                request.deliveries += 1
            else:
                requests.appendleft(request)
                self._unregister(worker, now, "could not be sent a request")

    def _drop(self, request: _Request, why: str) -> None:
        self.dropped += 1
        self._forget(request)
        log.warning("dropped a request to %r: it %s", _shown(request.service), why)

    # Workers

    def _on_worker(self, message: mdp.WorkerCommand, now: float) -> None:
        identity, command = message.identity, message.command
        worker = self._workers.get(identity)
        if command == mdp.READY:
            if worker is not None:
                self._reject(worker, now, "sent READY twice")
            elif (why := _unservable(message.service)) is not None:
                log.warning("refused a worker for %r: %s", _shown(message.service), why)
                self._send(mdp.to_worker(identity, mdp.DISCONNECT))
            else:
                self._register(identity, message.service, now)
            return
        if worker is None:
            # Not registered: a worker of a previous broker, or one already declared dead.
            if command != mdp.DISCONNECT:
                self._send(mdp.to_worker(identity, mdp.DISCONNECT))
            return
        worker.expires = now + self.heartbeat * self.liveness
        if command == mdp.REPLY:
            request = worker.request
            if request is None or message.address != worker.token:
                self._reject(worker, now, "replied to a request it does not hold")
                return
            worker.request, worker.token = None, b""
            self._forget(request)
            self._send(mdp.to_client(request.envelope, request.service, message.body))
            service = worker.service
            service.idle[identity] = worker
            self._dispatch(service, now)
        elif command == mdp.DISCONNECT:
            self._unregister(worker, now, "disconnected")
            self._dispatch(worker.service, now)

    def _register(self, identity: bytes, name: bytes, now: float) -> None:
        service = self._service(name)
        worker = _Worker(identity, service, now + self.heartbeat * self.liveness, now)
        self._workers[identity] = worker
        service.workers += 1
        service.idle[identity] = worker
        log.info("worker %s ready for %r", identity.hex(), _shown(name))
        self._dispatch(service, now)

    def _unregister(self, worker: _Worker, now: float, why: str) -> None:
        """Forget a worker; the request it held goes back to the front of its queue."""
        del self._workers[worker.identity]
        service = worker.service
        service.idle.pop(worker.identity, None)
        service.workers -= 1
        log.info("worker %s of %r %s", worker.identity.hex(), _shown(service.name), why)
        request, worker.request = worker.request, None
        if request is None:
            return
        if request.deliveries > self.max_redeliveries:
            self._drop(request, f"was given to {request.deliveries} workers that all died")
            if len(request.envelope) > 1:
                self._poisoned[request.envelope] = now + self.queue_timeout
        else:
            request.queued_at = now
            service.requests.appendleft(request)

    def _reject(self, worker: _Worker, now: float, why: str) -> None:
        """A worker broke the protocol: tell it to reconnect, and forget it."""
        log.warning("worker %s %s: disconnecting it", worker.identity.hex(), why)
        self._send(mdp.to_worker(worker.identity, mdp.DISCONNECT))
        self._unregister(worker, now, "was disconnected")
        self._dispatch(worker.service, now)

    def _tick(self, now: float, expire: bool = True) -> None:
        """Once a heartbeat: expire silent workers and old requests, heartbeat idle links."""
        while self._poisoned and next(iter(self._poisoned.values())) <= now:
            del self._poisoned[next(iter(self._poisoned))]
        for worker in list(self._workers.values()):
            if expire and worker.expires <= now:
                self._unregister(worker, now, "went silent (no heartbeat): taken for dead")
            elif now - worker.sent_at >= self.heartbeat:
                if self._send(mdp.to_worker(worker.identity, mdp.HEARTBEAT)):
                    worker.sent_at = now
                else:
                    self._unregister(worker, now, "cannot be reached")
        for name, service in list(self._services.items()):
            if service.requests:
                limit = now - self.queue_timeout
                if any(r.queued_at < limit for r in service.requests):
                    kept: deque[_Request] = deque()
                    for request in service.requests:
                        if request.queued_at < limit:
                            self._drop(request, f"waited over {self.queue_timeout}s for a worker")
                        else:
                            kept.append(request)
                    service.requests = kept
                self._dispatch(service, now)
            if not service.workers and not service.requests:
                del self._services[name]


def _unservable(name: bytes) -> str | None:
    """Why no worker may register for ``name``, or ``None``: a name no client can ask for
    (it would be registered, and counted, for nothing), or ``mmi.*``, which the broker answers."""
    try:
        mdp.worker_service_name(name)
    except ValueError as exc:
        return str(exc)
    return None


def _shown(name: bytes) -> str:
    """A service name for a log line; a foreign peer may send one that is not UTF-8."""
    return name.decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m brubeck.services.broker",
        description="A Majordomo (MDP/0.1) broker for Brubeck services and workers in any "
        "language.",
    )
    parser.add_argument("address", nargs="?", default="tcp://127.0.0.1:5555")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds (default 1.0)")
    parser.add_argument("--liveness", type=int, default=3, help="heartbeats missed (default 3)")
    parser.add_argument(
        "--queue-timeout", type=float, default=30.0, help="seconds a request may wait (30)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each worker event")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    broker = Broker(
        args.address,
        heartbeat=args.heartbeat,
        liveness=args.liveness,
        queue_timeout=args.queue_timeout,
    )
    with contextlib.suppress(KeyboardInterrupt):
        broker.run()


if __name__ == "__main__":
    main()
