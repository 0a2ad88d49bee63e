"""Request ids and the access log: one line per answered request, nearly free when off.

Rules of this module:
- nothing here runs for a request unless the app serves with the ``access_log`` or
  ``request_id_header`` setting: the app's hot path only checks whether its hook is None;
- a request id is made on first read, never before: the client's ``X-Request-Id`` when it is
  short and plain, else a random per-process prefix and a counter (no syscall, no uuid);
- it must not import ``request`` (which imports it) nor anything that touches sockets.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from .response import ALREADY_SENT, NO_BODY, Response, check_header

__all__ = [
    "ACCESS_FIELDS",
    "ACCESS_LOGGER",
    "AccessHook",
    "AccessRecord",
    "access_hook",
    "new_request_id",
    "request_id_from",
]

ACCESS_LOGGER = "brubeck.access"

#: The fields of an access-log line, in the order of its plain-text form.
ACCESS_FIELDS = ("remote_addr", "method", "path", "status", "bytes", "duration_ms", "request_id")
_PLAIN = '%s "%s %s" %s %s %.2fms %s'

# Ids a client may choose: what log lines and headers can carry without quoting.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:+/=@-]{1,128}")


def _fresh_source() -> tuple[str, itertools.count[int]]:
    return os.urandom(4).hex(), itertools.count(1)


_prefix, _counter = _fresh_source()


def _reseed() -> None:
    global _prefix, _counter, _pid
    _prefix, _counter = _fresh_source()
    _pid = os.getpid()


# A forked child must not repeat its parent's ids.
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """A new id, unique across processes with high probability: ``"9f1c03ab-42"``."""
    return f"{_prefix}-{next(_counter)}"


def request_id_from(headers: Mapping[bytes, Any]) -> str:
    """The id a client sent in ``X-Request-Id`` if it is sane, else a new one."""
    value = headers.get(b"x-request-id")
    if isinstance(value, list):
        value = value[0] if value else None
    if type(value) is bytes and _SANE_ID.fullmatch(value):
        return value.decode("ascii")
    return new_request_id()


class AccessHook:
    """What the app does with each response it hands to ZeroMQ, when asked to.

    It logs one line to the ``brubeck.access`` logger (``log``) and adds the request id as a
    response header (``header``). Status and size are ``"-"`` for responses the handler
    streamed itself; ``bytes`` counts the body, as the client receives it (none for HEAD).
    """

    __slots__ = ("header", "log", "logger")

    def __init__(self, *, log: bool = True, header: str | None = None) -> None:
        if header is not None:
            check_header(header, "")
        self.log = log
        self.header = header
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def __call__(self, request: Any, response: Response) -> Response:
        if self.header is not None and response is not ALREADY_SENT:
            # A handler may return one Response object many times: add to a copy.
            response = _with_header(response, self.header, request.request_id)
        if self.log and self.logger.isEnabledFor(logging.INFO):
            self.write(request, response)
        return response

    def write(self, request: Any, response: Response) -> None:
        status: Any
        size: Any
        if response is ALREADY_SENT:
            status = size = "-"
        else:
            status = response.status
            # what goes out: no body for HEAD, nor for the statuses that never carry one
            bodiless = request.method == "HEAD" or status in NO_BODY or status == 205
            size = 0 if bodiless else len(response.body)
        started = getattr(request, "started", None)
        duration = (perf_counter() - started) * 1000 if started is not None else 0.0
        fields = (
            request.remote_addr or "-",
            request.method,
            _loggable(request.raw_path),
            status,
            size,
            duration,
            request.request_id,
        )
        self.logger.handle(AccessRecord(fields))


def _loggable(path: bytes) -> str:
    """The path as one unambiguous field of a line: quotes and control bytes escaped.

    Mongrel2 refuses such request lines itself; this holds for any other front end too.
    """
    text = path.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def stream_headers(app: Any, request: Any, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A streamed response's headers with the request id, when the app sends it: the head
    leaves before the hook sees the response."""
    hook = app._access_log
    if hook is None or hook.header is None:
        return headers
    return [*headers, (hook.header, request.request_id)]


class AccessRecord(logging.LogRecord):
    """The log record of one access-log line, made in a few assignments.

    ``LogRecord.__init__`` works out the caller's file, the process name and more for every
    record: for one record per request that is most of the cost. The fields that never change
    are copied from one dict (formatters read ``record.__dict__``, so they must be there).
    ``args`` are the ``ACCESS_FIELDS`` values, in order.
    """

    def __init__(self, fields: tuple[Any, ...]) -> None:  # no super(): that is the point
        self.__dict__.update(_FIXED)
        self.args = fields
        self.request_id = fields[-1]
        now = time.time()
        self.created = now
        self.msecs = (now - int(now)) * 1000
        self.relativeCreated = (now - _START) * 1000
        self.process = _pid
        self.thread = threading.get_ident()
        self.threadName = threading.current_thread().name


_FIXED: dict[str, Any] = {
    "name": ACCESS_LOGGER,
    "msg": _PLAIN,
    "levelno": logging.INFO,
    "levelname": "INFO",
    "pathname": "(access)",
    "filename": "(access)",
    "module": "access",
    "lineno": 0,
    "funcName": None,
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "processName": "MainProcess",
    "taskName": None,
    "access": True,
}

_pid = os.getpid()
_START: float = getattr(logging, "_startTime", time.time())  # as LogRecord measures


def _with_header(response: Response, name: str, value: str) -> Response:
    copy = Response.__new__(Response)
    copy.status = response.status
    copy.reason = response.reason
    copy.body = response.body
    copy.headers = [*response.headers, (name, value)]
    return copy


def access_hook(settings: Mapping[str, Any]) -> AccessHook | None:
    """The hook an app's settings ask for (``access_log``, ``request_id_header``), or None."""
    log = bool(settings.get("access_log", False))
    header = settings.get("request_id_header")
    if header is True:
        header = "X-Request-Id"
    elif not header:
        header = None
    elif not isinstance(header, str):
        raise ValueError(f"request_id_header must be a header name or True, got {header!r}")
    if not log and header is None:
        return None
    return AccessHook(log=log, header=header)
