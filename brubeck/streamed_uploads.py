"""Mongrel2's streamed uploads (``upload.stream=1``): a large body arrives in pieces, on credit.

The flow (MONGREL2.md §A7): the first message carries every header, ``UPLOAD_STREAM: "0"`` and
the part of the body Mongrel2 had already read. Mongrel2 then reads on only as far as the
handler grants credits (``X ID, ["ctl", {"credits": N}]``). Each later message carries only
``UPLOAD_STREAM`` (the offset of its piece) and the piece; the last one ``UPLOAD_STREAM_DONE``.

Brubeck writes the pieces to a file in the ``upload_dir`` setting and then answers the request
like a body Mongrel2 spooled itself: ``request.upload`` is that file. Unlike Mongrel2's own
spooling (``upload.stream=0``), the handler process needs no access to Mongrel2's file system,
so it may run on another machine. A handler class with ``stream_request_body = True`` instead
runs at the first piece and reads the others from ``request.body_stream`` as they come; its
credits are granted as it reads, so a slow reader holds the client back.

Rules of this module:

- the route, the method, ``max_upload_size`` and ``accept_upload()`` are checked on the first
  message, as for any upload; a refusal is answered at once;
- at most ``upload_stream_window`` bytes are granted and not yet written (or read): a slow
  disk or handler slows the client down instead of filling this process's memory (a first
  message larger than the window is the one excess, and is not granted again when read);
- a piece out of order (or overlapping another), a body past ``max_upload_size`` (chunked
  bodies announce no size) or a failing disk ends the upload with an answer (400, 413,
  500); so does a client that sends nothing for ``upload_stream_timeout`` seconds (408),
  because Mongrel2 does not always say when a client left. An upload that ends early ends
  its connection too (a cancel, half a second after the answer);
- the file is deleted when the client goes, when the upload fails, and after the response
  unless the handler keeps it;
- all pieces of one upload must reach the process that took its first message. With several
  processes behind one Mongrel2 handler, ``websocket_peers`` passes each piece to its
  connection's owner (as for WebSocket frames); without it, a piece this process did not
  expect cancels its connection, with a log line that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .bodystream import BodyStream
from .errors import HTTPError
from .protocol import decimal
from .uploads import Upload, check_upload_start

if TYPE_CHECKING:
    from .app import Brubeck
    from .request import Request

STREAM = b"UPLOAD_STREAM"
STREAM_DONE = b"UPLOAD_STREAM_DONE"

#: Defaults of the settings this module reads (docs/settings.md).
DEFAULT_WINDOW = 256 * 1024
DEFAULT_TIMEOUT = 60.0

#: Seconds between an upload's error answer and the cancel that ends its connection.
_CANCEL_AFTER = 0.5

#: Why an upload ended, in ``StreamedUploads._ended``: its client left (nothing to cancel).
_LEFT = "left"

#: How many recently ended connections are remembered (``StreamedUploads._ended``).
_RECENT_LIMIT = 1024

log = logging.getLogger("brubeck.app")


class _Spool:
    """One upload in progress: its first message, where its pieces go (a file, or the
    ``BodyStream`` a running handler reads), and a timer."""

    __slots__ = (
        "debt",
        "early",
        "early_bytes",
        "file",
        "length",
        "limit",
        "outstanding",
        "path",
        "received",
        "request",
        "stream",
        "timeout",
        "timer",
        "window",
    )

    def __init__(
        self,
        request: Request,
        file: IO[bytes] | None,
        path: Path | None,
        limits: tuple[int, int, float],
    ) -> None:
        self.request = request
        self.file = file
        self.path = path
        #: the handler's ``request.body_stream`` when it reads the pieces as they come
        self.stream: BodyStream | None = None
        #: credits granted and not yet used by Mongrel2: while none are, a quiet client is
        #: waiting for this process, not stalling
        self.outstanding = 0
        #: ``max_upload_size``, ``upload_stream_window`` and ``upload_stream_timeout``
        self.limit, self.window, self.timeout = limits
        #: bytes written so far: the offset the next piece must start at
        self.received = 0
        #: the Content-Length the client announced (None: chunked); the pieces must add up to it
        length = request.raw_headers.get(b"content-length")
        self.length = decimal(length.strip()) if isinstance(length, bytes) else None
        #: pieces that came before an earlier one, by offset (see ``StreamedUploads._piece``)
        self.early: dict[int, Request] = {}
        self.early_bytes = 0
        #: live mode: bytes of the first message past the window, not granted again when read
        self.debt = 0
        self.timer: asyncio.TimerHandle | None = None

    def close(self, delete: bool) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.file is None or self.path is None:
            return
        try:
            self.file.close()
        except OSError as exc:  # a full disk can fail the last flush
            log.error("could not close the streamed upload %s: %s", self.path, exc)
            delete = True
        if delete:
            self.path.unlink(missing_ok=True)


class _LiveBody:
    """``request.upload`` while a handler reads the body piece by piece: there is no file.

    The app calls ``discard`` after the response; a body not read to its end then ends the
    connection, since the rest of it would otherwise stay unread on it.
    """

    __slots__ = ("_uploads", "request", "stream")

    #: what ``Request`` asks before it parses a form: there is none to parse here
    live = True

    def __init__(self, uploads: StreamedUploads, request: Request, stream: BodyStream) -> None:
        self._uploads = uploads
        self.request = request
        self.stream = stream

    def _no_file(self) -> Any:
        raise RuntimeError(
            "this handler reads its body as it arrives (stream_request_body): "
            "use request.body_stream; the body is not stored"
        )

    size = property(_no_file)

    def open(self, *args: Any) -> Any:
        return self._no_file()

    read = save_as = keep = open

    @property
    def holds_connection(self) -> bool:
        """Whether Mongrel2 still waits for credits to read this body: then a close would
        not end the connection (``respond`` leaves it to ``discard``, which cancels it)."""
        return not self.stream.finished

    def discard(self) -> None:
        self._uploads._answered(self)

    def __repr__(self) -> str:
        return f"<live request body, {self.stream.received} bytes read>"


class StreamedUploads:
    """The streamed uploads in progress in this process, by connection id."""

    def __init__(self, app: Brubeck) -> None:
        self.app = app
        self._spools: dict[bytes, _Spool] = {}
        #: connections whose upload ended here, or whose stray piece was reported: the pieces
        #: still on their way are dropped without a word
        self._ended: OrderedDict[bytes, str] = OrderedDict()
        #: set by ``end_all``: the stop itself cancels every connection
        self._stopping = False
        app.on_startup(self._check_settings)

    def _check_settings(self) -> None:
        """Refuse to start with settings every streamed upload would fail on."""
        settings = self.app.settings
        _limits(settings)
        directory = settings.get("upload_dir")
        if directory and not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
            raise ValueError(f"the upload_dir setting, {directory!r}, is not a writable directory")

    def __len__(self) -> int:
        return len(self._spools)

    def handle(self, request: Request, raw: bytes) -> Request | None:
        """A message with an ``UPLOAD_STREAM`` header: the first of an upload, or a piece.

        Returns the upload's request when its handler is to run now: once the last piece is
        written (its body in ``request.upload``), or at the first piece for a handler that
        reads the pieces as they come. The app then routes and runs it like any request.
        """
        ownership = self.app.websockets.ownership
        if ownership is not None and not ownership.owns(request.conn_id):
            if not ownership.pass_on(request.conn_id, raw):
                self._end(request, HTTPError(503, "the process owning it is not answering"))
            return None
        if request.method:
            return self._start(request)
        spool = self._spools.get(request.conn_id)
        if spool is None or spool.request.sender != request.sender:
            self._unexpected(request)
            return None
        spool.outstanding -= len(request.body)
        return self._piece(spool, request)

    def forget(self, conn_id: bytes) -> None:
        """The client went away: drop its upload and the file."""
        spool = self._spools.get(conn_id)
        if spool is not None:
            log.info("a streamed upload on connection %s ended: the client left", conn_id.decode())
            self._drop(spool)
            self._remember(conn_id, _LEFT)  # nothing to cancel: see _answered
            if spool.stream is not None:
                spool.stream.fail(HTTPError(400, "the client went away"))

    def close_all(self) -> int:
        """Mongrel2 went away: drop every upload in progress; returns how many."""
        return len(self._drop_all(HTTPError(503, "Mongrel2 went away")))

    async def end_all(self, error: HTTPError) -> int:
        """A graceful stop: answer every upload in progress, then end its connection (their
        next pieces would come to a process that is gone); returns how many."""
        self._stopping = True
        spools = self._drop_all(error)
        for spool in spools:
            if spool.stream is None:  # a live one's handler answers the error itself
                self._reply(spool.request, error)
        if spools:
            await asyncio.sleep(_CANCEL_AFTER)  # see _answer
            for spool in spools:
                self._cancel(spool.request)
        return len(spools)

    def _drop_all(self, error: HTTPError) -> list[_Spool]:
        """Forget every upload in progress, its file deleted and its live reader failed with
        ``error``; the next Mongrel2 numbers its connections from 1 again."""
        spools = list(self._spools.values())
        self._spools.clear()
        self._ended.clear()
        for spool in spools:
            spool.close(delete=True)
            if spool.stream is not None:
                spool.stream.fail(error)
        return spools

    # The first message

    def _start(self, request: Request) -> Request | None:
        app = self.app
        cid = request.conn_id
        previous = self._spools.get(cid)
        if previous is not None:  # a new Mongrel2 reuses ids: the old client is gone
            self.forget(cid)
        self._ended.pop(cid, None)
        try:
            route = check_upload_start(app, request)
            limits = _limits(app.settings)
            if route.is_class and route.target.stream_request_body:
                return self._start_live(request, limits)
            directory = app.settings.get("upload_dir") or tempfile.gettempdir()
            try:
                fd, name = tempfile.mkstemp(prefix="brubeck-upload.", dir=directory)
            except OSError as exc:
                log.error("could not create a file for a streamed upload in %s: %s", directory, exc)
                raise HTTPError(500, "the upload could not be stored") from None
        except Exception as exc:
            self._answer(request, exc)
            return None
        spool = self._spools[cid] = _Spool(request, os.fdopen(fd, "wb"), Path(name), limits)
        if request.raw_headers.get(STREAM) != b"0":
            self._out_of_order(spool, request)
            return None
        # Mongrel2 read the first piece without credit: the whole window is still to grant.
        return self._take(spool, request, spool.window - len(request.body))

    def _start_live(self, request: Request, limits: tuple[int, int, float]) -> Request | None:
        """The handler reads the pieces as they come: it runs now, with a live body stream."""
        spool = self._spools[request.conn_id] = _Spool(request, None, None, limits)
        first = request.body
        size = decimal(request.raw_headers.get(b"content-length"))
        stream = spool.stream = BodyStream(size, lambda taken: self._read_out(spool, taken))
        if request.raw_headers.get(STREAM) != b"0":
            self._out_of_order(spool, request)
        else:
            # Up to a window of bytes may wait, unread, in this process. The first message
            # may carry more (Mongrel2 read it with the headers): the excess is not granted
            # again as it is read.
            spool.debt = max(0, len(first) - spool.window)
            self._take(spool, request, spool.window - len(first))
        request.set_upload(_LiveBody(self, request, stream))
        request._stream = stream
        return request

    # The pieces

    def _piece(self, spool: _Spool, piece: Request) -> Request | None:
        """Take a piece now, or keep it until the pieces before it are in.

        With several processes, a piece passed on by another process can arrive after a later
        one Mongrel2 sent here directly; the offsets put them back in order. Mongrel2 sends no
        more than the credits granted, so what waits stays within the window.
        """
        offset = decimal(piece.raw_headers.get(STREAM))
        if offset == spool.received:
            return self._take(spool, piece, 0)
        size = len(piece.body)
        if (
            offset is None
            or offset < spool.received
            or offset in spool.early
            or spool.early_bytes + size > spool.window
        ):
            self._out_of_order(spool, piece)
            return None
        spool.early[offset] = piece
        spool.early_bytes += size
        return None

    def _take(self, spool: _Spool, piece: Request | None, credits: int) -> Request | None:
        """Write a piece and the early ones that follow it; then return the finished upload's
        request, or grant what was written (plus ``credits``) to Mongrel2."""
        live = spool.stream is not None
        while piece is not None:
            body = piece.body
            if not self._write(spool, body):
                return None
            if STREAM_DONE in piece.raw_headers:
                if spool.length is not None and spool.received != spool.length:
                    self._fail(spool, _short(spool))
                    return None
                del self._spools[piece.conn_id]
                spool.close(delete=False)
                if spool.stream is not None:
                    spool.stream.end()
                    return None  # its handler is running already
                spool.request.set_upload(Upload(spool.path))  # type: ignore[arg-type]
                return spool.request
            if not live:  # written to disk: Mongrel2 may send as much again
                credits += len(body)
            piece = spool.early.pop(spool.received, None)
            if piece is not None:
                spool.early_bytes -= len(piece.body)
        stale = [early for offset, early in spool.early.items() if offset < spool.received]
        if stale:  # an early piece overlaps what was written: it would never be taken
            self._out_of_order(spool, stale[0])
            return None
        self._grant(spool, credits)
        return None

    def _out_of_order(self, spool: _Spool, piece: Request) -> None:
        log.error(
            "a piece of the streamed upload on connection %s starts at %r, expected %d",
            piece.conn_id.decode(),
            piece.raw_headers.get(STREAM),
            spool.received,
        )
        self._fail(spool, HTTPError(400, "the upload's pieces do not fit together"))

    def _write(self, spool: _Spool, data: bytes) -> bool:
        """Append a piece; False if that ended the upload (too large, or the disk failed)."""
        spool.received += len(data)
        if spool.received > spool.limit:
            self._fail(spool, HTTPError(413, f"uploads are limited to {spool.limit} bytes"))
            return False
        if spool.length is not None and spool.received > spool.length:
            self._fail(spool, _short(spool))
            return False
        if spool.stream is not None:
            spool.stream.feed(data)
            return True
        try:
            spool.file.write(data)  # type: ignore[union-attr]
        except OSError as exc:
            log.error("could not write the streamed upload %s: %s", spool.path, exc)
            self._fail(spool, HTTPError(500, "the upload could not be stored"))
            return False
        return True

    def _read_out(self, spool: _Spool, taken: int) -> None:
        """A live handler read ``taken`` bytes: as many may come again, less any debt."""
        owed = min(spool.debt, taken)
        spool.debt -= owed
        self._grant(spool, taken - owed)

    def _grant(self, spool: _Spool, credits: int) -> None:
        """Let Mongrel2 read ``credits`` more bytes, and give the client time to send them."""
        request = spool.request
        if self._spools.get(request.conn_id) is not spool:
            return  # ended meanwhile (a handler reading the last buffered pieces)
        if spool.timer is not None:
            spool.timer.cancel()
            spool.timer = None
        with contextlib.suppress(RuntimeError):  # outside an event loop: no timer to arm
            # Armed before the send: if that fails, the stall still ends the upload (a 408).
            loop = asyncio.get_running_loop()
            spool.timer = loop.call_later(spool.timeout, self._expire, request.conn_id, spool)
        conn = self.app.msg_conn
        if credits > 0 and conn is not None:
            spool.outstanding += credits
            try:
                conn.ctl(request.sender, request.conn_id, credits=credits)
            except BufferError as exc:  # Mongrel2 reads nothing: the timer ends the upload
                log.error("could not grant credits to connection %s: %s", request.conn_id, exc)

    def _expire(self, conn_id: bytes, spool: _Spool) -> None:
        if self._spools.get(conn_id) is not spool:
            return
        if spool.outstanding <= 0:  # the handler has not read what came: wait for it
            self._grant(spool, 0)
        else:
            log.warning(
                "the streamed upload on connection %s stalled at %d bytes: ending it",
                conn_id.decode(),
                spool.received,
            )
            self._fail(spool, HTTPError(408, "the upload stalled"))

    # Ending

    def _fail(self, spool: _Spool, error: HTTPError) -> None:
        self._drop(spool)
        if spool.stream is not None:
            spool.stream.fail(error)  # the handler reading it answers, then _answered ends it
        else:
            self._answer(spool.request, error)

    def _drop(self, spool: _Spool) -> None:
        cid = spool.request.conn_id
        if self._spools.get(cid) is spool:
            del self._spools[cid]
        spool.close(delete=True)
        self._remember(cid)  # its pieces already on their way are dropped without a word

    def _answered(self, body: _LiveBody) -> None:
        """The handler that read a live body answered: if it did not take the whole body, the
        rest would stay on the connection, so the connection ends."""
        cid = body.request.conn_id
        if body.stream.finished or self._stopping or self._ended.get(cid) == _LEFT:
            return
        spool = self._spools.get(cid)
        if spool is not None and spool.request is body.request:
            self._drop(spool)
            body.stream.fail(HTTPError(500, "the response was sent before the body was read"))
        self._cancel_soon(body.request)

    def _answer(self, request: Request, error: BaseException) -> None:
        """Answer an upload that ends here, then cancel its connection.

        Not a close: Mongrel2 waiting for credits does not act on one, nor on a cancel after
        it, so a client that sends its whole body before it reads (many do) would wait for
        good. The cancel, sent once the answer has had time to be written, ends the
        connection; a client still sending then sees its write fail.
        """
        self._reply(request, error)
        self._cancel_soon(request)

    def _cancel_soon(self, request: Request) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # handled outside an event loop: cancel at once
            self._cancel(request)
            return
        loop.call_later(_CANCEL_AFTER, self._cancel_later, request)

    def _reply(self, request: Request, error: BaseException) -> None:
        app = self.app
        # No "Connection: close" (respond would then send the close that blocks the cancel).
        request.raw_headers[b"connection"] = b"keep-alive"
        app.respond(request, app.error_response(request, error))

    def _cancel_later(self, request: Request) -> None:
        if request.epoch == self.app.epoch:  # a new Mongrel2 gives the id to another client
            self._cancel(request)

    def _end(self, request: Request, error: HTTPError) -> None:
        """A message this process cannot pass on: answer a first message, cancel a piece."""
        if request.method:
            self._answer(request, error)
        else:
            self._cancel(request)

    def _unexpected(self, request: Request) -> None:
        cid = request.conn_id
        if cid in self._ended:
            return
        self._remember(cid)
        log.warning(
            "a piece of a streamed upload on connection %s, which this process did not start: "
            "cancelling the connection (with upload.stream=1, several processes behind one "
            "Mongrel2 handler need websocket_peers)",
            cid.decode(),
        )
        self._cancel(request)

    def _remember(self, conn_id: bytes, why: str = "ended") -> None:
        self._ended[conn_id] = why
        if len(self._ended) > _RECENT_LIMIT:
            self._ended.popitem(last=False)

    def _cancel(self, request: Request) -> None:
        conn = self.app.msg_conn
        if conn is not None:
            conn.ctl(request.sender, request.conn_id, cancel=True)


def _limits(settings: dict[str, Any]) -> tuple[int, int, float]:
    """``max_upload_size``, ``upload_stream_window`` and ``upload_stream_timeout``, checked."""
    try:
        limit = int(settings.get("max_upload_size", 1 << 30))
        window = int(settings.get("upload_stream_window", DEFAULT_WINDOW))
        timeout = float(settings.get("upload_stream_timeout", DEFAULT_TIMEOUT))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a streamed upload setting is not a number: {exc}") from None
    if window < 1 or not timeout > 0:
        raise ValueError("upload_stream_window and upload_stream_timeout must be positive")
    return limit, window, timeout


def _short(spool: _Spool) -> HTTPError:
    """The pieces do not add up to the announced length: never hand the handler such a body."""
    return HTTPError(
        400,
        f"the upload's pieces came to {spool.received} bytes, its Content-Length says "
        f"{spool.length}",
    )
