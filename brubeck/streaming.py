"""Responses sent in pieces (chunked streams, Server-Sent Events) without overrunning Mongrel2.

Mongrel2 queues what a handler sends to a connection and drops the connection when the queue
is over its limit (MONGREL2.md §A6): 16 messages by default, or 102,400 unwritten bytes with
``download.flow_control``. Rules of this module:

- with flow control, every byte sent to a connection is counted in its ``CreditWindow``
  (decremented by Mongrel2's credits notices), nothing is sent beyond the window, and a message
  too large for it is split; the window refills when credits arrive;
- without it, a stream sends at most ``BURST`` messages per ``PACE`` seconds and coalesces
  what is flushed in between into the next message (sent by a timer if nothing else comes):
  Mongrel2 gives no feedback then, so this bounds the rate of messages, not what a client that
  stops reading can take (use flow control for bulk);
- ``flush()`` waits while the stream is over its budget (the window is full, or
  ``COALESCE_LIMIT`` bytes wait for their turn), so a fast producer is slowed and memory
  stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from .access import stream_headers
from .compression import gzipped_headers, negotiate
from .protocol import decimal
from .request import connection_policy
from .response import NO_BODY, encode_stream_head

log = logging.getLogger("brubeck.streaming")

#: Mongrel2's hard-coded ``MAX_CREDITS``: unwritten bytes one connection may have queued.
MAX_CREDITS = 102_400

#: Without flow control: at most BURST messages per PACE seconds for one stream, and a
#: flush waits once this many bytes are coalesced behind the pace.
BURST = 8
PACE = 0.25
COALESCE_LIMIT = 1 << 20

#: A window with bytes pending and no credits for this long is assumed drained: credits can be
#: lost (they go to any handler process, round robin), and a stream must not hang forever.
CREDIT_STALL = 5.0


class CreditWindow:
    """Mirror of one connection's unwritten bytes in Mongrel2, under download flow control."""

    __slots__ = ("_changed", "_closed", "_drainer", "_queue", "limit", "pending")

    def __init__(self, limit: int = MAX_CREDITS) -> None:
        self.limit = limit
        self.pending = 0
        self._queue: deque[tuple[Callable[[bytes], None], bytes]] = deque()
        self._changed: asyncio.Event | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False

    def send(self, send: Callable[[bytes], None], data: bytes) -> None:
        """Send now if it fits and nothing waits before it; else queue it, in order."""
        if self._closed:  # the connection is gone: its queue went with it
            return
        if not self._queue and self.pending + len(data) <= self.limit:
            self.pending += len(data)
            send(data)
            return
        self._queue.append((send, data))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    def close(self) -> None:
        """The connection is gone (or its Mongrel2): drop what waits, and let the drainer end,
        so that no byte of it reaches a connection that later has the same id."""
        self._closed = True
        self._queue.clear()
        if self._changed is not None:
            self._changed.set()  # the drainer wakes, finds the queue empty and returns

    def credit(self, amount: int) -> None:
        self.pending = max(0, self.pending - amount)
        if self._changed is not None:
            self._changed.set()

    @property
    def backlog(self) -> int:
        """Bytes queued here, not yet sent to Mongrel2."""
        return sum(len(data) for _, data in self._queue)

    async def drained(self) -> None:
        """Wait until everything queued has been handed to Mongrel2."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)

    async def _drain(self) -> None:
        self._changed = self._changed or asyncio.Event()
        queue = self._queue
        while queue:
            send, data = queue[0]
            room = self.limit - self.pending
            if room <= 0 or (room < len(data) and room < min(4096, self.limit)):
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), CREDIT_STALL)
                except TimeoutError:
                    log.warning(
                        "no download credits for %.0fs with %d bytes pending; "
                        "assuming they were written",
                        CREDIT_STALL,
                        self.pending,
                    )
                    self.pending = 0
                continue
            piece, rest = data[:room], data[room:]
            self.pending += len(piece)
            send(piece)
            if rest:
                queue[0] = (send, rest)
            else:
                queue.popleft()


class CreditWindows(dict[bytes, CreditWindow]):
    """The credit window of each connection, when Mongrel2 runs with download flow control.

    A dict, so that the hot path's ``if windows and conn_id in windows`` stays two C calls.
    """

    #: Disconnect notices can be missed: past this many windows the oldest is dropped.
    limit = 100_000

    def open(self, conn_id: bytes, announced: Any) -> None:
        """Mongrel2 announces a connection's credits on its first request."""
        credits = decimal(announced)
        if credits is not None:
            if len(self) >= self.limit:
                self.pop(next(iter(self))).close()
            self[conn_id] = CreditWindow(credits)

    def close(self, conn_id: bytes) -> None:
        """The connection is gone: forget its window and drop what it still holds."""
        window = self.pop(conn_id, None)
        if window is not None:
            window.close()

    def close_all(self) -> None:
        for window in self.values():
            window.close()
        self.clear()

    def credit(self, conn_id: bytes, amount: Any) -> None:
        """A credits notice: Mongrel2 wrote that many more bytes to the client."""
        window = self.get(conn_id)
        if window is not None:
            window.credit(decimal(amount) or 0)


