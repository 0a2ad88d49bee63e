"""Request handlers: one instance per request, verb methods that may be ``def`` or ``async def``.

Rules of this module: a handler never touches a socket; it produces a ``Response`` (directly,
or through an awaitable when the handler awaits something) and the app sends it. A handler that
finishes without awaiting completes without an asyncio task. Every exception becomes an HTTP
error response; none escapes to the receive loop.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import sys
from collections.abc import Awaitable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .conditional import http_date
from .cookies import format_set_cookie, is_cookie_name
from .eager import SUSPENDS, value_now
from .errors import HTTPError
from .files import (
    FILE_HEADERS,
    INLINE_LIMIT,
    guess_type,
    open_file,
    plan_file,
    read_span,
    stream_span,
)
from .multipart import UploadedFile
from .request import Request
from .response import (
    ALREADY_SENT,
    DEFAULT_CONTENT_TYPE,
    FINAL_STATUSES,
    JSON_CONTENT_TYPE,
    Response,
    check_header,
    check_status,
    json_bytes,
    reason_phrase,
    to_body_bytes,
)
from .routing import HTTP_METHODS
from .security import (
    DEFAULT_MAX_AGE,
    Secrets,
    mask_xsrf_token,
    new_xsrf_token,
    same_token,
    sign_value,
    unmask_xsrf_token,
    valid_xsrf_token,
    verify_value,
)
from .streaming import ResponseStream, format_event

if TYPE_CHECKING:
    from .app import Brubeck

log = logging.getLogger("brubeck.handlers")

_new_object = object.__new__

ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
HandlerResult = Response | Awaitable[Response]

_REQUIRED: Any = object()
_LINE_BREAKS = str.maketrans("", "", "\r\n\0")
#: What ``redirect`` leaves as it is: the characters of URL syntax, and ``%`` (escapes).
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
UNSAFE_METHODS = frozenset(["POST", "PUT", "PATCH", "DELETE"])
XSRF_COOKIE = "_xsrf"
_VERB_NAMES = {method: method.lower() for method in HTTP_METHODS}
_FILE_HEADERS_BUT_DISPOSITION = FILE_HEADERS - {"content-disposition"}


def require_xsrf_token(request: Request) -> None:
    """403 unless the request echoes its ``_xsrf`` cookie (the double-submit pattern), as
    an ``X-XSRFToken`` (or ``X-CSRFToken``) header or an ``_xsrf`` argument.

    Handler classes run it through ``check_xsrf_cookie``; the app runs it itself before a
    function route, which has no handler to do so.
    """
    cookie = request.cookies.get(XSRF_COOKIE)
    headers = request.headers
    sent = headers.first("x-xsrftoken") or headers.first("x-csrftoken")
    if not sent:
        values = request.arguments.get(XSRF_COOKIE)
        sent = values[-1].strip() if values else None
    if not cookie or not sent or not same_token(cookie, unmask_xsrf_token(sent)):
        raise HTTPError(
            403,
            "missing or wrong XSRF token: send the _xsrf cookie's value "
            "as the _xsrf argument or the X-XSRFToken header",
        )


class MessageHandler:
    """The base of every handler class: state in, one ``Response`` out.

    Subclasses define ``get``, ``post``… (``def`` or ``async def``); the URL's named groups
    arrive as keyword arguments, unnamed groups as positional ones.

    Args:
        application: the ``Brubeck`` app, also ``self.application``.
        message: the ``Request``, also ``self.message`` and ``self.request``.
        **kwargs: the route's init kwargs, passed on to ``initialize``.
    """

    content_type = DEFAULT_CONTENT_TYPE
    #: Seconds (> 0) an awaiting handler may take before the client gets a 504; None: the
    #: app's ``request_timeout`` setting (300 by default).
    timeout: float | None = None
    #: True: behind Mongrel2's ``upload.stream=1``, a large body is not stored first; the
    #: handler runs at once and reads it with ``async for piece in self.request.body_stream``
    #: (docs/streaming.md).
    stream_request_body: bool = False

    # Response state: ``__init__`` sets the attributes every response reads; ``_stream`` stays
    # a class default until a handler streams.
    _status: int
    _reason: str | None
    _content_type: str | None
    _finished: bool
    _stream: ResponseStream | None = None
    #: ``JSONMessageHandler.add_to_payload``'s dict, sent as the body if nothing was written.
    #: ``render`` reads it here rather than in an override, which would cost every JSON
    #: response a ``super()`` call.
    _payload: dict[str, Any] | None = None

    def __init__(self, application: Brubeck, message: Request, **kwargs: Any) -> None:
        self.application = application
        self.message = message
        self._headers: list[tuple[str, str]] = []  # all but Content-Type
        self._body: list[bytes] = []
        # On the instance, not the class: Python 3.11 reads an instance attribute about three
        # times as fast as a class one, and every render reads these.
        self._status = 200
        self._reason = None
        self._content_type = None
        self._finished = False
        if kwargs or type(self).initialize is not _BASE_INITIALIZE:
            self.initialize(**kwargs)

    # Hooks

    def initialize(self, **kwargs: Any) -> None:
        """Receives the route's init kwargs; runs at construction."""
        for key, value in kwargs.items():
            setattr(self, key, value)

    def prepare(self) -> Awaitable[None] | None:
        """Runs before the verb method; may be async; raise ``HTTPError`` to refuse."""
        return None

    def on_finish(self) -> Awaitable[None] | None:
        """Runs after the response was handed to Mongrel2 (logging, cleanup); may be async."""
        return None

    def on_connection_close(self) -> Awaitable[None] | None:
        """The client went away while this handler was awaiting; its task is cancelled next."""
        return None

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The HTTP methods this class answers: those it defines a method for."""
        methods = [m for m in HTTP_METHODS if callable(getattr(cls, m.lower(), None))]
        if "GET" in methods and "HEAD" not in methods:
            methods.append("HEAD")
        return methods

    def static_url(self, name: str, include_version: bool = True) -> str:
        """The URL of a file in the app's ``static_path``, versioned by its content."""
        return self.application.static_url(name, include_version)

    # Request side

    @property
    def request(self) -> Request:
        return self.message

    @property
    def settings(self) -> dict[str, Any]:
        return self.application.settings

    def get_argument(self, name: str, default: Any = _REQUIRED, strip: bool = True) -> Any:
        """The last value of a query or form field (url-encoded or multipart); missing → 400."""
        values = self.message.arguments.get(name)
        if not values:
            if default is _REQUIRED:
                raise HTTPError(400, f"missing argument {name!r}")
            return default
        return values[-1].strip() if strip else values[-1]

    def get_arguments(self, name: str, strip: bool = True) -> list[str]:
        values = self.message.arguments.get(name, [])
        return [v.strip() for v in values] if strip else list(values)

    def get_file(self, name: str) -> UploadedFile | None:
        """The first file uploaded as ``name`` in a multipart form; ``request.files`` has all."""
        files = self.message.files.get(name)
        return files[0] if files else None

    def get_cookie(
        self,
        name: str,
        default: Any = None,
        secret: Secrets | None = None,
        max_age: float | None = DEFAULT_MAX_AGE,
    ) -> Any:
        """A cookie's value; with ``secret``, only if its signature is valid and not expired.

        ``secret`` may be a list (newest first) to accept values signed before a key rotation.
        """
        value = self.message.cookies.get(name)
        if value is None or secret is None:
            return default if value is None else value
        verified = verify_value(secret, name, value, max_age=max_age)
        return default if verified is None else verified

    def set_cookie(
        self,
        name: str,
        value: Any,
        secret: Secrets | None = None,
        *,
        max_age: int | None = None,
        expires: datetime | float | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "Lax",
    ) -> None:
        """Add a Set-Cookie header; with ``secret`` the value (any JSON) is signed.

        A signed cookie is tamper-evident, not secret: do not put secrets in it.
        """
        if secret is not None:
            value = sign_value(secret, name, value)
        elif not isinstance(value, str):
            value = str(value)
        self.add_header(
            "Set-Cookie",
            format_set_cookie(
                name,
                value,
                max_age=max_age,
                expires=expires,
                path=path,
                domain=domain,
                secure=secure,
                httponly=httponly,
                samesite=samesite,
            ),
        )

    # Cross-site request forgery: the double-submit cookie pattern

    #: Set False on handlers that authenticate otherwise (API tokens) to skip the XSRF check.
    check_xsrf = True

    @property
    def xsrf_token(self) -> str:
        """This client's XSRF token, masked afresh for each response (so a gzipped page does
        not give it away: BREACH); sets the ``_xsrf`` cookie the first time it is needed."""
        masked = getattr(self, "_xsrf_token", None)
        if masked is None:
            token = self.get_cookie(XSRF_COOKIE)
            if not token or not valid_xsrf_token(token):
                token = new_xsrf_token()
                # Secure over HTTPS: a network attacker cannot read it from plain HTTP then.
                secure = self.message.scheme == "https"
                self.set_cookie(XSRF_COOKIE, token, samesite="Lax", secure=secure)
            masked = self._xsrf_token = mask_xsrf_token(token)
        return masked

    def xsrf_form_html(self) -> str:
        """A hidden form field carrying the token, for HTML forms that POST back here."""
        return f'<input type="hidden" name="_xsrf" value="{self.xsrf_token}">'

    def check_xsrf_cookie(self) -> None:
        """Refuse (403) an unsafe request whose ``_xsrf`` argument or ``X-XSRFToken`` header
        does not match its ``_xsrf`` cookie; runs before ``prepare`` when the app's
        ``xsrf_cookies`` setting is on."""
        if self.check_xsrf:
            require_xsrf_token(self.message)

    def delete_cookie(self, name: str, path: str | None = "/", domain: str | None = None) -> None:
        """Tell the client to drop a cookie (same path and domain as it was set with).

        A ``__Secure-`` or ``__Host-`` cookie is dropped with ``Secure``: browsers ignore any
        Set-Cookie of such a name without it, and the cookie would outlive a logout.
        """
        secure = name.lower().startswith(("__secure-", "__host-"))  # any case (RFC 6265bis)
        self.set_cookie(name, "", max_age=0, expires=0, path=path, domain=domain, secure=secure)

    def delete_cookies(self, path: str | None = "/", domain: str | None = None) -> None:
        """Drop every cookie the client sent (but those no Set-Cookie header can name)."""
        for name in self.message.cookies:
            if is_cookie_name(name):
                self.delete_cookie(name, path=path, domain=domain)

    # Response side

    @property
    def status_code(self) -> int:
        return self._status

    def set_status(self, status_code: int, status_msg: str | None = None) -> None:
        if not isinstance(status_code, int) or status_code not in FINAL_STATUSES:
            check_status(status_code)
        if status_msg is not None and status_msg.translate(_LINE_BREAKS) != status_msg:
            raise ValueError(f"reason phrase has CR, LF or NUL: {status_msg!r}")
        self._status = status_code
        self._reason = status_msg

    def set_header(self, name: str, value: Any) -> None:
        """Set a header, replacing any value it had; a datetime becomes an HTTP date."""
        value = _header_value(name, value)
        lower = name.lower()
        if lower == "content-type":
            self._content_type = value
            return
        self._headers = [(n, v) for n, v in self._headers if n.lower() != lower]
        self._headers.append((name, value))

    def add_header(self, name: str, value: Any) -> None:
        """Add a header line, keeping earlier ones of the same name (e.g. ``Set-Cookie``)."""
        value = _header_value(name, value)
        if name.lower() == "content-type":
            self._content_type = value
            return
        self._headers.append((name, value))

    def clear_header(self, name: str) -> None:
        lower = name.lower()
        if lower == "content-type":
            self._content_type = None
            return
        self._headers = [(n, v) for n, v in self._headers if n.lower() != lower]

    def get_header(self, name: str, default: str | None = None) -> str | None:
        """A response header set so far (the last one, for a repeated name)."""
        lower = name.lower()
        if lower == "content-type":
            return self._content_type if self._content_type is not None else default
        for n, v in reversed(self._headers):
            if n.lower() == lower:
                return v
        return default

    def set_body(
        self,
        body: bytes | str | dict | list,
        headers: dict[str, str] | None = None,
        status_code: int | None = None,
    ) -> None:
        """Replace the body (the original Brubeck way)."""
        kind = type(body)
        if kind is str:
            self._body = [body.encode("utf-8")]  # type: ignore[union-attr]
        elif kind is bytes:
            self._body = [body]  # type: ignore[list-item]
        else:
            self._body = [to_body_bytes(body)]
            if isinstance(body, (dict, list)) and self._content_type is None:
                self._content_type = JSON_CONTENT_TYPE
        if headers:
            for name, value in headers.items():
                self.set_header(name, value)
        if status_code is not None:
            self.set_status(status_code)

    def write(self, chunk: bytes | str | dict | list) -> None:
        """Append to the body; a dict or list is written as JSON."""
        if self._finished:
            raise RuntimeError("write() after the response was finished")
        self._body.append(to_body_bytes(chunk))
        if isinstance(chunk, (dict, list)) and self._content_type is None:
            self._content_type = JSON_CONTENT_TYPE

    def redirect(self, url: str, permanent: bool = False, status: int | None = None) -> Response:
        """Answer with a redirect: 302, 301 when ``permanent``, or any 3xx ``status``.

        Characters a URL may not hold (non-ASCII, spaces, control characters) are sent
        percent-encoded as UTF-8: ``/tags/café`` leaves as ``/tags/caf%C3%A9``. Escapes
        already in ``url`` are kept.
        """
        status = status or (301 if permanent else 302)
        if not 300 <= status <= 399:
            raise ValueError(f"a redirect needs a 3xx status, got {status}")
        self.set_status(status)
        self.set_header("Location", quote(url, safe=_URL_SAFE))
        self._body = []
        return self.render()

    def send_error(
        self,
        status_code: int = 500,
        message: str | None = None,
        exc_info: ExcInfo | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Replace whatever was prepared with an error response built by ``write_error``.

        ``headers`` (an ``HTTPError``'s) are added after it; a ``Content-Type`` among them
        replaces the page's own. Cookies set before the error are kept; the body, the JSON
        payload and other headers are not: they were meant for a successful answer.
        """
        self._headers = [(n, v) for n, v in self._headers if n.lower() == "set-cookie"]
        self._content_type = None
        self._body = []
        self._payload = None
        self._finished = False
        self.set_status(status_code)
        self.write_error(status_code, exc_info=exc_info, message=message)
        if headers:
            for name, value in headers.items():
                self.add_header(name, value)
        return self.render()

    def write_error(
        self, status_code: int, exc_info: ExcInfo | None = None, message: str | None = None
    ) -> None:
        """Write the body of an error response; override for custom error pages."""
        phrase = reason_phrase(status_code)
        title = html.escape(f"{status_code} {phrase}")
        detail = f"<p>{html.escape(message)}</p>" if message else ""
        trace = ""
        if exc_info and exc_info[0] is not None and self.settings.get("debug"):
            import traceback

            trace = "<pre>" + html.escape("".join(traceback.format_exception(*exc_info))) + "</pre>"
        self.set_header("Content-Type", DEFAULT_CONTENT_TYPE)
        self.write(
            f"<!DOCTYPE html><html><head><title>{title}</title></head>"
            f"<body><h1>{title}</h1>{detail}{trace}</body></html>\n"
        )

    def render(self, status_code: int | None = None, **kwargs: Any) -> Response:
        """Finish: the response as prepared so far (what a verb method returns)."""
        if status_code is not None:
            self.set_status(status_code)
        self._finished = True
        content_type = ("Content-Type", self._content_type or self.content_type)
        headers = self._headers + [content_type]  # noqa: RUF005 - concatenation is faster here
        chunks = self._body
        if not chunks and self._payload:
            chunks = self._body = [json_bytes(self._payload)]
        # A Response from parts this handler already checked: no re-validation on the hot path.
        response = _new_object(Response)
        response.status = self._status
        response.reason = self._reason
        response.headers = headers
        response.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return response

    # Execution (called by the app)

    def execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> HandlerResult:
        """Run prepare and the verb method; a coroutine only if one of them awaited."""
        try:
            if self.application.xsrf_cookies and self.message.method in UNSAFE_METHODS:
                self.check_xsrf_cookie()
            if type(self).prepare is not _BASE_PREPARE:  # the base one does nothing
                prepared = self.prepare()
                if (
                    prepared is not None
                    and value_now(prepared) is SUSPENDS
                    and hasattr(prepared, "__await__")
                ):
                    return self._execute_async(prepared, args, kwargs)
            if self._finished:
                return self._prepared_answer()
            verb = self._verb()
            result = verb(*args, **kwargs) if args or kwargs else verb()
            if type(result) is Response:
                self._finished = True
                return result
            if result is not None:
                value = value_now(result)
                if value is not SUSPENDS:
                    result = value
                elif hasattr(result, "__await__"):
                    return self._finish_async(result)
            return self._complete(result)
        except Exception as exc:
            return self.handle_exception(exc)

    async def _execute_async(
        self, prepared: Awaitable[None], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Response:
        try:
            await prepared
            if self._finished:
                return self._prepared_answer()
            result = self._verb()(*args, **kwargs)
            if result is not None and hasattr(result, "__await__"):
                result = await result
            return await self._end(result)
        except Exception as exc:
            return self.handle_exception(exc)

    def _prepared_answer(self) -> Response:
        """``prepare`` answered: what it rendered, or nothing more if it streamed and ended."""
        return ALREADY_SENT if self._stream is not None else self.render()

    async def _finish_async(self, pending: Awaitable[Any]) -> Response:
        try:
            return await self._end(await pending)
        except Exception as exc:
            return self.handle_exception(exc)

    async def _end(self, result: Any) -> Response:
        if self._stream is None:
            return self._complete(result)
        if isinstance(result, Response):
            rest = result.body
        else:
            if result is not None:
                self._body.append(to_body_bytes(result))
            rest = self._take_body()
        await self._stream.finish(rest)
        self._finished = True
        return ALREADY_SENT

    # Streaming (async handlers only)

    def _take_body(self) -> bytes:
        chunks, self._body = self._body, []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def flush(self) -> None:
        """Send what was written so far; the first flush sends the status line and headers.

        Waits while the client is behind, so a producer cannot outrun it. After the first
        flush, status and headers are final; the response ends when the verb method returns
        (or at ``finish()``).
        """
        if self._stream is None:
            if not self.application.may_stream(self.message):
                return  # an earlier pipelined request is still being answered: keep buffering
            headers = [*self._headers, ("Content-Type", self._content_type or self.content_type)]
            self._stream = ResponseStream(
                self.application, self.message, self._status, self._reason, headers
            )
        await self._stream.write(self._take_body())

    async def finish(self) -> None:
        """End a streamed response now (returning from the verb method does it too)."""
        if self._stream is not None:
            await self._stream.finish(self._take_body())
            self._finished = True

    async def send_event(
        self,
        data: str | bytes | dict | list,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        """Send one Server-Sent Event (``text/event-stream``); dicts and lists go as JSON."""
        if self._stream is None and self._content_type is None:
            self._content_type = "text/event-stream; charset=utf-8"
            self.set_header("Cache-Control", "no-cache")
        if isinstance(data, (dict, list)):
            data = to_body_bytes(data)
        self._body.append(format_event(data, event, id, retry))
        await self.flush()

    async def send_file(
        self,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        download_name: str | None = None,
    ) -> Response:
        """Answer with a file: ``return await self.send_file(path)`` from an async verb.

        It sends ``ETag``, ``Last-Modified`` and ``Accept-Ranges``, answers 304 and 412 by the
        client's conditions, and one byte range with a 206 (a 416 past the end). With ``root``,
        ``path`` is a name inside that directory (a route parameter, say) that cannot lead out
        of it. A missing file is a 404. ``download_name`` makes it an attachment under that name.
        Headers set before (Cache-Control, cookies) go with it. Large files are streamed.
        """
        if self._stream is not None:
            raise RuntimeError("send_file must be the whole response, and a stream started")
        request = self.message
        handle, status = open_file(path, root)
        with handle:
            plan = plan_file(
                request.raw_headers,
                request.method,
                status,
                content_type or guess_type(path),  # the name asked for, not a link's target
                download_name,
                # A file sent whole may be gzipped: then the app makes the 304, with the
                # headers gzip gives the 200 (a weak tag, Vary, no Accept-Ranges).
                whole_if_fresh=self.application.compresses and status.st_size <= INLINE_LIMIT,
            )
            owned = FILE_HEADERS if download_name is not None else _FILE_HEADERS_BUT_DISPOSITION
            headers = [h for h in self._headers if h[0].lower() not in owned] + plan.headers
            self._finished = True
            if plan.status == 304:
                return Response(b"", 304, headers)
            if plan.length <= INLINE_LIMIT:
                body = await read_span(handle, plan.start, plan.length)
                if len(body) != plan.length:
                    raise RuntimeError(f"{handle.name} shrank while being read")
                return Response(body, plan.status, headers)
            while not self.application.may_stream(request):  # a pipelined answer goes first
                await asyncio.sleep(0.005)
            self._stream = ResponseStream(
                self.application, request, plan.status, None, headers, plan.length
            )
            if request.method == "HEAD":
                await self._stream.finish()
            else:
                await stream_span(self._stream, handle, plan.start, plan.length)
        return ALREADY_SENT

    def abort_stream(self) -> bool:
        """Close the connection of a stream that cannot end normally; False if none started."""
        if self._stream is None:
            return False
        self._stream.abort()
        return True

    def _verb(self) -> Any:
        """The verb method for the request's method: ``get`` answers HEAD too; else a 405."""
        method = self.message.method
        verb = getattr(self, _VERB_NAMES.get(method, ""), None)  # "" names no attribute
        if verb is None and method == "HEAD":
            verb = getattr(self, "get", None)
        if verb is None:
            raise HTTPError(405, headers={"Allow": ", ".join(self.allowed_methods())})
        return verb

    def _complete(self, result: Any) -> Response:
        if isinstance(result, Response):
            self._finished = True
            return result
        if result is not None:
            self.set_body(result)
        return self.render()

    def handle_exception(self, exc: Exception) -> Response:
        """Turn an exception into an error response; log the unexpected ones with a traceback."""
        if self._stream is not None:
            log.error(
                "%s failed after its response started; closing the connection",
                type(self).__name__,
                exc_info=exc,
            )
            self._stream.abort()
            return ALREADY_SENT
        try:
            if isinstance(exc, HTTPError):
                return self.send_error(exc.status, exc.message, headers=exc.headers)
            log.error(
                "uncaught exception in %s for %r", type(self).__name__, self.message, exc_info=exc
            )
            return self.send_error(500, exc_info=sys.exc_info())
        except Exception:
            log.exception("write_error of %s failed; answering a bare 500", type(self).__name__)
            return Response(b"500 Internal Server Error\n", 500, content_type="text/plain")


def _header_value(name: str, value: Any) -> str:
    """A header value as text, checked: a datetime becomes an HTTP date, anything else str()."""
    text = http_date(value) if isinstance(value, datetime) else str(value)
    check_header(name, text)
    return text


_BASE_INITIALIZE = MessageHandler.initialize
_BASE_PREPARE = MessageHandler.prepare


class WebMessageHandler(MessageHandler):
    """A handler for web pages: HTML by default."""


class JSONMessageHandler(MessageHandler):
    """A handler for JSON APIs: ``add_to_payload`` builds the body, errors are JSON too."""

    content_type = JSON_CONTENT_TYPE

    def add_to_payload(self, key: str, value: Any) -> None:
        """Set a key of the JSON object ``render`` sends when nothing else was written."""
        payload = self._payload
        if payload is None:
            payload = self._payload = {}
        payload[key] = value

    def write_error(
        self, status_code: int, exc_info: ExcInfo | None = None, message: str | None = None
    ) -> None:
        self._payload = {}
        error: dict[str, Any] = {"status": status_code, "reason": reason_phrase(status_code)}
        if message:
            error["message"] = message
        if exc_info and exc_info[0] is not None and self.settings.get("debug"):
            import traceback

            error["traceback"] = traceback.format_exception(*exc_info)
        self.set_header("Content-Type", JSON_CONTENT_TYPE)
        self.write({"error": error})


def render(
    body: bytes | str | dict | list = b"",
    status_code: int = 200,
    status_msg: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A response from a function handler (the original Brubeck signature)."""
    return Response(body, status_code, headers, reason=status_msg)


def as_response(result: Any) -> Response:
    """What a function handler returned, as a response: str/bytes → 200 HTML, dict/list → JSON."""
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(b"", 204)
    if isinstance(result, (bytes, str, dict, list)):
        return Response(result)
    raise TypeError(
        f"a handler function must return a Response, str, bytes, dict, list or None, "
        f"not {type(result).__name__}"
    )
