"""A client of MDP services: many requests in flight on one socket, each matched to its reply.

Rules of this module:
- one DEALER socket per client, drained by a loop callback (``sockets.py``); each request
  waits on a future keyed by a request id, an 8-byte counter sent as an extra envelope frame
  that the broker returns with the reply (see ``mdp.py``). A reply whose id is not waiting (a
  late answer to a request that was answered already, or gave up) is counted in
  ``late_replies`` and dropped;
- a request is resent with the same id when its attempt's share of the timeout runs out. The
  first reply to any attempt is the answer, so a resend never throws away work in progress,
  and the broker ignores a resend while the first copy is queued or held by a live worker;
- after ``timeout`` seconds in all the call raises ``ServiceUnavailable``: it never hangs, and
  it sends nothing once that deadline has passed, however many ``retries`` it was given. A
  send waits for a connected broker (``ZMQ_IMMEDIATE``): nothing is queued for a broker that
  is not there, to reach it after the call gave up. Over ``inproc://``, which ZeroMQ never
  reconnects, a refused send opens a new socket, so a restarted broker is found again;
- a client belongs to the event loop that first used it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from typing import Any

import zmq
import zmq.asyncio

from . import mdp
from .checks import check_count
from .errors import PayloadError, RemoteError, ServiceError, ServiceUnavailable
from .payload import decode, encode, error_message
from .sockets import LoopSocket

log = logging.getLogger("brubeck.services.client")


class ServiceClient:
    """Send requests to services by name, through a Majordomo broker.

    Args:
        address: the broker's endpoint, e.g. ``tcp://127.0.0.1:5555``.
        timeout: default seconds a request may take in all, retries included.
        retries: default resends after the first attempt (an int); each attempt gets an
            equal share of the timeout, and none is sent after the timeout.
        context: the ZeroMQ context (by default the shared asyncio one).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        _check_settings(timeout, retries)
        self.address = address
        self.timeout = timeout
        self.retries = retries
        #: Replies that arrived for no waiting request (answered already, or timed out).
        self.late_replies = 0
        #: Requests sent again after an attempt timed out.
        self.resends = 0
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._wire: LoopSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[bytes, tuple[bytes, asyncio.Future[list[bytes]]]] = {}
        self._ids = itertools.count(1)
        self._closed = False

    async def request(
        self,
        service: str,
        payload: Any,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Any:
        """Send ``payload`` to a worker of ``service``; return its reply, decoded.

        Raises ``ServiceUnavailable`` (a ``TimeoutError``) when no reply came in time, and
        ``RemoteError`` when the worker's handler failed (that is not retried).
        """
        body = await self._call(mdp.service_name(service), encode(payload), timeout, retries)
        message = error_message(body)
        if message is not None:
            raise RemoteError(f"service {service!r} failed: {message}")
        try:
            return decode(body)
        except PayloadError as exc:
            raise PayloadError(
                f"service {service!r} sent a reply that is not a payload: {exc}"
            ) from None

    async def service_exists(self, service: str, *, timeout: float | None = None) -> bool:
        """Whether the broker has a worker for ``service`` now (MDP's ``mmi.service``)."""
        body = await self._call(b"mmi.service", [mdp.service_name(service)], timeout, None)
        if body[:1] == [b"200"]:
            return True
        if body[:1] == [b"404"]:
            return False
        raise ServiceError(f"the broker at {self.address} answered mmi.service with {body!r}")

    async def close(self) -> None:
        """Close the socket; requests still waiting raise ``ServiceUnavailable``."""
        self._closed = True
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(ServiceUnavailable("the ServiceClient was closed"))
        self._close_socket()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # Internals

    def _open(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._socket is not None:
            if loop is not self._loop:
                raise RuntimeError("a ServiceClient is used by the event loop that opened it")
            return loop
        if self._closed:
            raise ServiceError("this ServiceClient is closed")
        ctx = self._context or zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        # Queue nothing while no broker is connected: a call's attempts must not outlive it.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(self.address)
        self._socket, self._loop = sock, loop
        self._wire = LoopSocket(sock, self._on_reply)
        return loop

    def _close_socket(self) -> None:
        if self._socket is not None:
            assert self._wire is not None
            self._wire.detach()
            self._socket.close(linger=0)
            self._socket = self._wire = None

    async def _call(
        self, service: bytes, body: list[bytes], timeout: float | None, retries: int | None
    ) -> list[bytes]:
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        _check_settings(timeout, retries)
        loop = self._open()
        attempts = 1 + retries
        request_id = next(self._ids).to_bytes(8, "big")
        frames = mdp.client_request(service, body, request_id)
        future: asyncio.Future[list[bytes]] = loop.create_future()
        self._pending[request_id] = (service, future)
        start = loop.time()
        deadline = start + timeout
        sent = 0
        try:
            for attempt in range(attempts):
                if attempt:
                    # The loop may be late: an attempt's share can end before it is sent
                    # (with many retries, a share is shorter than a turn of the loop).
                    if loop.time() >= deadline:
                        break
                    self.resends += 1
                if not await self._send(frames, deadline):
                    break
                sent += 1
                attempt_ends = start + timeout * (attempt + 1) / attempts
                await asyncio.wait({future}, timeout=max(0.0, attempt_ends - loop.time()))
                if future.done():
                    return future.result()
        finally:
            del self._pending[request_id]
            if future.done() and not future.cancelled():
                future.exception()  # close() may have failed it while _send raised: retrieved
        raise ServiceUnavailable(
            f"service {service.decode()!r} did not answer within {timeout:g}s "
            f"({sent} attempt{'s' if sent != 1 else ''} through the broker at "
            f"{self.address}): no worker for it is running, the broker is down, or the work "
            f"takes longer than the timeout"
        )

    async def _send(self, frames: list[bytes], deadline: float) -> bool:
        """Send now if a broker is connected and has room, else retry until ``deadline``;
        False if never."""
        loop = asyncio.get_running_loop()
        while True:
            if self._wire is None:
                raise ServiceUnavailable("the ServiceClient was closed")
            if self._wire.send(frames):
                return True
            if self.address.startswith("inproc://"):
                # ZeroMQ never reconnects inproc: a new socket finds a broker bound since.
                self._close_socket()
                self._open()
            # No broker connected (yet, or any more), or 100,000 requests queued for one.
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(0.01, max(0.0, deadline - loop.time())))

    def _on_reply(self, frames: list[bytes]) -> None:
        try:
            reply = mdp.parse_client_reply(frames)
        except mdp.MDPError as exc:
            log.warning("dropped a malformed reply from the broker: %s", exc)
            return
        entry = self._pending.get(reply.request_id) if reply.request_id else None
        if entry is None or entry[1].done() or entry[0] != reply.service:
            self.late_replies += 1
        else:
            entry[1].set_result(reply.body)


def _check_settings(timeout: float, retries: int) -> None:
    """Refuse a timeout or retries that would make a call give up at once, wait forever, try
    zero times or fail later in ``range``; the same rules for the constructor's defaults and
    one call's values."""
    if not (0 < timeout < math.inf and retries >= 0):  # NaN fails every comparison
        raise ValueError(
            f"need timeout > 0 and retries >= 0, got {timeout}, {retries}: the timeout is a "
            f"finite number of seconds, the retries a count of resends"
        )
    check_count("retries", retries, 0)  # 1.5 and True pass the comparison above
