"""The application: routes, settings, and the dispatch of Mongrel2 messages to handlers.

Rules of this module:
- ``handle_message`` is the hot path and is synchronous: a handler that does not await is
  run to completion and answered inline; only a handler that awaits becomes an asyncio task;
- nothing raised while handling one message stops the receive loop: malformed messages are
  logged and dropped, handler errors become error responses;
- at most ``max_in_flight`` requests run at once; past that the loop stops reading, so the
  rest wait in ZeroMQ's queues (and Mongrel2 routes new work to other processes);
- a request is answered only in the epoch it arrived in: once Mongrel2 goes away, the next
  one gives its connection ids to new clients, so the old epoch's requests end unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import copy_context
from time import perf_counter
from types import SimpleNamespace
from typing import Any

from .access import AccessHook, access_hook
from .awaiting import AwaitingRequests, logged
from .compression import accepts_gzip, compressor, gzip_level
from .conditional import answer as answer_conditional
from .conditional import with_etag
from .connection import Mongrel2Connection
from .eager import SUSPENDS, value_now
from .errors import HTTPError
from .handlers import UNSAFE_METHODS, MessageHandler, WebMessageHandler, require_xsrf_token
from .inflight import InFlight
from .loops import event_loop_factory, run_until_signal
from .ordering import AnswerOrder
from .protocol import (
    NOTICE_PATH,
    Message,
    ProtocolError,
    decimal,
    format_address,
    format_reply,
    header_text,
    parse_fields,
)
from .request import BodyLimits, Request, connection_policy, framing_problem
from .response import ALREADY_SENT, Response, encode_response
from .routing import Route, Router
from .static import StaticFileHandler, StaticFiles, StaticVersions
from .streamed_uploads import STREAM, StreamedUploads
from .streaming import CreditWindow, CreditWindows
from .uploads import DONE, START, check_upload_start, finished_upload, overran, upload_stage
from .wsregistry import WEBSOCKET_METHODS, WebSocketRegistry

log = logging.getLogger("brubeck.app")

Hook = Callable[[], Any]

# A module global: Python 3.11 specializes reading one, not reading a class's attribute.
_request_from_fields = Request.from_fields


def _own_parameters(target: Any, is_class: bool) -> set[str]:
    """Names a route's groups cannot take: ``self`` of a verb method, or the ``application``
    and ``message`` parameters of a function (whatever they are called)."""
    if is_class:
        return {"self"}
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin): nothing to check
        return set()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name for p in parameters[:2] if p.kind in positional}


def _is_str(value: object) -> bool:
    return isinstance(value, str)


class Brubeck(AwaitingRequests):
    """A Brubeck application.

    Args:
        msg_conn: the ``Mongrel2Connection`` requests arrive on and replies leave by.
        handler_tuples: ``(pattern, handler)`` or ``(pattern, handler, init_kwargs)`` routes.
        settings: app-wide options, read by handlers as ``self.settings``
            (``debug``, ``cookie_secret``, ``login_url``…); ``max_body_size``,
            ``max_form_parts`` and ``max_form_fields_size`` are read once, into ``body_limits``.
        error_handler: the handler class whose ``write_error`` renders 404, 405 and errors
            of function routes.
        max_in_flight: the most requests handled at once by this process.
        shutdown_timeout: seconds a graceful stop waits for requests in flight.
        **options: merged into ``settings`` (the original Brubeck's keyword style).
    """

    # Slots keep the attributes the hot path reads fast whatever an app adds: an instance
    # dict of 30 keys or more stops sharing its keys, and then every ``self.x`` of the
    # request path is a slower lookup (about 560 instructions per request). Apps may still
    # set attributes of their own: instances keep a ``__dict__`` (the base class has one).
    __slots__ = (
        "_access_log",
        "_addresses",
        "_compress",
        "_etags",
        "_held",
        "_inflight",
        "_on_shutdown",
        "_on_startup",
        "_order",
        "_receiver",
        "_shaping",
        "_stopping",
        "_streams",
        "_tasks",
        "_timed_out",
        "_to_owner",
        "_windows",
        "body_limits",
        "epoch",
        "error_handler",
        "max_in_flight",
        "msg_conn",
        "request_timeout",
        "router",
        "settings",
        "shutdown_timeout",
        "state",
        "static_files",
        "static_versions",
        "stream_gzip_level",
        "websockets",
        "xsrf_cookies",
    )

    def __init__(
        self,
        msg_conn: Mongrel2Connection | None = None,
        handler_tuples: Iterable[tuple[Any, ...]] = (),
        *,
        settings: dict[str, Any] | None = None,
        error_handler: type[MessageHandler] = WebMessageHandler,
        max_in_flight: int = 10_000,
        shutdown_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self.msg_conn = msg_conn
        self.router = Router()
        self.settings: dict[str, Any] = {**(settings or {}), **options}
        self.body_limits = BodyLimits.from_settings(self.settings)
        self.state = SimpleNamespace()
        self.error_handler = error_handler
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        if not 0 <= shutdown_timeout < math.inf:  # NaN too: a stop would never end
            raise ValueError(
                f"shutdown_timeout must be finite seconds >= 0, got {shutdown_timeout!r}"
            )
        self.shutdown_timeout = shutdown_timeout
        self._on_startup: list[Hook] = []
        self._on_shutdown: list[Hook] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held: deque[bytes] | None = None
        self._receiver: Callable[[bytes], None] = self.handle_message
        #: Pipelined answers leave in request order.
        self._order = AnswerOrder(self.respond)
        self._inflight = InFlight()
        self._timed_out: set[asyncio.Task[Any]] = set()
        #: seconds an awaiting handler may run (checked every second); handler.timeout wins
        self.request_timeout = float(self.settings.get("request_timeout", 300))
        if not self.request_timeout > 0:  # NaN too: no request would ever time out
            raise ValueError(f"request_timeout must be seconds > 0, got {self.request_timeout!r}")
        #: unsafe methods must echo the ``_xsrf`` cookie (``MessageHandler.check_xsrf_cookie``)
        self.xsrf_cookies = bool(self.settings.get("xsrf_cookies", False))
        self._windows = CreditWindows()
        #: Reply heads (``SENDER LEN:ID, ``) by (sender, connection id): keep-alive connections
        #: ask for the same one again and again, and formatting it costs more than a lookup.
        self._addresses: dict[tuple[bytes, bytes], bytes] = {}
        #: Bumped each time Mongrel2 goes away: a new one numbers its connections from 1
        #: again, so a request of an older epoch (``request.epoch``) is never answered.
        self.epoch = 0
        self._stopping: asyncio.Event | None = None
        #: The WebSocket connections this process owns, their rooms and broadcasts.
        self.websockets = WebSocketRegistry(self)
        #: Bodies Mongrel2 sends in pieces (``upload.stream=1``), by connection id.
        self._streams = StreamedUploads(self)
        self._access_log: AccessHook | None = None  # set by serve() from the settings
        #: gzip and computed ETags (``compress_response``, ``etag``), set by serve() too
        self._compress: Callable[[Request, Response], Response] | None = None
        #: gzip's level for chunked streams of text (not event streams), or None: off
        self.stream_gzip_level: int | None = None
        self._etags = False
        #: either of them is on: every response goes through _shape (else only conditional ones)
        self._shaping = False
        #: Set by serve() when Mongrel2 runs download flow control and several processes share
        #: its connections: every message then goes to its connection's owner (see serve).
        self._to_owner: Any = None
        for rule in handler_tuples:
            if not 2 <= len(rule) <= 3:
                raise ValueError(
                    f"a handler tuple is (pattern, handler) or (pattern, handler, kwargs); "
                    f"got {rule!r}"
                )
            init_kwargs = rule[2] if len(rule) == 3 else {}
            if not (isinstance(init_kwargs, Mapping) and all(map(_is_str, init_kwargs))):
                raise TypeError(
                    f"a handler tuple's third item is a dict of init kwargs by name; got {rule!r}"
                )
            self._add_route(rule[0], rule[1], None, None, dict(init_kwargs))
        #: Content hashes for ``static_url`` and ``StaticFileHandler``'s ``?v=``.
        self.static_versions = StaticVersions()
        #: ``static_path`` / ``static_url_prefix``: served before every other route.
        self.static_files = StaticFiles.from_settings(self.settings, self.static_versions)
        if self.static_files is not None:
            self._add_route(
                self.static_files.pattern,
                StaticFileHandler,
                None,
                None,
                {"root": self.static_files.root},
                first=True,
            )

    @property
    def cookie_secret(self) -> Any:
        """``settings["cookie_secret"]``: a secret, or a list of them newest first.

        Without the setting this raises rather than give None: ``get_cookie(name,
        secret=None)`` reads a cookie unsigned, so a forgotten setting would let any client
        forge a signed cookie's value (``Cookie: user=admin``).
        """
        secret = self.settings.get("cookie_secret")
        if not secret:
            raise RuntimeError(
                "the cookie_secret setting is not set: signed cookies need it "
                '(Brubeck(..., cookie_secret="a long random string"))'
            )
        return secret

    # Routes

    def add_route_rule(
        self,
        pattern: str,
        target: Any,
        method: str | Iterable[str] | None = None,
        name: str | None = None,
        **init_kwargs: Any,
    ) -> Route:
        """Route ``pattern`` to a handler class or function; first added, first tried."""
        return self._add_route(pattern, target, method, name, init_kwargs)

    def _add_route(
        self,
        pattern: str,
        target: Any,
        method: str | Iterable[str] | None,
        name: str | None,
        init_kwargs: dict[str, Any],
        first: bool = False,
    ) -> Route:
        """``add_route_rule`` with the init kwargs as a dict: any key is theirs, even ``name``."""
        check_xsrf = True
        if not (isinstance(target, type) and issubclass(target, MessageHandler)):
            if isinstance(target, type) or not callable(target):
                raise TypeError(
                    f"a route target is a MessageHandler subclass or a function, got {target!r}"
                )
            init_kwargs = dict(init_kwargs)
            check_xsrf = bool(init_kwargs.pop("check_xsrf", True))  # a handler's attribute
            if init_kwargs:
                raise TypeError("init kwargs are for handler classes, not functions")
        route = Route(pattern, target, method, name, init_kwargs)
        taken = set(route.regex.groupindex) & _own_parameters(target, route.is_class)
        if taken:  # else every request that matches would be a TypeError, a 500
            raise ValueError(
                f"route {pattern!r}: the group name {', '.join(sorted(taken))} is taken by "
                f"{getattr(target, '__name__', target)}'s own arguments; rename the group"
            )
        self.router.add_route(route, first=first)
        route.finishes = route.is_class and target.on_finish is not MessageHandler.on_finish
        route.check_xsrf = check_xsrf
        return route

    def add_route(
        self,
        pattern: str,
        method: str | Iterable[str] | None = None,
        name: str | None = None,
        *,
        check_xsrf: bool = True,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: route ``pattern`` to ``f(application, message, *args, **kwargs)``.

        With the ``xsrf_cookies`` setting on, its POST, PUT, PATCH and DELETE requests must
        carry the XSRF token as a handler class's do; ``check_xsrf=False`` skips that (for
        routes that authenticate otherwise, such as API tokens).
        """

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            self._add_route(pattern, func, method or ["GET"], name, {"check_xsrf": check_xsrf})
            return func

        return decorate

    def reverse_url(self, name: str, /, *args: Any, **kwargs: Any) -> str:
        return self.router.reverse(name, *args, **kwargs)

    def static_url(self, name: str, include_version: bool = True) -> str:
        """The URL of a file in ``static_path``, versioned by its content (``?v=``) so that
        browsers may cache it for a year; see docs/http.md."""
        if self.static_files is None:
            raise RuntimeError(
                "static_url needs the static_path setting: Brubeck(..., static_path='static')"
            )
        return self.static_files.url(name, include_version)

    # Lifespan

    def on_startup(self, func: Hook) -> Hook:
        """Register a sync or async function to run before the first request."""
        self._on_startup.append(func)
        return func

    def on_shutdown(self, func: Hook) -> Hook:
        """Register a sync or async function to run after the last request."""
        self._on_shutdown.append(func)
        return func

    # The hot path

    def handle_message(self, raw: bytes) -> None:
        """Parse, route, run and answer one raw message from Mongrel2."""
        try:
            sender, conn_id, path, headers, body = parse_fields(raw)
        except ProtocolError as exc:
            log.warning("dropped a malformed message from Mongrel2 (%d bytes): %s", len(raw), exc)
            return
        if path == NOTICE_PATH:
            self.handle_notice(Message(sender, conn_id, path, headers, body))
            return
        conn = self.msg_conn
        if conn is not None and conn.sender_id is None:
            conn.sender_id = sender
        declared = b"content-length" in headers
        if declared or b"transfer-encoding" in headers:  # a body: Mongrel2 may spool or stream it
            stage = upload_stage(headers, body) if START in headers else None
            streamed = STREAM in headers
            misframed = framing_problem(headers)
        else:
            stage, streamed, misframed = None, False, None
        try:
            request = _request_from_fields(
                sender, conn_id, path, headers, body, self.body_limits, self.epoch
            )
        except (TypeError, AttributeError, IndexError, KeyError):
            log.warning("dropped a message on %r: its METHOD header is not a string", path)
            return
        if self._access_log is not None:
            request.started = perf_counter()
        if b"DOWNLOAD_CREDITS" in headers and conn_id not in self._windows:
            self._windows.open(conn_id, headers[b"DOWNLOAD_CREDITS"])
        method = request.method
        if misframed is not None and method:  # (a streamed upload's pieces have no METHOD)
            done = headers.get(DONE)
            if done is not None and done == headers.get(START):  # its done notice: refused at
                # its start already (upload_stage does not know such framing); the file goes
                with contextlib.suppress(HTTPError):
                    finished_upload(headers, self._run_dir()).discard()
                return
            self._refuse_and_close(request, misframed)
            return
        # Mongrel2's upload.stream=1: a first message announces a body, the pieces after it
        # have no METHOD. Once the last piece is in, its request goes on from here.
        if streamed or (not method and STREAM in headers):
            request = self._streams.handle(request, raw)  # type: ignore[assignment]
            if request is None:
                return
            path, method, declared = request.raw_path, request.method, False
        if stage is not None:
            if stage != "done":
                self._upload_started(request, forged=stage == "forged")
                return
            try:
                upload = finished_upload(headers, self._run_dir())
            except HTTPError as exc:
                self._order.deliver(request, self.error_response(request, exc))
                return
            request.set_upload(upload)
            if overran(upload, headers):  # the next request went into it: it cannot be answered
                _close_after(request)
        if method in WEBSOCKET_METHODS:  # one set lookup: cheaper than testing a prefix first
            self.websockets.handle(request, raw)
            return
        found = self.router.cache.get((method, path))
        try:
            if declared:
                request.check_content_length()
            if found is None:
                if method in ("JSON", "XML") or not method:
                    log.warning("dropped a %r message on %r: not an HTTP request", method, path)
                    return
                found = self._route(request)
            route, args, kwargs = found
            target = route.target
            if route.is_class:
                if route.init_kwargs:
                    handler = target(self, request, **route.init_kwargs)
                else:
                    handler = target(self, request)
                result: Any = handler.execute(args, kwargs)
            else:
                handler = None
                if route.check_xsrf and self.xsrf_cookies and method in UNSAFE_METHODS:
                    require_xsrf_token(request)
                result = target(self, request, *args, **kwargs)
                if result is not None:
                    value = value_now(result)
                    if value is not SUSPENDS:
                        result = value
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # any Exception, or CancelledError from a future's result()
            # Past here it would stop this batch of messages, and this client get no answer.
            self._order.deliver(request, self.error_response(request, exc))
            return
        if isinstance(result, Response):
            self._order.deliver(request, result)
            if handler is not None and route.finishes:
                self._on_finish(handler)
        elif handler is not None or inspect.isawaitable(result):
            self._start_task(request, result, handler)
        else:
            self._order.deliver(request, self._function_response(request, result))

    def _handle_owned(self, raw: bytes) -> None:
        """``handle_message`` for processes that pass each connection's messages to its owner
        (download flow control with several processes): a separate entry, so that the usual
        one pays nothing for it."""
        parts = raw.split(b" ", 3)
        if len(parts) < 4 or decimal(parts[1]) is None or self._to_owner.owns(parts[1]):
            self.handle_message(raw)  # its own, or malformed: handled (or refused) here
            return
        sender, conn_id, path = parts[0], parts[1], parts[2]
        if self._to_owner.pass_on(conn_id, raw) or path == NOTICE_PATH:
            return
        assert self.msg_conn is not None  # the owner is down: answer for it
        self.msg_conn.send_raw(format_reply(sender, conn_id, _OWNER_UNAVAILABLE))
        self.msg_conn.send_raw(format_reply(sender, conn_id, b""))

    def _route(self, request: Request) -> tuple[Route, tuple[str, ...], dict[str, str]]:
        """Match a request the route cache does not know; raises 404 or 405."""
        method = request.method
        route, args, kwargs, allowed = self.router.match(method, request.path)
        if route is None:
            if allowed:
                allow = ", ".join(sorted(allowed))
                raise HTTPError(405, f"{method} is not allowed here", {"Allow": allow})
            raise HTTPError(404, f"nothing here at {request.path}")
        found = (route, args, kwargs)
        self.router.remember(method, request.raw_path, found)
        return found

    def respond(self, request: Request, response: Response) -> None:
        """Frame a response for the request's connection, then close it if HTTP says so."""
        if request.epoch != self.epoch:
            self._drop_stale(request)
            return
        raw = request.raw_headers
        if (
            self._shaping or b"if-none-match" in raw or b"if-modified-since" in raw
        ) and response is not ALREADY_SENT:
            response = self._shape(request, response)
        if self._access_log is not None:
            response = self._access_log(request, response)
        if response is ALREADY_SENT:
            if request.upload is not None:
                request.upload.discard()
            return
        connection, close = connection_policy(request)
        conn = self.msg_conn
        if conn is None:
            raise RuntimeError("this Brubeck app has no msg_conn to answer through")
        cid = request.conn_id
        windowed = cid in self._windows if self._windows else False
        # Mongrel2's address goes first, in the same copy as the response (not windowed: a
        # window splits the bytes, each piece with its own address).
        envelope = (
            b""
            if windowed
            else self._addresses.get((request.sender, cid)) or self._address(request.sender, cid)
        )
        try:
            data = encode_response(
                response.status,
                response.headers,
                response.body,
                response.reason,
                request.method == "HEAD",
                connection,
                envelope,
            )
        except ValueError as exc:
            log.error("could not encode the response to %r: %s", request, exc)
            data = envelope + Response(
                b"500 Internal Server Error\n", 500, content_type="text/plain"
            ).encode(connection=connection)
        # A body Mongrel2 still reads on credit ignores a close: its discard() cancels instead.
        if close and getattr(request.upload, "holds_connection", False):
            close = False
        try:
            if windowed:
                self.send_to(request, data)
                if close:
                    self.send_to(request, b"")
            else:
                conn.send_raw(data)
                if close:
                    conn.close_connection(request)
        except BufferError as exc:  # Mongrel2 has read nothing for a long while: say so, go on
            log.error("dropped the answer to %r: %s", request, exc)
        if request.upload is not None:
            request.upload.discard()

    def _shape(self, request: Request, response: Response) -> Response:
        """gzip, a computed ETag, then a 304 if the client's copy is current (conditional.py)."""
        if self._compress is not None:
            response = self._compress(request, response)
        if response.status == 200:
            if self._etags:
                response = with_etag(request.method, response)
            response = answer_conditional(request.raw_headers, request.method, response)
        return response

    def _address(self, sender: bytes, conn_id: bytes) -> bytes:
        """Format and remember a reply head; ids are reused, so the table stays small."""
        if len(self._addresses) >= 4096:
            self._addresses.clear()
        address = self._addresses[sender, conn_id] = format_address(sender, conn_id)
        return address

    def send_to(self, request: Request, data: bytes) -> None:
        """Send bytes to a request's connection, within its credit window if it has one."""
        if request.epoch != self.epoch:
            self._drop_stale(request)
            return
        assert self.msg_conn is not None
        conn, sender, cid = self.msg_conn, request.sender, request.conn_id
        window = self._windows.get(cid) if self._windows else None
        if window is None:
            conn.send_raw(format_reply(sender, cid, data))
        else:
            epoch = self.epoch

            def send(piece: bytes) -> None:
                if self.epoch == epoch:  # a later Mongrel2 gives this id to another client
                    conn.send_raw(format_reply(sender, cid, piece))
                    # The close: Mongrel2 sends no disconnect notice for a connection its
                    # handler closed, and the next client with this id has its own credits.
                    if not piece and self._windows.get(cid) is window:
                        del self._windows[cid]  # (not close(): this runs inside its drain)

            window.send(send, data)

    @property
    def compresses(self) -> bool:
        """Whether complete responses may be gzipped (``compress_response``, once serving)."""
        return self._compress is not None

    def may_stream(self, request: Request) -> bool:
        """Whether a streamed response may start: no earlier pipelined answer is pending."""
        return self._order.may_stream(request)

    def credit_window(self, request: Request) -> CreditWindow | None:
        """The connection's credit window when Mongrel2 runs with download flow control."""
        return self._windows.get(request.conn_id) if self._windows else None

    def deliver(self, requests: Iterable[Request], response: Response) -> int:
        """Answer many waiting requests with one response, 128 connections per message.

        Returns how many were answered. Requests are grouped by how HTTP frames their answer
        (HEAD, HTTP/1.0, Connection: close, and under ``compress_response`` whether they take
        gzip), so each group's bytes are encoded once. Requests
        of a Mongrel2 that went away are skipped: their ids may now be other clients'.
        """
        assert self.msg_conn is not None
        groups: dict[tuple[str | None, bool, bool, bytes, bool], list[Request]] = {}
        count = 0
        epoch = self.epoch
        compress = self._compress
        for request in requests:
            if request.epoch != epoch:
                self._drop_stale(request)
                continue
            connection, close = connection_policy(request)
            # With compress_response, clients that take gzip get it, the others the same
            # answer as it is: one more group, not one encoding per client.
            gzip = compress is not None and accepts_gzip(
                header_text(request.raw_headers, b"accept-encoding") or ""
            )
            key = (connection, close, request.method == "HEAD", request.sender, gzip)
            groups.setdefault(key, []).append(request)
            count += 1
        for (connection, close, head, sender, _), members in groups.items():
            shaped = response if compress is None else compress(members[0], response)
            data = shaped.encode(head=head, connection=connection)
            ids = [request.conn_id for request in members]
            self.msg_conn.deliver(sender, ids, data)
            if close:
                self.msg_conn.close_connections(sender, ids)
        return count

    def error_response(self, request: Request, exc: BaseException) -> Response:
        """The response for an exception raised outside a handler class (routing, functions)."""
        exc_info: Any = None
        if not isinstance(exc, HTTPError):
            log.error("uncaught exception for %r", request, exc_info=exc)
            exc_info = (type(exc), exc, exc.__traceback__)
            exc = HTTPError(500)
        try:
            handler = self.error_handler(self, request)
            response = handler.send_error(
                exc.status, exc.message, exc_info=exc_info, headers=exc.headers
            )
        except Exception:
            # Raised out of here, nothing would answer: the client would wait for Mongrel2.
            log.exception(
                "%s could not render a %d; answering a bare 500",
                self.error_handler.__name__,
                exc.status,
            )
            return Response(b"500 Internal Server Error\n", 500, content_type="text/plain")
        return response

    def handle_notice(self, message: Any) -> None:
        """Mongrel2's own notices: a client went away, or download credits arrived."""
        kind = message.notice_type()
        if kind == "credits":
            self._windows.credit(message.conn_id, message.headers.get(b"DOWNLOAD_CREDITS"))
        elif kind == "disconnect":
            log.debug("connection %s closed by the client", message.conn_id.decode())
            self.connection_closed(message.conn_id)
        elif kind != "credits":
            log.warning(
                "dropped an unknown Mongrel2 notice on %s: %r", message.conn_id, message.body[:80]
            )

    def _upload_started(self, request: Request, forged: bool = False) -> None:
        """Accept an upload (say nothing) or refuse it now (answer, close: Mongrel2 deletes it)."""
        try:
            if forged:
                raise HTTPError(400, "X-Mongrel2-Upload-Done is Mongrel2's header, not a client's")
            check_upload_start(self, request)
        except Exception as exc:
            self._refuse_and_close(request, exc)  # the close makes Mongrel2 drop the upload

    def _run_dir(self) -> str:
        """Where Mongrel2's reported upload paths are resolved (``mongrel2_run_dir``)."""
        return self.settings.get("mongrel2_run_dir") or os.getcwd()

    def _refuse_and_close(self, request: Request, exc: BaseException) -> None:
        """Answer with the error for ``exc``, then close: the close goes with the answer, which
        waits behind the answers to earlier pipelined requests on the connection."""
        _close_after(request)
        self._order.deliver(request, self.error_response(request, exc))

    def connection_closed(self, conn_id: bytes) -> None:
        """The client is gone: tell its handlers (``on_connection_close``), then cancel them."""
        self.websockets.connection_closed(conn_id)
        self._forget_connection(conn_id)

    def _forget_connection(self, conn_id: bytes) -> None:
        self._drop_held(conn_id)  # its requests that wait for a slot: nobody to answer
        if self._streams:
            self._streams.forget(conn_id)
        for request in self._order.forget(conn_id):  # answered, but queued behind another
            if request.upload is not None:
                request.upload.discard()
        self._windows.close(conn_id)
        for task, handler in self._inflight.pop_connection(conn_id):
            if handler is not None:
                stream = handler._stream
                if stream is not None:  # its pace timer would still send what it holds
                    stream.drop()
                try:
                    pending = handler.on_connection_close()
                except Exception:
                    log.exception("%s.on_connection_close failed", type(handler).__name__)
                else:
                    if pending is not None and inspect.isawaitable(pending):
                        self._spawn(logged(pending, "on_connection_close"))
            task.cancel()

    def _mongrel2_lost(self, queued: int, unsent: int) -> None:
        """Mongrel2 went away (``Mongrel2Connection.on_lost``): end the epoch.

        Its clients' TCP connections died with it, and the next Mongrel2 gives their ids to
        new clients; so every request of the old epoch ends without an answer, as if each
        client had disconnected, and whatever holds it can no longer send for it.
        """
        assert self.msg_conn is not None
        self.epoch = self.msg_conn.epoch
        in_progress = len(self._inflight)
        queued += len(self._held or ())
        self._drop_held()
        websockets = self.websockets.mongrel2_lost()
        uploads = self._streams.close_all()
        for conn_id in {*self._inflight.conn_ids(), *self._order.queues}:
            self._forget_connection(conn_id)
        self._windows.close_all()
        self._timed_out.clear()  # cancelled by this, not by their timeout: no 504
        log.warning(
            "Mongrel2 went away (stopped or restarted): dropped %d requests in progress, "
            "%d WebSockets, %d streamed uploads, %d queued requests and %d unsent replies of its "
            "clients (a new Mongrel2 gives their connection ids to new clients)",
            in_progress,
            websockets,
            uploads,
            queued,
            unsent,
        )

    def _drop_stale(self, request: Request) -> None:
        if request.epoch >= 0:  # log once per request
            log.info("not sending to %r: its Mongrel2 went away", request)
            request.epoch = -1
        if request.upload is not None:
            request.upload.discard()

    # Running

    async def serve(self) -> None:
        """Serve until ``stop()``, then finish the requests in flight and close."""
        if self.msg_conn is None:
            raise RuntimeError(
                "Brubeck(msg_conn=Mongrel2Connection(pull_addr, pub_addr)) is needed"
            )
        self._stopping = asyncio.Event()
        self._access_log = access_hook(self.settings)
        # Read again: a setting given after the app was built must not leave XSRF off.
        self.xsrf_cookies = bool(self.settings.get("xsrf_cookies", self.xsrf_cookies))
        keepalive = float(self.settings.get("keepalive_interval", 60))
        if not 0 < keepalive < math.inf:  # 0 would spin, sending keep-alives without end
            raise ValueError(f"keepalive_interval must be seconds > 0, got {keepalive!r}")
        self._compress = compressor(self.settings)
        self.stream_gzip_level = gzip_level(self.settings)
        self._etags = bool(self.settings.get("etag", False))
        self._shaping = self._compress is not None or self._etags
        for hook in self._on_startup:
            await _maybe_await(hook())
        # Credits are counted per connection, in the process that saw its first request; with
        # several processes, every message of a connection must then reach that one.
        if self.websockets.ownership is not None and _flow_control(self.settings):
            self._to_owner = self.websockets.ownership
            log.info("download flow control: each connection's messages go to its owner")
        self.msg_conn.on_lost = self._mongrel2_lost
        self.epoch = self.msg_conn.epoch
        self.msg_conn.open()
        self._receiver = self.handle_message if self._to_owner is None else self._handle_owned
        self.msg_conn.start_reading(self._receiver)
        keep_alive = asyncio.get_running_loop().create_task(self._housekeeping(keepalive))
        try:
            await self._stopping.wait()
        finally:
            keep_alive.cancel()
            # Requests ZeroMQ already queued for this process are answered, not dropped.
            for raw in [*self._take_held(), *self.msg_conn.stop_receiving()]:
                self._handlelogged(raw)
            # Their remaining pieces would come to a process that is gone: answer them now.
            await self._streams.end_all(HTTPError(503, "the server is restarting; send it again"))
            await self._drain()
            for hook in self._on_shutdown:
                try:
                    await _maybe_await(hook())
                except Exception:
                    log.exception("an on_shutdown hook failed")
            await self.msg_conn.close()

    def _handlelogged(self, raw: bytes) -> None:
        try:
            copy_context().run(self._receiver, raw)  # a context of its own, as when served
        except Exception:
            log.exception("dropped a message: handling it failed")

    def stop(self) -> None:
        """Stop taking requests; ``serve`` then finishes the ones in flight."""
        if self._stopping is not None:
            self._stopping.set()

    def run(self, loop: str | None = None) -> None:
        """Serve in a new event loop until SIGINT or SIGTERM.

        ``loop`` (default: the ``event_loop`` setting, else ``"asyncio"``) picks the event
        loop: ``"asyncio"``, ``"uvloop"`` (the ``brubeck[uvloop]`` extra), or ``"auto"``
        (uvloop when it is installed).
        """
        factory = event_loop_factory(loop or self.settings.get("event_loop") or "asyncio")

        async def serve() -> None:
            log.info(
                "Brubeck serving: pulling from %s, publishing to %s",
                self.msg_conn.pull_addr if self.msg_conn else "?",
                self.msg_conn.pub_addr if self.msg_conn else "?",
            )
            await self.serve()

        run_until_signal(serve, self.stop, factory)


#: The answer to a request whose connection's owner process is not reading.
_OWNER_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 47\r\n"
    b"Connection: close\r\n\r\nthe process that owns this connection is down\r\n"
)


def _flow_control(settings: dict[str, Any]) -> bool:
    """Whether Mongrel2 runs download flow control: the ``download_flow_control`` setting, or
    else ``download.flow_control`` in ``mongrel2_settings``."""
    if "download_flow_control" in settings:
        return bool(settings["download_flow_control"])
    wanted = settings.get("mongrel2_settings") or {}
    return isinstance(wanted, dict) and str(wanted.get("download.flow_control", 0)) == "1"


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _close_after(request: Request) -> None:
    """Close the connection after this request's answer, in its turn among pipelined ones."""
    request.raw_headers[b"connection"] = b"close"
    request._headers = None  # read again, with the close
