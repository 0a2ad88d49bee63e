"""Several processes, one owner per WebSocket connection.

Mongrel2 hands each message to the next handler process in turn (round robin per message),
so the frames of one WebSocket reach every process. A handler and its state must still live
in one place for the whole connection. Rules of this module:

- the processes are listed once, in the ``websocket_peers`` setting: one ZeroMQ endpoint per
  process, the same list in the same order everywhere; ``websocket_peer_index`` says which
  one this process is. Each binds a PULL socket on its endpoint and pushes to the others';
- connection ``N`` is owned by process ``N % len(peers)``: every process computes it alone,
  with no message exchanged and nothing to agree on;
- a WebSocket message or disconnect notice for a connection owned elsewhere is passed, as the
  raw Mongrel2 bytes, to the owner, which handles it as if Mongrel2 had sent it there;
- only the owner writes to its connections, so their frames leave in order; a room broadcast
  goes to every process, and each sends it to its own members;
- without ``websocket_peers`` (or with one endpoint) this module is never loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

import tnetstring
import zmq
import zmq.asyncio

from .errors import HTTPError
from .wsframes import CloseCode, Opcode, encode_close, encode_frame

if TYPE_CHECKING:
    from .request import Request
    from .wsregistry import WebSocketRegistry

log = logging.getLogger("brubeck.ownership")

_MESSAGE = b"M"  # a raw Mongrel2 message for a connection the receiver owns
_ROOM = b"R"  # a room name and an encoded frame for the receiver's members of that room

#: Messages queued for a peer that does not read (down, or restarting) before sends fail.
PEER_QUEUE = 10_000

_DISCONNECT_HEADERS = tnetstring.dumps({b"METHOD": b"JSON"})
_DISCONNECT_BODY = tnetstring.dumps(b'{"type":"disconnect"}')


class Ownership:
    """Which process owns which connection, and the sockets that pass messages to owners.

    Args:
        registry: this process's ``WebSocketRegistry``.
        peers: one ZeroMQ endpoint per process (``ipc://…`` or ``tcp://…``), the same list
            in every process.
        index: this process's position in ``peers``.
    """

    def __init__(self, registry: WebSocketRegistry, peers: Sequence[str], index: Any) -> None:
        # A list or tuple: a set's order follows string hashing, which differs per process,
        # and every process must compute the same owner for a connection.
        if not isinstance(peers, (list, tuple)) or not all(isinstance(p, str) and p for p in peers):
            raise ValueError(
                f"websocket_peers must be a list of ZeroMQ endpoints, one per process, got "
                f"{peers!r}"
            )
        if len(set(peers)) != len(peers):
            raise ValueError(f"websocket_peers lists an endpoint twice: {list(peers)!r}")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(peers):
            raise ValueError(
                f"websocket_peer_index must say which of the {len(peers)} websocket_peers this "
                f"process is (0 to {len(peers) - 1}), got {index!r}"
            )
        self.registry = registry
        self.peers = list(peers)
        self.index = index
        self._count = len(peers)
        self._pull: zmq.asyncio.Socket | None = None
        self._pushes: dict[int, zmq.Socket[Any]] = {}
        self._async_pushes: list[zmq.asyncio.Socket] = []
        self._receiver: asyncio.Task[None] | None = None
        #: Messages this process passed to owners, and received from other processes.
        self.forwarded = 0
        self.received = 0

    def owner(self, conn_id: bytes) -> int:
        """The index of the process that owns a connection."""
        return int(conn_id) % self._count

    def owns(self, conn_id: bytes) -> bool:
        return int(conn_id) % self._count == self.index

    # Life cycle

    async def start(self) -> None:
        ctx = zmq.asyncio.Context.instance()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVHWM, PEER_QUEUE)
        pull.bind(self.peers[self.index])
        self._pull = pull
        for i, endpoint in enumerate(self.peers):
            if i == self.index:
                continue
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.setsockopt(zmq.SNDHWM, PEER_QUEUE)
            push.connect(endpoint)
            self._async_pushes.append(push)
            # A plain socket over the same handle: a non-blocking send needs no future.
            self._pushes[i] = zmq.Socket.shadow(push.underlying)
        self._receiver = asyncio.get_running_loop().create_task(self._receive())
        log.info(
            "WebSocket owner %d of %d, taking messages at %s",
            self.index,
            self._count,
            self.peers[self.index],
        )

    async def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
            self._receiver = None
        for push in self._async_pushes:
            push.close()
        self._async_pushes.clear()
        self._pushes.clear()
        if self._pull is not None:
            self._pull.close()
            self._pull = None

    # Passing messages on

    def pass_on(self, conn_id: bytes, raw: bytes) -> bool:
        """Give a Mongrel2 message to the process that owns its connection; False if that
        process is not reading (the caller answers for it)."""
        return self._send(self.owner(conn_id), [_MESSAGE, raw])

    def forward(self, request: Request, raw: bytes) -> None:
        """Give a WebSocket message to the process that owns its connection."""
        if self.pass_on(request.conn_id, raw):
            return
        # The owner is not reading: better a closed socket than one that lost a message.
        app = self.registry.app
        if request.method == "WEBSOCKET_HANDSHAKE":
            response = app.error_response(request, _unavailable())
            app.respond(request, response)
        else:
            close = encode_close(CloseCode.INTERNAL_ERROR, "owner process unavailable")
            app.send_to(request, encode_frame(Opcode.CLOSE, close))
        app.send_to(request, b"")

    def forward_disconnect(self, conn_id: bytes) -> None:
        """Tell a connection's owner that Mongrel2 saw its client leave."""
        conn = self.registry.app.msg_conn
        sender = (conn.sender_id if conn is not None else None) or b"brubeck"
        raw = b"%s %s @* %s%s" % (sender, conn_id, _DISCONNECT_HEADERS, _DISCONNECT_BODY)
        self._send(self.owner(conn_id), [_MESSAGE, raw])

    def fanout(self, room: str, frame: bytes) -> None:
        """Have every other process send a frame to its members of a room."""
        name = room.encode("utf-8", "surrogatepass")  # a client's "\ud800" names a room too
        for i in self._pushes:
            self._send(i, [_ROOM, name, frame])

    def _send(self, peer: int, parts: list[bytes]) -> bool:
        push = self._pushes.get(peer)
        if push is None:
            log.error("WebSocket peer %d is not connected (is the app started?)", peer)
            return False
        try:
            push.send_multipart(parts, zmq.NOBLOCK)
        except zmq.Again:
            log.error(
                "WebSocket peer %d (%s) has %d messages waiting: is it running?",
                peer,
                self.peers[peer],
                PEER_QUEUE,
            )
            return False
        self.forwarded += 1
        return True

    async def _receive(self) -> None:
        assert self._pull is not None
        pull = self._pull
        app = self.registry.app
        while True:
            parts = await pull.recv_multipart()
            self.received += 1
            try:
                if parts[0] == _MESSAGE and len(parts) == 2:
                    copy_context().run(app.handle_message, parts[1])  # as connection.py
                elif parts[0] == _ROOM and len(parts) == 3:
                    room = parts[1].decode("utf-8", "surrogatepass")
                    self.registry.send_frame(self.registry.members(room), parts[2])
                else:
                    log.warning("dropped a malformed message from a WebSocket peer")
            except Exception:
                log.exception("a message from a WebSocket peer failed")


def _unavailable() -> HTTPError:
    return HTTPError(503, "the process that owns this connection is not answering")
