"""The two ZeroMQ sockets that join a handler process to Mongrel2.

Rules of this module:
- it knows the wire format (through ``protocol``) but not HTTP;
- receiving drains every ready message per wakeup, from a plain callback on the socket's
  descriptor: no future per message (which makes a naive asyncio handler half as fast as a
  blocking one) and none per wakeup either;
- sending never blocks and never drops: the publishing socket is an XPUB with ``XPUB_NODROP``,
  so a full queue raises instead of discarding, and the reply waits in an ordered backlog
  until the socket is writable again. Replies also wait until Mongrel2 has subscribed, since a
  publisher drops whatever it sends before that (the "slow joiner");
- a Mongrel2 that goes away (stopped, killed, restarted) ends an *epoch*: a new Mongrel2
  numbers its connections from 1 again under the same sender id, so nothing of the old one may
  reach it. ZeroMQ reconnects by itself and says nothing in band, so the sockets are watched
  with monitors: the first ``EVENT_DISCONNECTED`` of either socket bumps ``epoch``, requests
  still queued from the old Mongrel2 are discarded, and so are replies not yet written to it
  (the publisher sets ``ZMQ_IMMEDIATE``, so ZeroMQ drops its queue for a lost peer instead of
  handing it to the next one). The PULL socket reports its disconnect after everything the
  old Mongrel2 sent, and ZeroMQ waits at least its reconnect interval (0.1 s) before it lets a
  new Mongrel2 send anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import copy_context
from typing import Any, cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from .protocol import (
    checked_conn_id,
    format_close,
    format_ctl,
    format_deliver,
    format_reply,
)

log = logging.getLogger("brubeck.connection")

_PULL, _PUB = 0, 1
_MONITORED = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED

# pyzmq's Python-level Socket.send adds ~0.5 µs of checks we never need for bytes frames.
_backend: Any = zmq.Socket.__mro__[1]
_raw_send = _backend.send
_raw_recv = _backend.recv


class Mongrel2Connection:
    """A PULL socket for Mongrel2's requests and a publisher for the replies.

    Args:
        pull_addr: Mongrel2's ``send_spec`` (it binds a PUSH there; we connect).
        pub_addr: Mongrel2's ``recv_spec`` (it binds a SUB there; we connect).
        sender_id: the first token of replies that answer no request (``deliver`` to ids);
            by default the sender of the first request received, which suits any ``recv_ident``.
        max_batch: most messages handled per wakeup before other tasks get to run.
        reply_batch: most messages handled before the replies they made are sent: a reply
            waits for at most this many others, and the more go together, the less each
            costs Mongrel2, ZeroMQ and the kernel (32 more than halved it).
        backlog_limit: most replies held while the socket is full or not yet subscribed, or
            made outside the receive loop in one turn of the event loop; past it a send raises
            ``BufferError`` rather than grow without bound.

    ``epoch`` counts the times Mongrel2 went away; ``on_lost(queued, unsent)``, when set, is
    called at once each time, with how many of its requests and replies were discarded.
    """

    def __init__(
        self,
        pull_addr: str,
        pub_addr: str,
        sender_id: str | bytes | None = None,
        *,
        max_batch: int = 512,
        reply_batch: int = 32,
        backlog_limit: int = 100_000,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        for name, addr in (("pull_addr", pull_addr), ("pub_addr", pub_addr)):
            if not isinstance(addr, str) or "://" not in addr:  # else a ZMQError at serve()
                raise ValueError(
                    f"{name} must be a ZeroMQ endpoint like 'tcp://127.0.0.1:9999', got {addr!r}"
                )
        self.pull_addr = pull_addr
        self.pub_addr = pub_addr
        if sender_id is not None:
            sender_id = _checked_sender(sender_id)
        self.sender_id: bytes | None = sender_id
        #: Given, not learned from Mongrel2's first request: kept when Mongrel2 restarts.
        self._sender_given = sender_id is not None
        self.max_batch = max_batch
        if max_batch < 1 or reply_batch < 1:  # 0 would read nothing, forever
            raise ValueError(
                f"max_batch and reply_batch must be at least 1, got {max_batch}, {reply_batch}"
            )
        self.reply_batch = reply_batch
        self._held: list[bytes] | None = None  # replies of the messages being handled now
        self._turn: list[bytes] | None = None  # replies made elsewhere in this loop turn
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
        #: How many times Mongrel2 went away since ``open()``; see the module's rules.
        self.epoch = 0
        self.on_lost: Callable[[int, int], None] | None = None
        self._monitors: list[tuple[zmq.asyncio.Socket, zmq.Socket[Any], int]] = []
        self._handshaken = [False, False]  # per socket: talked to Mongrel2 since the last loss
        self._pull_stale = False  # lost Mongrel2, but the PULL socket has not noticed yet

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
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 2000)
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        # A lost peer's queue is dropped, not sent to whichever Mongrel2 connects next; the
        # loss and the new subscription then show in band, as an unsubscribe and a subscribe.
        pub.setsockopt(zmq.IMMEDIATE, 1)
        loop = asyncio.get_running_loop()
        self._handshaken = [False, False]
        self._pull_stale = False
        for sock in (pull, pub):  # before connecting, so that no event is missed
            monitor = sock.get_monitor_socket(_MONITORED)
            sync: zmq.Socket[Any] = zmq.Socket.shadow(monitor.underlying)
            fd = int(monitor.getsockopt(zmq.FD))
            self._monitors.append((monitor, sync, fd))
            loop.add_reader(fd, self._check_monitors)
        pull.connect(self.pull_addr)
        pub.connect(self.pub_addr)
        self._pull, self._pub = pull, pub
        # Plain sockets over the same handles: a non-blocking recv/send with no future.
        self._pull_sync = zmq.Socket.shadow(pull.underlying)
        self._pub_sync = zmq.Socket.shadow(pub.underlying)
        self._subscribed = asyncio.Event()
        self._watcher = loop.create_task(self._watch_subscriptions())
        loop.call_soon(self._check_monitors)  # their descriptors only signal edges

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Send what is still queued (bounded by ``flush_timeout``), then close both sockets."""
        if self._pull is None:
            return
        self._send_turn()  # replies made in this turn go first, or wait in the backlog
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
        self._close_monitors()
        self._pull.close(linger=0)
        self._pub.close()
        self._pull = self._pub = None
        self._live = False
        self._pull_sync = self._pub_sync = None

    async def _watch_subscriptions(self) -> None:
        assert self._pub is not None
        while True:
            self._on_subscription(await self._pub.recv())

    def _on_subscription(self, event: bytes) -> None:
        assert self._subscribed is not None
        if event[:1] == b"\x01":
            self._subscribed.set()
            self._live = True
            if self._backlog:
                self._ensure_flusher()
        elif event[:1] == b"\x00":  # Mongrel2 is gone: hold replies for the next one
            self._live = False
            self._subscribed.clear()

    def _read_subscriptions(self) -> None:
        """Handle (un)subscriptions waiting on the publisher, after sends through its plain
        twin: ZeroMQ signals arrivals on an edge, which such a send can consume, and then
        the watcher above would never wake for them (a Mongrel2 that left would still seem
        to be there, and replies meant for the next one would be published to nobody)."""
        sync = self._pub_sync
        if sync is None:
            return
        while sync.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # type: ignore[operator, arg-type]
            try:
                event = sync.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_subscription(event)

    # Mongrel2 going away

    def _close_monitors(self) -> None:
        for sock in (self._pull, self._pub):
            if sock is not None:
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
        loop = asyncio.get_running_loop()
        for monitor, _, fd in self._monitors:
            loop.remove_reader(fd)
            monitor.close(linger=0)
        self._monitors = []

    def _check_monitors(self) -> None:
        """Read what both monitors report, then act on it (both at once: see ``_on_events``)."""
        events: list[tuple[int, int]] = []
        for kind, (_, sync, _) in enumerate(self._monitors):
            while True:
                try:
                    frames = sync.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                events.append((kind, int(parse_monitor_message(frames)["event"])))
        if events:
            self._on_events(events)

    def _on_events(self, events: list[tuple[int, int]]) -> None:
        """Bump the epoch once per lost Mongrel2, and drop what is left of it.

        A lost Mongrel2 disconnects both sockets; the first of the two to report it ends
        the epoch. A socket's disconnect counts only if it talked to a Mongrel2 since the last
        loss, so the second report of the same loss does not end the next epoch, in whatever
        order the two monitors are read. The PULL socket reports its disconnect only once it
        has queued everything the old Mongrel2 sent (it stops reading the network while its
        queue is full), so until then what it yields is discarded.
        """
        lost = False
        queued = 0
        for kind, event in events:
            if event == zmq.EVENT_DISCONNECTED:
                if self._handshaken[kind]:
                    lost = True
                    self.epoch += 1
                    self._pull_stale = self._handshaken[_PULL] and kind == _PUB
                    if self._pull_stale:  # what it holds now is the old Mongrel2's already
                        queued += self._discard_queued()
                    self._handshaken = [False, False]
                if kind == _PULL:
                    queued += self._discard_queued()
                    self._pull_stale = False
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshaken[kind] = True
                if kind == _PUB:  # bound the discarding if only the publisher was cut off
                    self._pull_stale = False
        if not lost:
            if queued:
                log.info("discarded %d more messages from the Mongrel2 that went away", queued)
            return
        unsent = len(self._backlog) + len(self._turn or ())
        if not self._sender_given:  # the next Mongrel2 may have another send_ident
            self.sender_id = None
        self._backlog.clear()
        self._turn = None  # made in this turn for the old Mongrel2's clients
        if self.on_lost is not None:
            try:
                self.on_lost(queued, unsent)
            except Exception:
                log.exception("on_lost failed")
        else:
            log.warning(
                "Mongrel2 went away (stopped or restarted): %d queued requests and %d unsent "
                "replies of its clients were discarded",
                queued,
                unsent,
            )
        self._backlog.clear()  # what on_lost sent was for the old Mongrel2's clients too
        self._turn = None

    def _discard_queued(self) -> int:
        """Read and drop what the PULL socket holds: requests of a Mongrel2 that went away."""
        return len(self._take_queued())

    def _take_queued(self) -> list[bytes]:
        """Everything the PULL socket holds now, read without waiting."""
        sync, taken = self._pull_sync, []
        if sync is not None:
            with contextlib.suppress(zmq.Again):
                while True:
                    taken.append(_raw_recv(sync, zmq.NOBLOCK))
        return taken

    # Receiving

    def start_reading(self, on_message: Callable[[bytes], None]) -> None:
        """Call ``on_message(raw)`` for every message from Mongrel2, from the event loop.

        The PULL socket's descriptor wakes a plain callback that reads everything waiting (up
        to ``max_batch``, then it lets other callbacks run and goes on): no future, no task,
        no coroutine per wakeup. Under load a wakeup brings only a few messages, so what each
        wakeup costs matters as much as what each message costs. An exception from
        ``on_message`` is logged and reading goes on. Each call runs in a copy of the reader's
        context, so that what one message's handler puts in a ContextVar stays with it (and
        the tasks it starts) as it would in a task of its own.
        """
        self.open()
        assert self._pull is not None
        self._on_message = on_message
        self._fd = cast(int, self._pull.getsockopt(zmq.FD))
        self._paused = True
        self.resume_reading()

    def set_receiver(self, on_message: Callable[[bytes], None]) -> None:
        """Send the messages read from now on (the next one included) to ``on_message``."""
        self._on_message = on_message

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
        if self._pull_stale:  # Mongrel2 went away; its last requests may still be coming in
            discarded = self._discard_queued()
            if discarded:
                log.info("discarded %d messages from the Mongrel2 that went away", discarded)
            return
        sync, again, nowait = self._pull_sync, zmq.Again, zmq.NOBLOCK
        for start in range(0, self.max_batch, self.reply_batch):
            # Replies made while handling this run of messages are held and handed to ZeroMQ
            # together at its end (see send_raw), after any made earlier in this turn.
            held, self._turn = self._turn or [], None
            self._held = held
            try:
                for _ in range(min(self.reply_batch, self.max_batch - start)):
                    if self._paused:
                        return
                    try:
                        raw = _raw_recv(sync, nowait)
                    except again:
                        return
                    try:
                        # Each message in a context of its own, as if it were a task: a
                        # ContextVar a handler sets (a user, a request id) stays its own.
                        copy_context().run(self._on_message, raw)  # type: ignore[arg-type]
                    except Exception:
                        log.exception("dropped a message: handling it failed")
            finally:
                self._held = None
                if held:
                    self._send_held(held)
        if not self._paused:
            asyncio.get_running_loop().call_soon(self._read)  # more may wait: others go first

    def _send_held(self, held: list[bytes]) -> None:
        """Hand replies to ZeroMQ in order; those it cannot take now wait in the backlog."""
        if not self._backlog and self._live:
            sync, nowait, again = self._pub_sync, zmq.NOBLOCK, zmq.Again
            for index, data in enumerate(held):
                try:
                    _raw_send(sync, data, nowait)
                except again:  # ZeroMQ is full: this reply and the rest wait, in order
                    held = held[index:]
                    break
                except Exception:
                    _log_dropped(data)
            else:
                self._read_subscriptions()
                return
            self._read_subscriptions()
        for data in held:
            try:
                self._enqueue(data)
            except Exception:
                _log_dropped(data)

    def stop_receiving(self) -> list[bytes]:
        """Take every message ZeroMQ already queued for this process, then leave Mongrel2.

        For a graceful stop. Closing drops what the PULL socket still holds (libzmq discards
        a closed pipe's unread messages), so the queue is read first, with no await before
        the close. Mongrel2 then sends new requests to the other handlers. Lost
        are only the messages still on their way at that instant, and those Mongrel2 sends
        before it notices the disconnect: ZeroMQ drops both, and neither side can tell.
        """
        pull, sync = self._pull, self._pull_sync
        if pull is None or sync is None:
            return []
        self.pause_reading()
        self._on_message = None
        if self._pull_stale:
            self._discard_queued()
        taken = self._take_queued()
        # Closed, not disconnect()ed: libzmq completes a disconnect only while the socket
        # handles commands, and until then Mongrel2 still sends here, where ZeroMQ drops it
        # (measured: every other request of a worker finishing its last ones). Its monitor
        # goes first, so that this disconnect does not read as Mongrel2 going away.
        with contextlib.suppress(zmq.ZMQError):
            pull.disable_monitor()
        pull.close(linger=0)
        self._pull_sync = None
        log.debug("left %s with %d queued messages taken", self.pull_addr, len(taken))
        return taken

    # Sending

    def send_raw(self, data: bytes) -> None:
        """Publish one already-formatted reply, in order, never dropping it.

        While the receive loop handles a run of messages, replies are held and sent together
        when it ends: ZeroMQ's I/O thread then writes them to Mongrel2 in one go, instead of
        waking for each one, and Mongrel2 reads them in one go. Held, a reply that cannot be
        queued (see ``backlog_limit``) is logged there instead of raising here. Replies made
        elsewhere (by tasks, in callbacks) are held until the event loop's next turn, so
        those of many tasks that finish together leave together too.
        """
        held = self._held
        if held is not None:
            held.append(data)
            return
        turn = self._turn
        if turn is None:
            if self._backlog or not self._live:
                self._enqueue(data)  # behind the waiting ones; raises past backlog_limit
                return
            try:
                asyncio.get_running_loop().call_soon(self._send_turn)
            except RuntimeError:  # no event loop running: nothing would send them later
                self._send_held([data])
                return
            turn = self._turn = []
        elif len(turn) >= self.backlog_limit:
            raise self._backlog_full(len(turn))
        turn.append(data)

    def _send_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn:
            self._send_held(turn)

    def _enqueue(self, data: bytes) -> None:
        if self._pub is None:
            raise RuntimeError("the Mongrel2 connection is closed (or not yet open)")
        if len(self._backlog) >= self.backlog_limit:
            raise self._backlog_full(len(self._backlog))
        self._backlog.append(data)
        if self._subscribed is not None and self._subscribed.is_set():
            self._ensure_flusher()

    def _backlog_full(self, waiting: int) -> BufferError:
        return BufferError(
            f"{waiting} replies are waiting for Mongrel2 to read them; "
            f"is it running and connected to {self.pub_addr}?"
        )

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_backlog())

    async def _flush_backlog(self) -> None:
        pub, sync, backlog = self._pub, self._pub_sync, self._backlog
        assert pub is not None and sync is not None and self._subscribed is not None
        await self._subscribed.wait()
        pause = _FULL_PAUSE_MIN
        while backlog:
            if not self._live:  # Mongrel2 went away: wait for the next one
                await self._subscribed.wait()
                continue
            try:
                sync.send(backlog[0], zmq.NOBLOCK)
                backlog.popleft()
                pause = _FULL_PAUSE_MIN
            except zmq.Again:
                # Mongrel2 reads nothing: wait, longer each time. Not poll(POLLOUT): an XPUB
                # socket says it is writable all the same, and that would spin a core.
                self._read_subscriptions()
                await asyncio.sleep(pause)
                pause = min(pause * 2, _FULL_PAUSE_MAX)
            except Exception:  # not bytes, say: it would stall every reply behind it for good
                _log_dropped(backlog.popleft())
        self._read_subscriptions()

    @property
    def pending(self) -> int:
        """Replies not yet handed to ZeroMQ."""
        held = len(self._held) if self._held is not None else 0
        return len(self._backlog) + held + (len(self._turn) if self._turn is not None else 0)

    def _sender(self, sender: bytes | str | None) -> bytes:
        if sender is None:
            if self.sender_id is None:
                raise ValueError(
                    "no sender id known yet: pass sender=, or give "
                    "Mongrel2Connection(sender_id=...)"
                )
            return self.sender_id
        return _checked_sender(sender)

    def send(self, sender: bytes | str | None, conn_id: bytes | int, data: bytes) -> None:
        """Send bytes to one connection (an empty ``data`` closes it)."""
        self.send_raw(format_reply(self._sender(sender), checked_conn_id(conn_id), data))

    def reply(self, request: Any, data: bytes) -> None:
        """Send bytes to the connection a request came from, unless its Mongrel2 went away."""
        if getattr(request, "epoch", self.epoch) == self.epoch:
            self.send_raw(format_reply(request.sender, request.conn_id, data))

    def deliver(
        self, sender: bytes | str | None, conn_ids: Iterable[bytes | int], data: bytes
    ) -> None:
        """Send the same bytes to many connections, 128 ids per ZeroMQ message."""
        for message in format_deliver(self._sender(sender), conn_ids, data):
            self.send_raw(message)

    def close_connection(self, request: Any) -> None:
        """Ask Mongrel2 to flush and close the connection a request came from."""
        if getattr(request, "epoch", self.epoch) == self.epoch:
            self.send_raw(format_reply(request.sender, request.conn_id, b""))

    def close_connections(
        self, sender: bytes | str | None, conn_ids: Iterable[bytes | int]
    ) -> None:
        for message in format_close(self._sender(sender), conn_ids):
            self.send_raw(message)

    def ctl(self, sender: bytes | str | None, conn_id: bytes | int, **ctl: Any) -> None:
        """A Mongrel2 control message: ``keep_alive=True``, ``cancel=True``, ``credits=N``."""
        self.send_raw(format_ctl(self._sender(sender), checked_conn_id(conn_id), **ctl))

    def new_sender_id(self) -> bytes:
        """A random sender id, for replies sent before any request arrived."""
        self.sender_id = str(uuid.uuid4()).encode()
        return self.sender_id

    def __repr__(self) -> str:
        return f"Mongrel2Connection({self.pull_addr!r}, {self.pub_addr!r})"


#: What Mongrel2 reads as a reply's sender; it drops a reply with any other (MONGREL2.md).
_SENDER = re.compile(rb"[A-Za-z0-9-]+")


def _checked_sender(sender: bytes | str) -> bytes:
    token = sender.encode() if isinstance(sender, str) else sender
    if not isinstance(token, bytes) or _SENDER.fullmatch(token) is None:
        raise ValueError(
            f"a sender id is letters, digits and '-' (Mongrel2 drops a reply with another), "
            f"got {sender!r}"
        )
    return token


#: Waits of the backlog's sender while Mongrel2 reads nothing, in seconds: from, up to.
_FULL_PAUSE_MIN, _FULL_PAUSE_MAX = 0.001, 0.05


def _log_dropped(data: bytes) -> None:
    log.exception("dropped a reply of %d bytes: it could not be sent", len(data))
