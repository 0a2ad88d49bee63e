"""WebSocket connections through Mongrel2: ``WebSocketHandler``, one instance per connection.

Rules of this module:
- a handler lives for the whole connection, in the one process that owns it (``wsregistry``
  and ``ownership`` see to that even when Mongrel2 spreads frames over several processes);
- its events (the handshake, each message, the close) run one at a time, in arrival order: a
  ``def`` callback runs inline, an ``async def`` one holds back the events after it until it
  returns;
- every byte for the connection leaves through ``_send``: the 101 first (frames written during
  ``open`` wait for it), then frames. What is written in one turn of the event loop leaves as
  one Mongrel2 message, and at most ``BURST`` messages leave per ``PACE`` seconds (more is
  coalesced), so Mongrel2's queue of 16 messages per connection is not overrun; nothing is
  sent once the connection is closed, and writes after that are dropped;
- ``on_close`` runs exactly once for every handler whose ``open`` returned: after the close
  handshake, a disconnect notice, a ping timeout, a protocol error (the connection is failed:
  close frame and hang-up at once, RFC 6455 section 7.1.7), or when the app stops.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import HTTPError
from .handlers import MessageHandler
from .request import Request
from .response import Response, to_body_bytes
from .streaming import BURST, PACE
from .wsframes import (
    MAX_CONTROL_PAYLOAD,
    CloseCode,
    FrameError,
    Opcode,
    as_payload,
    decode_text,
    encode_close,
    encode_frame,
    encode_message,
    handshake_reply,
    is_accept_key,
    is_client_key,
    parse_close,
    parse_flags,
    parse_subprotocols,
)

if TYPE_CHECKING:
    from .app import Brubeck

log = logging.getLogger("brubeck.websocket")

#: The handshake's METHOD, and every later message's.
HANDSHAKE = "WEBSOCKET_HANDSHAKE"
FRAME = "WEBSOCKET"

_CONNECTING, _OPEN, _CLOSING, _CLOSED = range(4)

#: The handshake must be HTTP/1.1 or later (RFC 6455 section 4.2.1 item 1).
_HTTP_VERSION = re.compile(r"HTTP/(\d{1,3})\.(\d{1,3})", re.ASCII)


def _is_awaitable(value: Any) -> bool:
    return value is not None and hasattr(value, "__await__")


class WebSocketHandler(MessageHandler):
    """One WebSocket connection: override ``open``, ``on_message`` and ``on_close``.

    Routed like any handler. ``prepare`` runs first and may refuse the handshake by raising
    ``HTTPError``; the URL's groups go to ``open``. Callbacks may be ``def`` or ``async def``.
    A plain ``GET`` without the upgrade is answered 426.
    """

    #: Largest message accepted, in bytes; bigger ones fail the connection with 1009.
    #: None: the app's ``websocket_max_message_size`` setting (10 MiB by default).
    max_message_size: int | None = None
    #: Seconds of silence from the client before a ping (and a Mongrel2 keep-alive) is sent;
    #: 0 turns pings off. None: the ``websocket_ping_interval`` setting (30 s by default).
    ping_interval: float | None = None
    #: Seconds a ping may go unanswered before the client is taken as gone (``on_close``
    #: with 1006). None: the ``websocket_ping_timeout`` setting (30 s by default). A client
    #: sending a message answers no ping until its last byte: allow for the largest one.
    ping_timeout: float | None = None
    #: Seconds to wait for the client to answer ``close()`` before hanging up anyway.
    close_timeout: float = 5.0
    #: Most messages held while an ``async`` callback runs; past it the connection is failed
    #: with 1008, since the client is sending faster than the handler can take.
    max_pending_messages: int = 1000

    def __init__(self, application: Brubeck, message: Request, **kwargs: Any) -> None:
        self._state = _CONNECTING
        self._opened = False
        self._handshaken = False
        self._events: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._busy = False
        self._held: list[bytes] = []  # frames written before the 101 left
        self._buffer: list[bytes] = []  # frames waiting for the pace
        self._recent: deque[float] = deque(maxlen=BURST)
        self._flush_timer: asyncio.Handle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._last_seen = 0.0
        self._ping_sent: float | None = None
        #: The rooms this connection is in (``join``/``leave``).
        self.rooms: set[str] = set()
        #: The subprotocol ``select_subprotocol`` chose, if any.
        self.selected_subprotocol: str | None = None
        #: The code and reason of the close, once closed (1006: no close frame came).
        self.close_code: int | None = None
        self.close_reason: str | None = None
        super().__init__(application, message, **kwargs)

    # What subclasses override

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        """The connection is accepted (the 101 leaves when this returns); raise to refuse."""
        return None

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """A whole message: ``str`` for a text message, ``bytes`` for a binary one."""
        raise NotImplementedError(f"{type(self).__name__} must define on_message")

    def on_close(self, code: int, reason: str) -> Awaitable[None] | None:
        """The connection is closed (1006: no close frame came, the client just went away)."""
        return None

    def on_ping(self, data: bytes) -> None:
        """A ping arrived (already answered with a pong)."""

    def on_pong(self, data: bytes) -> None:
        """A pong arrived."""

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """Pick one of the subprotocols the client offers, or None for none of them."""
        return None

    def check_origin(self, origin: str) -> bool:
        """Whether a browser page from ``origin`` may connect: by default, same host only.

        Browsers send ``Origin``; refusing foreign ones stops other sites from opening
        sockets with your users' cookies. Clients that send no ``Origin`` are not checked.
        """
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # "http://[::1": not a URL, so not this site
            return False
        return netloc.lower() == self.request.host.lower()

    @classmethod
    def allowed_methods(cls) -> list[str]:
        return ["GET", "HEAD", HANDSHAKE]

    def get(self, *args: Any, **kwargs: Any) -> Response:
        raise HTTPError(
            426,
            "this is a WebSocket endpoint",
            {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
        )

    # What subclasses call

    @property
    def closed(self) -> bool:
        """True once the close started: writes are dropped from then on."""
        return self._state >= _CLOSING

    @property
    def conn_id(self) -> bytes:
        return self.request.conn_id

    def write_message(self, message: str | bytes | dict | list, binary: bool = False) -> None:
        """Send one message: ``str`` (and dict/list, as JSON) as text, ``bytes`` as binary.

        ``binary=True`` sends a ``str`` as a binary message. Dropped if the connection closed.
        """
        if self._state >= _CLOSING:
            return
        if isinstance(message, (dict, list)):
            message = to_body_bytes(message).decode("utf-8")
        self._send(encode_message(message, binary))

    def ping(self, data: bytes | str = b"") -> None:
        """Send a ping; the client's pong arrives at ``on_pong``."""
        payload = data.encode("utf-8") if isinstance(data, str) else as_payload(data)
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"a ping carries at most 125 bytes, got {len(payload)}")
        if self._state < _CLOSING:
            self._send(encode_frame(Opcode.PING, payload))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the close handshake; the connection ends when the client answers, or after
        ``close_timeout``. ``on_close`` follows."""
        if self._state >= _CLOSING:
            return
        self._send(encode_frame(Opcode.CLOSE, encode_close(code, reason)))
        self._state = _CLOSING
        self._stop_idle_timer()
        self._close_timer = asyncio.get_running_loop().call_later(
            self.close_timeout, self._close_timed_out
        )

    def join(self, room: str) -> None:
        """Enter a room of this process's registry; the close leaves every room."""
        self.application.websockets.join(self, room)

    def leave(self, room: str) -> None:
        self.application.websockets.leave(self, room)

    def broadcast(
        self,
        message: str | bytes | dict | list,
        to: str | Iterable[WebSocketHandler | bytes | int],
        *,
        binary: bool = False,
        exclude_self: bool = False,
    ) -> int:
        """Send one message to a room (by name) or to handlers or connection ids, with one
        ZeroMQ message per 128 connections. Returns how many connections of this process got it.
        """
        exclude = self if exclude_self else None
        return self.application.websockets.broadcast(message, to, binary=binary, exclude=exclude)

    # The handshake (called by the registry)

    def _start(self, args: tuple[str, ...], kwargs: dict[str, str]) -> None:
        self._feed(self._handshake, args, kwargs)

    def _handshake(self, args: tuple[str, ...], kwargs: dict[str, str]) -> Any:
        try:
            self._check_handshake()
            prepared: Any = self.prepare()
            if _is_awaitable(prepared):
                return self._handshake_async(prepared, args, kwargs)
            opening = self._open(args, kwargs)
            return None if opening is None else self._await_open(opening)
        except Exception as exc:
            self._refuse(exc)
            return None

    async def _await_open(self, opening: Awaitable[None]) -> None:
        try:
            await opening
        except Exception as exc:
            self._refuse(exc)

    async def _handshake_async(
        self, prepared: Awaitable[None], args: tuple[str, ...], kwargs: dict[str, str]
    ) -> None:
        try:
            await prepared
            opening = self._open(args, kwargs)
            if opening is not None:
                await opening
        except Exception as exc:
            self._refuse(exc)

    def _check_handshake(self) -> None:
        request = self.request
        if not is_accept_key(request.body):
            raise HTTPError(400, "the handshake lacks the accept key Mongrel2 computes")
        version = _HTTP_VERSION.fullmatch(request.version)
        if version is None or (int(version[1]), int(version[2])) < (1, 1):
            raise HTTPError(400, "a WebSocket handshake is an HTTP/1.1 request")
        keys = request.headers.getlist("sec-websocket-key")
        if len(keys) != 1 or not is_client_key(keys[0]):  # RFC 6455 4.2.1 item 5, and 11.3.1
            raise HTTPError(400, "Sec-WebSocket-Key must be sent once, as base64 for 16 bytes")
        if request.headers.first("sec-websocket-version") != "13":
            raise HTTPError(
                426, "only WebSocket version 13 is spoken here", {"Sec-WebSocket-Version": "13"}
            )
        origin = request.headers.first("origin")
        if origin is not None and not self.check_origin(origin):
            raise HTTPError(403, f"WebSocket connections from {origin} are not allowed")

    def _open(self, args: tuple[str, ...], kwargs: dict[str, str]) -> Any:
        if self._finished:  # prepare() answered itself (a redirect…): send that instead
            raise _Answered(self.render())
        try:  # only tokens: the chosen one goes back in the 101, so no CR/LF ever does
            offered = parse_subprotocols(self.request.headers.getlist("sec-websocket-protocol"))
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        if offered:
            chosen = self.select_subprotocol(offered)
            if chosen is not None and chosen not in offered:
                raise ValueError(f"select_subprotocol chose {chosen!r}, not one of {offered}")
            self.selected_subprotocol = chosen
        opened: Any = self.open(*args, **kwargs)
        if _is_awaitable(opened):
            return self._open_async(opened)
        self._accept()
        return None

    async def _open_async(self, opened: Awaitable[None]) -> None:
        await opened
        self._accept()

    def _accept(self) -> None:
        self._opened = True
        self._handshaken = True
        if self._state == _CLOSED:  # the client left during an async open
            return
        if self._state == _CONNECTING:
            self._state = _OPEN
            self._last_seen = asyncio.get_running_loop().time()
            interval = self._ping_settings()[0]
            if interval > 0:
                self._schedule_idle_check(interval)
        head = handshake_reply(self.request.body, self.selected_subprotocol, self._headers)
        held, self._held = self._held, []
        self._recent.append(asyncio.get_running_loop().time())
        self.application.send_to(self.request, head + b"".join(held))

    def _refuse(self, exc: Exception) -> None:
        # Built (and an unexpected error logged) even when the client is gone: the bug must show.
        response = exc.response if isinstance(exc, _Answered) else self.handle_exception(exc)
        if self._state == _CLOSED:  # the client left during an async handshake: nobody to answer
            return
        self._state = _CLOSED
        self._held = []
        if self._close_timer is not None:  # close() was called in open(), which then raised
            self._close_timer.cancel()
            self._close_timer = None
        self.application.websockets.discard(self)
        self.application.respond(self.request, response)
        self.application.send_to(self.request, b"")

    # Frames (called by the registry)

    def _receive(self, request: Request) -> None:
        """One message from Mongrel2 for this connection: data, ping, pong or close."""
        self._last_seen = asyncio.get_running_loop().time()
        if self._state == _CLOSED:
            return
        body = request.body
        try:
            opcode = parse_flags(request.raw_headers.get(b"FLAGS"))
            if opcode == Opcode.CLOSE:
                self._close_received(body)
            elif opcode == Opcode.PING:
                if len(body) > MAX_CONTROL_PAYLOAD:  # its pong would be no valid frame
                    raise FrameError(CloseCode.PROTOCOL_ERROR, f"a ping of {len(body)} bytes")
                if self._state < _CLOSING:  # held until the 101 during an async open
                    self._send(encode_frame(Opcode.PONG, body))
                if type(self).on_ping is not WebSocketHandler.on_ping:
                    self._feed_bounded(self._pinged, body)
            elif opcode == Opcode.PONG:
                if type(self).on_pong is not WebSocketHandler.on_pong:
                    self._feed_bounded(self._ponged, body)
            elif self._state < _CLOSING:  # after our close frame, data is dropped
                limit = self._max_size()
                if len(body) > limit:
                    raise FrameError(
                        CloseCode.MESSAGE_TOO_BIG, f"message of {len(body)} bytes, over {limit}"
                    )
                message = decode_text(body) if opcode == Opcode.TEXT else body
                self._feed_bounded(self._deliver, message)
        except FrameError as exc:  # fail the connection (RFC 6455 7.1.7): no close handshake
            log.info("failing WebSocket %s: %s", self.conn_id.decode(), exc.reason)
            reason = _short(exc.reason)
            if self._state < _CLOSING:
                self._send(encode_frame(Opcode.CLOSE, encode_close(exc.code, reason)))
            self._finish(exc.code, reason, hang_up=True)

    def _feed_bounded(self, callback: Callable[[Any], Any], received: Any) -> None:
        """Queue what the client sent behind a slow callback, at most ``max_pending_messages``:
        messages, and pings and pongs for an ``on_ping``/``on_pong`` of the app's."""
        if len(self._events) >= self.max_pending_messages:
            raise FrameError(CloseCode.POLICY_VIOLATION, "too many messages waiting")
        self._feed(callback, received)

    def _pinged(self, data: bytes) -> Any:
        return self.on_ping(data) if self._opened else None  # never for a refused handshake

    def _ponged(self, data: bytes) -> Any:
        return self.on_pong(data) if self._opened else None

    def _deliver(self, message: str | bytes) -> Any:
        # A client may send before it saw the 101: its messages wait for open(), and are
        # dropped if the handshake was refused.
        return self.on_message(message) if self._opened else None

    def _close_received(self, payload: bytes) -> None:
        try:
            if len(payload) > MAX_CONTROL_PAYLOAD:  # as for a ping: no valid frame is longer
                raise FrameError(CloseCode.PROTOCOL_ERROR, f"a close frame of {len(payload)} bytes")
            code, reason = parse_close(payload)
            answer = b"" if code == CloseCode.NO_STATUS else encode_close(code)
        except FrameError as exc:
            code, reason = exc.code, exc.reason
            answer = encode_close(exc.code)
        if self._state < _CLOSING:
            self._send(encode_frame(Opcode.CLOSE, answer))
        self._finish(code, reason, hang_up=True)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        log.info("WebSocket %s: no answer to the close frame", self.conn_id.decode())
        self._finish(CloseCode.ABNORMAL, "", hang_up=True)

    def _connection_lost(self) -> None:
        """Mongrel2 says the client is gone (no close frame came)."""
        self._finish(CloseCode.ABNORMAL, "", hang_up=False)

    def _shutdown(self) -> None:
        """The app is stopping: close frame, hang up, ``on_close``, without waiting."""
        if self._state < _CLOSING and self._handshaken:
            self._send(encode_frame(Opcode.CLOSE, encode_close(CloseCode.GOING_AWAY)))
        self._finish(CloseCode.GOING_AWAY, "the server is stopping", hang_up=True)

    def _finish(self, code: int, reason: str, hang_up: bool) -> None:
        """End the connection once: stop timers, hang up, leave the registry, queue on_close."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self.close_code, self.close_reason = code, reason
        for timer in (self._idle_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._close_timer = None
        try:
            if hang_up and self._handshaken:
                self._flush()
            elif self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            self._buffer = []
            self._held = []
            if hang_up:
                self.application.send_to(self.request, b"")
        except BufferError as exc:  # Mongrel2 reads nothing: the close is lost, not the rest
            log.error("WebSocket %s: could not send its close: %s", self.conn_id.decode(), exc)
        finally:
            self.application.websockets.discard(self)
            self._feed(self._closed)

    def _closed(self) -> Any:
        if self._opened:
            return self.on_close(self.close_code or CloseCode.ABNORMAL, self.close_reason or "")
        return None

    def _max_size(self) -> int:
        if self.max_message_size is not None:
            return self.max_message_size
        return int(self.settings.get("websocket_max_message_size", 10 * 1024 * 1024))

    # Liveness: pings, and Mongrel2's keep-alive so its idle reaper spares quiet sockets

    def _ping_settings(self) -> tuple[float, float]:
        settings = self.settings
        interval = self.ping_interval
        if interval is None:
            interval = float(settings.get("websocket_ping_interval", 30.0))
        timeout = self.ping_timeout
        if timeout is None:
            timeout = float(settings.get("websocket_ping_timeout", 30.0))
        return interval, timeout

    def _schedule_idle_check(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(max(delay, 0.01), self._check_idle)

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _check_idle(self) -> None:
        """Ping a connection quiet for ``interval``; give it up after ``timeout`` unanswered."""
        self._idle_timer = None
        if self._state != _OPEN:
            return
        interval, timeout = self._ping_settings()
        now = asyncio.get_running_loop().time()
        sent = self._ping_sent
        if sent is not None and self._last_seen >= sent:  # anything from the client answers
            sent = self._ping_sent = None
        if sent is not None and timeout > 0 and now - sent >= timeout:
            log.info("WebSocket %s: no pong within %ss", self.conn_id.decode(), timeout)
            self._finish(CloseCode.ABNORMAL, "", hang_up=True)
            return
        next_check = interval - (now - self._last_seen)
        if next_check <= 0:
            try:
                self.ping()
                conn = self.application.msg_conn
                if conn is not None:
                    conn.ctl(self.request.sender, self.conn_id, keep_alive=True)
            except BufferError as exc:  # the checks go on: they time the connection out
                log.error("WebSocket %s: could not ping: %s", self.conn_id.decode(), exc)
            if sent is None:
                self._ping_sent = sent = now
            next_check = interval
        if sent is not None and timeout > 0:
            next_check = min(next_check, sent + timeout - now)
        self._schedule_idle_check(next_check)

    # Events, one at a time

    def _feed(self, step: Callable[..., Any], *args: Any) -> None:
        if self._busy:
            self._events.append((step, args))
            return
        try:
            result = step(*args)
        except Exception as exc:
            self._failed(step, exc)
            return
        if _is_awaitable(result):
            self._busy = True
            self.application.websockets.spawn(self._run_events(result, step))

    async def _run_events(self, pending: Awaitable[Any], step: Callable[..., Any]) -> None:
        try:
            try:
                await pending
            except Exception as exc:
                self._failed(step, exc)
            while self._events:
                step, args = self._events.popleft()
                try:
                    result = step(*args)
                    if _is_awaitable(result):
                        await result
                except Exception as exc:
                    self._failed(step, exc)
        finally:
            self._busy = False

    def _failed(self, step: Callable[..., Any], exc: Exception) -> None:
        # The app's own callback names, not the internal steps that call them.
        if step == self._deliver:
            name = "on_message"
        elif step == self._closed:
            name = "on_close"
        else:
            name = getattr(step, "__name__", "callback")
        log.error("%s.%s failed", type(self).__name__, name, exc_info=exc)
        if step != self._closed:
            self.close(CloseCode.INTERNAL_ERROR)

    # Output

    def _send(self, data: bytes) -> None:
        if not self._handshaken:
            self._held.append(data)
            return
        app = self.application
        if app.credit_window(self.request) is not None:  # flow control paces exactly
            app.send_to(self.request, data)
            return
        self._buffer.append(data)
        if self._flush_timer is None:  # else the frame joins those already waiting
            recent = self._recent
            loop = asyncio.get_running_loop()
            wait = recent[0] + PACE - loop.time() if len(recent) == BURST else 0.0
            if (
                wait <= 0
            ):  # at the end of this turn of the loop: what a callback writes is one message
                self._flush_timer = loop.call_soon(self._flush)
            else:
                self._flush_timer = loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        """Send the frames waiting for the pace, as one Mongrel2 message."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._buffer:
            data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
            self._buffer = []
            self._recent.append(asyncio.get_running_loop().time())
            self.application.send_to(self.request, data)

    @property
    def _sendable(self) -> bool:
        """Open, with nothing waiting for the pace: a broadcast may go straight to it."""
        return self._state == _OPEN and self._handshaken

    def __repr__(self) -> str:
        return f"<{type(self).__name__} conn={self.request.conn_id!r}>"


class _Answered(Exception):
    """``prepare`` finished a response of its own: send it instead of the 101."""

    def __init__(self, response: Response) -> None:
        super().__init__("answered by prepare")
        self.response = response


def _short(reason: str) -> str:
    """A close reason that fits a control frame."""
    data = reason.encode("utf-8")[: MAX_CONTROL_PAYLOAD - 2]
    return data.decode("utf-8", "ignore")