class ResponseStream:
    """The wire side of one streamed response: head, chunks, end.

    With a ``length`` the body goes unchunked and the caller sends exactly that many bytes
    (a file); without one it is chunked (HTTP/1.1) or ends with the connection (HTTP/1.0),
    and gzipped under ``compress_response`` for a client that takes it (each piece flushed, so
    the client reads it at once), unless it is an event stream.
    """

    __slots__ = (
        "_app",
        "_buffer",
        "_gzip",
        "_recent",
        "_timer",
        "chunked",
        "close",
        "finished",
        "head_only",
        "request",
    )

    def __init__(
        self,
        app: Any,
        request: Any,
        status: int,
        reason: str | None,
        headers: list[tuple[str, str]],
        length: int | None = None,
    ) -> None:
        self._app = app
        self.request = request
        headers = stream_headers(app, request, headers)
        # A 204 or 304 has no body whatever the handler writes (RFC 9110 §6.4.1): its head
        # goes alone, unchunked, as a complete response's would.
        bodyless = status in NO_BODY
        self.head_only = bodyless or request.method == "HEAD"
        connection: str | None
        if bodyless:
            self.chunked = False
            connection, self.close = connection_policy(request)
        elif length is None:
            self.chunked = request.version != "HTTP/1.0"
            # HTTP/1.0 has no chunks: the body ends when the connection does.
            self.close = not self.chunked or not request.keep_alive
            connection = "close" if self.close else None
        else:  # the length frames the body: the connection may stay open, as for any response
            self.chunked = False
            connection, self.close = connection_policy(request)
        self.finished = False
        self._recent: deque[float] = deque(maxlen=BURST)
        self._buffer: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._gzip: Any = None
        level = app.stream_gzip_level
        if level is not None and length is None and not bodyless and not _is_event_stream(headers):
            plan = negotiate(request, status, headers, True)
            if plan is not None:
                headers, takes_gzip = plan
                if takes_gzip and status != 304:
                    headers = gzipped_headers(headers)
                    if not self.head_only:
                        # An 8 KiB window and memLevel 7: about 100 KiB per compressor instead
                        # of zlib's 256, as streams may be many and long.
                        self._gzip = zlib.compressobj(level, zlib.DEFLATED, 16 + 13, 7)
        head = encode_stream_head(status, headers, reason, self.chunked, connection, length)
        self._send(head)

    def _send(self, data: bytes) -> None:
        self._app.send_to(self.request, data)

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data

    def _encode(self, data: bytes) -> bytes:
        """gzip's bytes for ``data``, flushed so that the client can read all of it now."""
        gz = self._gzip
        return data if gz is None else gz.compress(data) + gz.flush(zlib.Z_SYNC_FLUSH)

    async def write(self, data: bytes) -> None:
        """Send ``data`` as one piece, once the connection's budget allows."""
        if self.finished:
            raise RuntimeError("the stream is finished: nothing more can be sent")
        if not data or self.head_only:
            return
        window = self._app.credit_window(self.request)
        if window is not None:  # the window paces exactly
            self._send(self._frame(self._encode(data)))
            await window.drained()
            return
        self._buffer.append(data)
        wait = self._wait_for_turn()
        if wait <= 0:
            self._send_buffer()
        elif sum(map(len, self._buffer)) >= COALESCE_LIMIT:
            await asyncio.sleep(wait)
            self._send_buffer()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._send_buffer)

    def _wait_for_turn(self) -> float:
        """Seconds until the pace allows the next message (without flow control)."""
        recent = self._recent
        if len(recent) < BURST:
            return 0.0
        return recent[0] + PACE - asyncio.get_running_loop().time()

    def _send_buffer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._buffer and not self.finished:
            data = self._encode(b"".join(self._buffer))
            self._buffer = []
            self._recent.append(asyncio.get_running_loop().time())
            self._send(self._frame(data))

    async def finish(self, data: bytes = b"") -> None:
        """Send the rest, the end-of-body marker, and close the connection if HTTP needs it."""
        if self.finished:
            return
        if data and not self.head_only:
            self._buffer.append(data)
        if self._gzip is not None and not self._buffer:
            self._buffer.append(b"")  # gzip's end must be sent even with nothing left
        if self._buffer:
            # The pace's timer would send the buffer during the sleep below, and this the end
            # chunk twice: the buffer is this method's to send now.
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            wait = self._wait_for_turn()
            if wait > 0:
                await asyncio.sleep(wait)
            data, self._buffer = b"".join(self._buffer), []
            if self._gzip is not None:
                data, self._gzip = self._gzip.compress(data) + self._gzip.flush(), None
            self._recent.append(asyncio.get_running_loop().time())
            # Another task's flush may have sent the buffer during the sleep: an empty chunk
            # would be a second end-of-body marker, and an empty reply closes the connection.
            rest = (self._frame(data) if data else b"") + (b"0\r\n\r\n" if self.chunked else b"")
            if rest:
                self._send(rest)
        elif self.chunked and not self.head_only:
            self._send(b"0\r\n\r\n")
        self.finished = True
        if self.close:
            self._send(b"")

    def drop(self) -> None:
        """The client is gone: send nothing more, not even a close (nobody would read it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer = []
        self._gzip = None
        self.finished = True

    def abort(self) -> None:
        """End a stream that cannot finish properly: close, so the client sees it truncated."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.finished:
            self.finished = True
            try:
                self._send(b"")
            except BufferError as exc:  # Mongrel2 reads nothing: nothing more to do here
                log.error("could not close the stream of %r: %s", self.request, exc)


def _is_event_stream(headers: list[tuple[str, str]]) -> bool:
    """Event streams stay plain: their events are small, their connections many and long, and
    a compressor per connection would cost more memory than it saves bytes."""
    for name, value in headers:
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower() == "text/event-stream"
    return False


def format_event(
    data: str | bytes, event: str | None = None, id: str | None = None, retry: int | None = None
) -> bytes:
    """One Server-Sent Event (``text/event-stream``), multi-line data split into fields."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    lines = []
    for name, value in (("event", event), ("id", id)):
        if value is not None:
            if "\n" in value or "\r" in value or (name == "id" and "\0" in value):
                raise ValueError(f"an event {name} cannot contain line breaks: {value!r}")
            lines.append(f"{name}: {value}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        lines.append(f"data: {line}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")
