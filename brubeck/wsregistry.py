"""The WebSocket connections of one process: dispatch, rooms and broadcast (``app.websockets``).

Rules of this module:
- the app hands over every ``WEBSOCKET_HANDSHAKE`` and ``WEBSOCKET`` message, and every
  disconnect notice, unparsed beyond its ``Request``; nothing else of HTTP comes here;
- a connection's handler is found by connection id and nowhere else; when several processes
  share the app (``websocket_peers``), a message for a connection another process owns is
  passed on to it before anything here looks at it;
- a frame for a connection with no handler (its owner restarted, or the app runs in several
  processes without ``websocket_peers``) closes that connection with 1011, so a client never
  talks to a socket that has silently lost its state;
- a broadcast encodes its frame once and names up to 128 connections per ZeroMQ message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from .errors import HTTPError
from .request import Request
from .response import to_body_bytes
from .websocket import HANDSHAKE, WebSocketHandler
from .wsframes import CloseCode, Opcode, encode_close, encode_frame, encode_message, parse_flags

if TYPE_CHECKING:
    from .app import Brubeck
    from .ownership import Ownership

log = logging.getLogger("brubeck.websocket")

#: The METHOD values that make a Mongrel2 message a WebSocket one.
WEBSOCKET_METHODS = frozenset({"WEBSOCKET_HANDSHAKE", "WEBSOCKET"})

#: How many closed connection ids are remembered, so late frames for them are ignored.
_RECENT_LIMIT = 4096

#: Seconds the app's stop waits for ``on_close`` callbacks still running.
_SHUTDOWN_WAIT = 5.0

Target = WebSocketHandler | bytes | int


class WebSocketRegistry:
    """Live WebSocket handlers by connection id, and named rooms of them."""

    def __init__(self, app: Brubeck) -> None:
        self.app = app
        #: Set at startup when ``websocket_peers`` names several processes.
        self.ownership: Ownership | None = None
        self._handlers: dict[bytes, WebSocketHandler] = {}
        self._rooms: dict[str, set[WebSocketHandler]] = {}
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        app.on_startup(self._startup)
        app.on_shutdown(self._shutdown)

    # From the app

    def handle(self, request: Request, raw: bytes) -> None:
        """A WebSocket message from Mongrel2 (or from another process, for ours)."""
        ownership = self.ownership
        if ownership is not None and not ownership.owns(request.conn_id):
            ownership.forward(request, raw)
        elif request.method == HANDSHAKE:
            self._handshake(request)
        else:
            handler = self._handlers.get(request.conn_id)
            if handler is not None:
                handler._receive(request)
            else:
                self._unknown(request)

    def connection_closed(self, conn_id: bytes) -> None:
        """Mongrel2's disconnect notice: the client left without a close frame."""
        handler = self._handlers.get(conn_id)
        if handler is not None:
            handler._connection_lost()
        elif self.ownership is not None and not self.ownership.owns(conn_id):
            self.ownership.forward_disconnect(conn_id)

    def mongrel2_lost(self) -> int:
        """Mongrel2 went away: every connection here went with it (``on_close`` with 1006).

        Returns how many there were. Nothing is forwarded: every process sees the loss.
        """
        handlers = list(self._handlers.values())
        for handler in handlers:
            handler._connection_lost()
        self._recent.clear()  # the next Mongrel2 reuses these ids
        return len(handlers)

    def _handshake(self, request: Request) -> None:
        app = self.app
        try:
            route, args, kwargs, _ = app.router.match(request.method, request.path)
            if route is None or not (route.is_class and issubclass(route.target, WebSocketHandler)):
                raise HTTPError(404, f"no WebSocket endpoint at {request.path}")
            handler = route.target(app, request, **route.init_kwargs)
        except Exception as exc:
            app.respond(request, app.error_response(request, exc))
            app.send_to(request, b"")
            return
        previous = self._handlers.get(request.conn_id)
        if previous is not None:  # Mongrel2 restarted and reuses ids: the old client is gone
            previous._connection_lost()
        self._recent.pop(request.conn_id, None)
        self._handlers[request.conn_id] = handler
        handler._start(args, kwargs)

    def _unknown(self, request: Request) -> None:
        cid = request.conn_id
        if cid in self._recent:
            return
        self._remember(cid)
        try:
            opcode = parse_flags(request.raw_headers.get(b"FLAGS"))
        except ValueError:
            opcode = Opcode.CLOSE
        if opcode != Opcode.CLOSE:
            log.warning(
                "a WebSocket frame for connection %s, which this process does not know: closing "
                "it (an app serving WebSockets from several processes needs websocket_peers)",
                cid.decode(),
            )
            close = encode_close(CloseCode.INTERNAL_ERROR, "connection state lost")
            self.app.send_to(request, encode_frame(Opcode.CLOSE, close))
        self.app.send_to(request, b"")

    def _remember(self, conn_id: bytes) -> None:
        self._recent[conn_id] = None
        if len(self._recent) > _RECENT_LIMIT:
            self._recent.popitem(last=False)

    # From handlers

    def discard(self, handler: WebSocketHandler) -> None:
        """Forget a closed connection: no more frames for it, out of every room."""
        cid = handler.conn_id
        if self._handlers.get(cid) is handler:
            del self._handlers[cid]
            self._remember(cid)
        for room in list(handler.rooms):
            self.leave(handler, room)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a handler's async callbacks as a task the app's stop can wait for."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a WebSocket task failed", exc_info=task.exception())

    # Rooms and broadcast

    def join(self, handler: WebSocketHandler, room: str) -> None:
        if handler.closed:
            return
        self._rooms.setdefault(room, set()).add(handler)
        handler.rooms.add(room)

    def leave(self, handler: WebSocketHandler, room: str) -> None:
        handler.rooms.discard(room)
        members = self._rooms.get(room)
        if members is not None:
            members.discard(handler)
            if not members:
                del self._rooms[room]

    def members(self, room: str) -> frozenset[WebSocketHandler]:
        """The handlers of this process in a room."""
        return frozenset(self._rooms.get(room, ()))

    def get(self, conn_id: bytes | int) -> WebSocketHandler | None:
        """The handler of a connection this process owns."""
        cid = conn_id if isinstance(conn_id, bytes) else b"%d" % conn_id
        return self._handlers.get(cid)

    def __len__(self) -> int:
        return len(self._handlers)

    def broadcast(
        self,
        message: str | bytes | dict | list,
        to: str | Iterable[Target],
        *,
        binary: bool = False,
        exclude: WebSocketHandler | None = None,
    ) -> int:
        """Send one message to a room or to handlers and connection ids.

        A room reaches its members in every process sharing the app; handlers and ids are
        reached from here. Returns how many connections this process sent it to.
        """
        if isinstance(message, (dict, list)):
            message = to_body_bytes(message).decode("utf-8")
        frame = encode_message(message, binary)
        if isinstance(to, str):
            if self.ownership is not None:
                self.ownership.fanout(to, frame)
            return self.send_frame(self._rooms.get(to, ()), frame, exclude)
        if isinstance(to, (bytes, int, WebSocketHandler)):  # one target (bytes iterate as ints)
            to = (to,)
        return self.send_frame(to, frame, exclude)

    def send_frame(
        self, targets: Iterable[Target], frame: bytes, exclude: WebSocketHandler | None = None
    ) -> int:
        """Send an encoded frame to handlers and ids: one ZeroMQ message per 128 and sender."""
        conn = self.app.msg_conn
        if conn is None:
            raise RuntimeError("this Brubeck app has no msg_conn to send through")
        by_sender: dict[bytes | None, list[bytes]] = {}
        count = 0
        epoch = self.app.epoch
        seen: set[bytes] = set()  # a connection named twice (a handler and its id) gets it once
        for target in list(targets):
            if isinstance(target, WebSocketHandler):
                cid = target.conn_id
            else:
                cid = target if isinstance(target, bytes) else b"%d" % target
            if cid in seen:
                continue
            seen.add(cid)
            if not isinstance(target, WebSocketHandler):
                # An id of a connection of this process is its handler: its order, its close
                # and its credit window hold for the broadcast too.
                handler = self._handlers.get(cid)
                if handler is None:
                    by_sender.setdefault(None, []).append(cid)
                    count += 1
                    continue
                target = handler
            if target is exclude or target.request.epoch != epoch:
                continue
            if not target._sendable or self.app.credit_window(target.request) is not None:
                if not target.closed:  # opening (the frame follows the 101), or paced by credits
                    target._send(frame)
                    count += 1
                continue
            target._flush()  # what it wrote before goes first
            by_sender.setdefault(target.request.sender, []).append(target.conn_id)
            count += 1
        for sender, ids in by_sender.items():
            conn.deliver(sender, ids, frame)
        return count

    # Life cycle (app hooks)

    async def _startup(self) -> None:
        peers = self.app.settings.get("websocket_peers")
        if peers and len(peers) > 1:
            from .ownership import Ownership

            index = self.app.settings.get("websocket_peer_index")
            self.ownership = Ownership(self, peers, index)
            await self.ownership.start()

    async def _shutdown(self) -> None:
        """Close every connection with 1001 and run the ``on_close`` callbacks."""
        for handler in list(self._handlers.values()):
            handler._shutdown()
        if self._tasks:
            wait = min(_SHUTDOWN_WAIT, self.app.shutdown_timeout)
            _, pending = await asyncio.wait(set(self._tasks), timeout=wait)
            for task in pending:
                task.cancel()
        if self.ownership is not None:
            await self.ownership.stop()
            self.ownership = None
