"""The two ZeroMQ sockets that join a handler process to Mongrel2.

Rules of this module:
- it knows the wire format (through ``protocol``) but not HTTP;
- receiving drains every ready message per wakeup, from a plain callback on the socket's
  descriptor: no future per message (which makes a naive asyncio handler half as fast as a
  blocking one) and none per wakeup either;
- sending never blocks and never drops: the publishing socket is an XPUB with ``XPUB_NODROP``,
  so a full queue raises instead of discarding, and the reply waits in an ordered backlog
  until the socket is writable again. Replies also wait until Mongrel2 has subscribed, since a
  publisher drops whatever it sends before that (the "slow joiner").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import zmq
import zmq.asyncio

from .protocol import format_close, format_ctl, format_deliver, format_reply

log = logging.getLogger("brubeck.connection")

# pyzmq's Python-level Socket.send adds ~0.5 µs of checks we never need for bytes frames.
_raw_send = zmq.Socket.__mro__[1].send
_raw_recv = zmq.Socket.__mro__[1].recv


class Mongrel2Connection:
    """A PULL socket for Mongrel2's requests and a publisher for the replies.

    Args:
        pull_addr: Mongrel2's ``send_spec`` (it binds a PUSH there; we connect).
        pub_addr: Mongrel2's ``recv_spec`` (it binds a SUB there; we connect).
        sender_id: the first token of replies that answer no request (``deliver`` to ids);
            by default the sender of the first request received, which suits any ``recv_ident``.
        max_batch: most messages handled per wakeup before other tasks get to run.
        backlog_limit: most replies held while the socket is full or not yet subscribed;
            past it a send raises ``BufferError`` rather than grow without bound.
    """

    def __init__(
        self,
        pull_addr: str,
        pub_addr: str,
        sender_id: str | bytes | None = None,
        *,
        max_batch: int = 512,
        backlog_limit: int = 100_000,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.pull_addr = pull_addr
        self.pub_addr = pub_addr
        if isinstance(sender_id, str):
            sender_id = sender_id.encode()
        self.sender_id: bytes | None = sender_id
        self.max_batch = max_batch
        self.backlog_limit = backlog_limit
        self._context = context
        self._pull: zmq.asyncio.Socket | None = None
        self._pull_sync: zmq.Socket | None = None
        self._pub: zmq.asyncio.Socket | None = None
        self._pub_sync: zmq.Socket | None = None
        self._subscribed: asyncio.Event | None = None  # created in open(), inside the loop
        self._live = False  # Mongrel2 has subscribed: replies may go straight out
        self._backlog: deque[bytes] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._on_message: Callable[[bytes], None] | None = None
        self._fd = -1
        self._paused = True

    # Life cycle

    @property
    def is_open(self) -> bool:
        return self._pull is not None

    def open(self) -> None:
        """Create and connect the sockets; called by the app inside its event loop."""
        if self._pull is not None:
            return
        ctx = self._context or zmq.asyncio.Context.instance()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.connect(self.pull_addr)
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 2000)
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.connect(self.pub_addr)
        self._pull, self._pub = pull, pub
        # Plain sockets over the same handles: a non-blocking recv/send with no future.
        self._pull_sync = zmq.Socket.shadow(pull.underlying)
        self._pub_sync = zmq.Socket.shadow(pub.underlying)
        self._subscribed = asyncio.Event()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_subscriptions())

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Send what is still queued (bounded by ``flush_timeout``), then close both sockets."""
        if self._pull is None:
            return
        if self._backlog:
            self._ensure_flusher()
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), flush_timeout)  # type: ignore[arg-type]
            except (TimeoutError, asyncio.CancelledError):
                log.warning("closing with %d replies unsent to Mongrel2", len(self._backlog))
        for task in (self._flusher, self._watcher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        assert self._pub is not None
        self.pause_reading()
        self._on_message = None
        self._pull.close(linger=0)
        self._pub.close()
        self._pull = self._pub = None
        self._live = False
        self._pull_sync = self._pub_sync = None

    async def _watch_subscriptions(self) -> None:
        assert self._pub is not None and self._subscribed is not None
        while True:
            event = await self._pub.recv()
            if event[:1] == b"\x01":
                self._subscribed.set()
                self._live = True
                if self._backlog:
                    self._ensure_flusher()

    # Receiving

    def start_reading(self, on_message: Callable[[bytes], None]) -> None:
        """Call ``on_message(raw)`` for every message from Mongrel2, from the event loop.

        The PULL socket's descriptor wakes a plain callback that reads everything waiting (up
        to ``max_batch``, then it lets other callbacks run and goes on): no future, no task,
        no coroutine per wakeup. Under load a wakeup brings only a few messages, so what each
        wakeup costs matters as much as what each message costs. An exception from
        ``on_message`` is logged and reading goes on.
        """
        self.open()
        assert self._pull is not None
        self._on_message = on_message
        self._fd = self._pull.getsockopt(zmq.FD)
        self._paused = True
        self.resume_reading()

    def pause_reading(self) -> None:
        """Read nothing more until ``resume_reading``; new messages wait in ZeroMQ's queue."""
        if not self._paused:
            self._paused = True
            asyncio.get_running_loop().remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._paused and self._on_message is not None and self._pull is not None:
            self._paused = False
            loop = asyncio.get_running_loop()
            loop.add_reader(self._fd, self._read)
            # ZeroMQ signals arrivals on an edge: messages that came while paused may already
            # have consumed theirs, so look now rather than wait for the next one.
            loop.call_soon(self._read)

    def _read(self) -> None:
        sync, handle, again, nowait = self._pull_sync, self._on_message, zmq.Again, zmq.NOBLOCK
        for _ in range(self.max_batch):
            if self._paused:
                return
            try:
                raw = _raw_recv(sync, nowait)
            except again:
                return
            try:
                handle(raw)  # type: ignore[misc]
            except Exception:
                log.exception("dropped a message: handling it failed")
        if not self._paused:
            asyncio.get_running_loop().call_soon(self._read)  # more may wait: others go first

    def stop_receiving(self) -> list[bytes]:
        """Take every message ZeroMQ already queued for this process, then leave Mongrel2.

        For a graceful stop. Disconnecting drops what the PULL socket still holds (libzmq
        discards a closed pipe's unread messages), so the queue is read first, with no await
        before the disconnect. Mongrel2 then sends new requests to the other handlers. Lost
        are only the messages still on their way at that instant, and those Mongrel2 sends
        before it notices the disconnect: ZeroMQ drops both, and neither side can tell.
        """
        pull, sync = self._pull, self._pull_sync
        if pull is None or sync is None:
            return []
        self.pause_reading()
        self._on_message = None
        taken: list[bytes] = []
        with contextlib.suppress(zmq.Again):
            while True:
                taken.append(_raw_recv(sync, zmq.NOBLOCK))
        with contextlib.suppress(zmq.ZMQError):
            pull.disconnect(self.pull_addr)
        log.debug("left %s with %d queued messages taken", self.pull_addr, len(taken))
        return taken

    # Sending

    def send_raw(self, data: bytes) -> None:
        """Publish one already-formatted reply, in order, never dropping it."""
        if self._backlog or not self._live:
            self._enqueue(data)
            return
        try:
            _raw_send(self._pub_sync, data, zmq.NOBLOCK)
        except zmq.Again:
            self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        if self._pub is None:
            raise RuntimeError("the Mongrel2 connection is closed (or not yet open)")
        if len(self._backlog) >= self.backlog_limit:
            raise BufferError(
                f"{len(self._backlog)} replies are waiting for Mongrel2 to read them; "
                f"is it running and connected to {self.pub_addr}?"
            )
        self._backlog.append(data)
        if self._subscribed is not None and self._subscribed.is_set():
            self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_backlog())

    async def _flush_backlog(self) -> None:
        pub, sync, backlog = self._pub, self._pub_sync, self._backlog
        assert pub is not None and sync is not None and self._subscribed is not None
        await self._subscribed.wait()
        while backlog:
            try:
                sync.send(backlog[0], zmq.NOBLOCK)
                backlog.popleft()
            except zmq.Again:
                await pub.poll(flags=zmq.POLLOUT)

    @property
    def pending(self) -> int:
        """Replies not yet handed to ZeroMQ."""
        return len(self._backlog)

    def _sender(self, sender: bytes | str | None) -> bytes:
        if sender is None:
            sender = self.sender_id
        if sender is None:
            raise ValueError(
                "no sender id known yet: pass sender=, or give Mongrel2Connection(sender_id=...)"
            )
        return sender.encode() if isinstance(sender, str) else sender

    def send(self, sender: bytes | str | None, conn_id: bytes | int, data: bytes) -> None:
        """Send bytes to one connection (an empty ``data`` closes it)."""
        cid = conn_id if isinstance(conn_id, bytes) else b"%d" % conn_id
        self.send_raw(format_reply(self._sender(sender), cid, data))

    def reply(self, request: Any, data: bytes) -> None:
        """Send bytes to the connection a request came from."""
        self.send_raw(format_reply(request.sender, request.conn_id, data))

    def deliver(
        self, sender: bytes | str | None, conn_ids: Iterable[bytes | int], data: bytes
    ) -> None:
        """Send the same bytes to many connections, 128 ids per ZeroMQ message."""
        for message in format_deliver(self._sender(sender), conn_ids, data):
            self.send_raw(message)

    def close_connection(self, request: Any) -> None:
        """Ask Mongrel2 to flush and close the connection a request came from."""
        self.send_raw(format_reply(request.sender, request.conn_id, b""))

    def close_connections(
        self, sender: bytes | str | None, conn_ids: Iterable[bytes | int]
    ) -> None:
        for message in format_close(self._sender(sender), conn_ids):
            self.send_raw(message)

    def ctl(self, sender: bytes | str | None, conn_id: bytes | int, **ctl: Any) -> None:
        """A Mongrel2 control message: ``keep_alive=True``, ``cancel=True``, ``credits=N``."""
        cid = conn_id if isinstance(conn_id, bytes) else b"%d" % conn_id
        self.send_raw(format_ctl(self._sender(sender), cid, **ctl))

    def new_sender_id(self) -> bytes:
        """A random sender id, for replies sent before any request arrived."""
        self.sender_id = str(uuid.uuid4()).encode()
        return self.sender_id

    def __repr__(self) -> str:
        return f"Mongrel2Connection({self.pull_addr!r}, {self.pub_addr!r})"
