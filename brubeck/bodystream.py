"""A request body read piece by piece: ``request.body_stream``.

A handler that sets ``stream_request_body = True`` reads the body with ``async for chunk in
self.request.body_stream``. Behind Mongrel2's ``upload.stream=1`` the pieces are handed to it
as Mongrel2 sends them, and Mongrel2 reads on from the client only as fast as the handler
takes them (``streamed_uploads`` grants the credits). A body that came whole (inline, or in a
file Mongrel2 wrote) reads the same way, so a handler does not depend on Mongrel2's settings.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import IO

from .errors import HTTPError

#: Bytes per piece when a body that came whole is read piece by piece.
PIECE_SIZE = 64 * 1024


class BodyStream:
    """The pieces of a request body, in order; ``async for`` them, or ``await read()``.

    Attributes:
        length: the size the client announced (``Content-Length``), or None (chunked).
        received: bytes handed to the reader so far.
    """

    __slots__ = (
        "_buffered",
        "_ended",
        "_error",
        "_file",
        "_on_taken",
        "_opener",
        "_pieces",
        "_waiter",
        "length",
        "received",
    )

    def __init__(self, length: int | None, on_taken: Callable[[int], None] | None = None) -> None:
        self.length = length
        self.received = 0
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: told how many bytes the reader took, so that more may be let in
        self._on_taken = on_taken
        #: a body that is a file: read from it, not from ``_pieces``
        self._opener: Callable[[], IO[bytes]] | None = None
        self._file: IO[bytes] | None = None

    @classmethod
    def of_bytes(cls, body: bytes) -> BodyStream:
        stream = cls(len(body))
        for start in range(0, len(body), PIECE_SIZE):
            stream._pieces.append(body[start : start + PIECE_SIZE])
        stream._buffered = len(body)
        stream._ended = True
        return stream

    @classmethod
    def of_file(cls, opener: Callable[[], IO[bytes]], size: int) -> BodyStream:
        stream = cls(size)
        stream._opener = opener
        stream._ended = True
        return stream

    # For the reader

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        piece = await self.read()
        if not piece:
            raise StopAsyncIteration
        return piece

    async def read(self) -> bytes:
        """The next piece; ``b""`` once the body has ended.

        One read at a time: a read while another waits raises ``RuntimeError``.

        Raises the ``HTTPError`` that ended the upload early (the client went away, a
        piece was missing), so that a handler that ignores it still answers sensibly.
        """
        if self._opener is not None:
            return self._read_file(self._opener)
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            if self._waiter is not None:  # one waiter only: the other would wait for good
                raise RuntimeError("another read of this body_stream is already waiting")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        piece = self._pieces.popleft()
        self._buffered -= len(piece)
        self.received += len(piece)
        if self._on_taken is not None:
            self._on_taken(len(piece))
        return piece

    async def read_all(self, limit: int) -> bytes:
        """The rest of the body at once; a 413 if it is longer than ``limit`` bytes."""
        parts = []
        size = 0
        async for piece in self:
            size += len(piece)
            if size > limit:
                raise HTTPError(413, f"the request body is larger than {limit} bytes")
            parts.append(piece)
        return b"".join(parts)

    @property
    def finished(self) -> bool:
        """Whether the whole body arrived (it may not all be read yet)."""
        return self._ended

    # For the app

    def feed(self, piece: bytes) -> None:
        if piece:
            self._pieces.append(piece)
            self._buffered += len(piece)
            self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._ended:
            self._error = error
            self._wake()

    def close(self) -> None:
        """Close the file a body that is a file is read from (the response has gone)."""
        file = self._file
        if file is not None and not file.closed:
            file.close()

    @property
    def buffered(self) -> int:
        """Bytes that arrived and are not read yet."""
        return self._buffered

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _read_file(self, opener: Callable[[], IO[bytes]]) -> bytes:
        file = self._file
        if file is None:
            file = self._file = opener()
        if file.closed:
            return b""
        piece = file.read(PIECE_SIZE)
        if not piece:
            file.close()
        self.received += len(piece)
        return piece
