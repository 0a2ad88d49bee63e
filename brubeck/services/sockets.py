"""A ZeroMQ socket driven by the event loop: raw sends, and a callback per message received.

Also ``bind_or_connect``: the broker, the job queue and the job worker get their endpoint
through it, so that all of them report a taken or unusable address alike.

Rules of this module:
- no future per message: the socket's file descriptor wakes a callback that drains every
  waiting message (up to ``max_batch``, then it yields and goes on); sends are synchronous,
  never block, and say whether the message left;
- ZeroMQ signals through an edge-triggered descriptor, and any send may consume the edge of a
  message that just arrived. So every send is followed by a look at ``EVENTS``, and a drain
  is scheduled when a message waits: nothing sits unread while the loop sleeps;
- frames go through pyzmq's compiled ``send``/``recv`` with integer flags: the Python-level
  ``send_multipart`` costs several times more per frame, and MDP messages have six or more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import zmq

log = logging.getLogger("brubeck.services")

_backend: Any = zmq.Socket.__mro__[1]  # pyzmq's compiled socket, below its Python layer
_send = _backend.send
_recv = _backend.recv
_get = _backend.get
_MORE_NOW = int(zmq.SNDMORE | zmq.NOBLOCK)
_NOW = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def bind_or_connect(sock: zmq.Socket, address: str, *, bind: bool, owner: str) -> str:
    """Bind or connect ``sock``; return the endpoint it got (a bound ``*`` port made concrete).

    ZeroMQ's own error names neither the address nor who wanted it, so a failure becomes an
    ``OSError`` that says both (``"{owner} cannot bind {address}: ..."``) and keeps the errno,
    for a caller that retries on ``EADDRINUSE``. Closing the socket is left to the caller.
    """
    try:
        if not bind:
            sock.connect(address)
            return address
        sock.bind(address)
    except zmq.ZMQError as exc:
        verb = "bind" if bind else "connect to"
        raise OSError(exc.errno, f"{owner} cannot {verb} {address}: {exc}") from None
    return sock.get_string(zmq.LAST_ENDPOINT)


def send_frames(sock: zmq.Socket, frames: Sequence[bytes]) -> bool:
    """Send one multipart message now; False when the socket is full or the peer is gone.

    A message is atomic: if the first frame goes, all go; a refusal comes on the first.
    """
    try:
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            _send(sock, frame, _MORE_NOW if index < last else _NOW)
    except zmq.Again:
        return False
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EHOSTUNREACH:  # a ROUTER_MANDATORY socket and a peer gone
            return False
        raise
    return True


def recv_frames(sock: zmq.Socket) -> list[bytes] | None:
    """The next whole message if one is waiting, else None."""
    try:
        frames = [_recv(sock, _NOW)]
    except zmq.Again:
        return None
    while _get(sock, _RCVMORE):
        frames.append(_recv(sock, _NOW))
    return frames


class LoopSocket:
    """Attach a socket to the running loop: ``on_message(frames)`` runs for each message.

    Use ``send`` (never the socket's own methods) while attached; ``detach`` before closing.
    """

    def __init__(
        self,
        sock: zmq.Socket,
        on_message: Callable[[list[bytes]], None],
        max_batch: int = 256,
    ) -> None:
        self.sock = sock
        self.on_message = on_message
        self.max_batch = max_batch
        #: True while messages are known to wait unread (a drain stopped at ``max_batch``).
        self.backlog = False
        self._loop = asyncio.get_running_loop()
        self._fd = cast(int, sock.get(zmq.FD))
        self._scheduled = False
        self._attached = True
        self._loop.add_reader(self._fd, self.drain)
        self._check()

    def send(self, frames: Sequence[bytes]) -> bool:
        """Send now; False when the socket is full or the peer unreachable."""
        sent = send_frames(self.sock, frames)
        self._check()
        return sent

    def drain(self) -> None:
        """Handle the messages waiting now (at most ``max_batch``; the rest on the next turn)."""
        self._scheduled = False
        for _ in range(self.max_batch):
            if not self._attached:
                return
            frames = recv_frames(self.sock)
            if frames is None:
                self.backlog = False
                return
            try:
                self.on_message(frames)
            except Exception:
                log.exception("failed to handle a message; dropped it")
        self.backlog = True
        self._schedule()

    def detach(self) -> None:
        if self._attached:
            self._attached = False
            self._loop.remove_reader(self._fd)

    def _check(self) -> None:
        if self._attached and not self._scheduled and _get(self.sock, _EVENTS) & _POLLIN:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        self._loop.call_soon(self.drain)
