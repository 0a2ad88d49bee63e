"""Log output for ``brubeck run``: plain lines or one JSON object a line, with request ids.

Why: an error is only useful next to the request it broke; a log collector wants fields, not
prose. Records that mention a ``Request`` in their arguments (the app's own error logs do)
get its id, so a traceback can be matched with its access-log line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import ujson

from .access import ACCESS_FIELDS, ACCESS_LOGGER, AccessRecord
from .request import Request

__all__ = ["JSONFormatter", "PlainFormatter", "RequestIdFilter", "log_handler", "setup_logging"]

LEVELS = ("debug", "info", "warning", "error")


class RequestIdFilter(logging.Filter):
    """Set ``record.request_id`` from the first ``Request`` among the record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None and isinstance(record.args, tuple):
            for arg in record.args:
                if isinstance(arg, Request):
                    record.request_id = arg.request_id
                    break
        return True


class _SecondCache:
    """Format the time of records once a second, not once a record."""

    def __init__(self, pattern: str, convert: Any) -> None:
        self.pattern = pattern
        self.convert = convert
        self.second = -1
        self.text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self.second:
            self.second = second
            self.text = time.strftime(self.pattern, self.convert(second))
        return self.text


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger[pid]: message``, then `` request_id=...`` when the record has one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
        self._seconds = _SecondCache("%Y-%m-%d %H:%M:%S", self.converter)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return f"{self._seconds(record.created)},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if type(record) is AccessRecord:  # the one line per request: the short way
            when = self.formatTime(record)
            return f"{when} INFO {record.name}[{record.process}]: {record.getMessage()}"
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None and not getattr(record, "access", False):
            head, sep, rest = text.partition("\n")  # before any traceback
            text = f"{head} request_id={request_id}{sep}{rest}"
        return text


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, pid, then message or access fields."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if getattr(record, "access", False) and isinstance(record.args, tuple):
            out.update(zip(ACCESS_FIELDS, record.args, strict=False))
            if isinstance(out.get("duration_ms"), float):
                out["duration_ms"] = round(out["duration_ms"], 3)
            for name in ("status", "bytes"):
                if out.get(name) == "-":
                    out[name] = None
        else:
            out["message"] = record.getMessage()
            request_id = getattr(record, "request_id", None)
            if request_id is not None:
                out["request_id"] = request_id
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return ujson.dumps(out, ensure_ascii=False, escape_forward_slashes=False)


def log_handler(*, json_logs: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in Brubeck's plain or JSON format."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if json_logs else PlainFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def setup_logging(
    level: str | int = "info",
    *,
    json_logs: bool = False,
    access_log: bool = False,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in one format; returns the handler.

    Replaces the root logger's handlers. With ``access_log`` the access logger logs at INFO
    whatever ``level`` is: asking for the access log means wanting its lines.
    """
    handler = log_handler(json_logs=json_logs, stream=stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access_log else logging.NOTSET)
    return handler
