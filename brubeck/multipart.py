"""``multipart/form-data`` bodies (RFC 7578): form fields and uploaded files, both ways.

Rules of this module:
- sans I/O: the whole body is already in memory (Mongrel2 sends it inline); parsing walks it
  with ``bytes.find`` from one delimiter to the next, never byte by byte in Python;
- a part is a file when its Content-Disposition has a ``filename`` (even an empty one, which
  is what a browser sends for a file input left empty), otherwise a field, decoded as UTF-8
  unless its Content-Type names another ``charset`` (RFC 7578 4.4);
- names and filenames are unescaped as clients escape them: ``\\"`` and ``\\\\`` inside quotes,
  and the HTML standard's ``%22``, ``%0D``, ``%0A``; ``filename*=UTF-8''…`` wins over
  ``filename``;
- malformed input raises ``HTTPError(400)`` saying what is wrong, a limit exceeded raises
  ``HTTPError(413)`` naming the setting; no other exception escapes ``parse_multipart``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .errors import HTTPError

FIELD_CONTENT_TYPE = "text/plain"
FILE_CONTENT_TYPE = "application/octet-stream"

_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN = re.compile(_TOKEN_CHARS)
# One "; name=value" parameter; a quoted value may hold ';' and backslash-escaped quotes.
# Every quantifier is possessive: with backtracking, a value of many spaces before a stray
# quote took cubic time.
_PARAM = re.compile(
    r";[ \t]*+((?>" + _TOKEN_CHARS + r"))[ \t]*+=[ \t]*+"
    r'(?:"((?:[^"\\]|\\.)*+)"|([^;"]*+))[ \t]*+(?=;|\Z)',
    re.DOTALL,
)
# Only \\ and \" are unescaped: a lone backslash is kept (browsers send Windows paths raw).
_QUOTED_PAIR = re.compile(r'\\([\\"])')
_HTML_ESCAPE = re.compile(r"%(22|0[dD]|0[aA])")
_HTML_UNESCAPED = {"22": '"', "0d": "\r", "0a": "\n"}
# A bare CR or LF in a header line would smuggle another header line into a value.
_CONTROL = re.compile(r"[\r\n]")
# RFC 2046 bchars: 1 to 70 of them, and not ending with a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


@dataclass(slots=True, repr=False)
class UploadedFile:
    """One file of a multipart form, in memory like the body it came in.

    ``filename`` is what the client claims: never use it as a path without sanitising it.
    """

    name: str
    filename: str
    content_type: str
    body: bytes

    @property
    def size(self) -> int:
        return len(self.body)

    def __repr__(self) -> str:
        return (
            f"UploadedFile(name={self.name!r}, filename={self.filename!r}, "
            f"content_type={self.content_type!r}, size={self.size})"
        )


Fields = dict[str, list[str]]
Files = dict[str, list[UploadedFile]]


def _bad(problem: str) -> HTTPError:
    return HTTPError(400, f"malformed multipart/form-data body: {problem}")


def parse_params(value: str, what: str) -> tuple[str, dict[str, str]]:
    """Split ``type; a=1; b="x"`` into the lower-cased type and its lower-cased parameters."""
    value = value.rstrip(" \t;")
    end = value.find(";")
    main = value if end < 0 else value[:end]
    params: dict[str, str] = {}
    pos = len(main)
    while pos < len(value):
        match = _PARAM.match(value, pos)
        if match is None:
            raise HTTPError(400, f"malformed parameters in the {what}: {value[pos:][:100]!r}")
        name = match[1].lower()
        if name in params:
            raise HTTPError(400, f"the {what} repeats its {name!r} parameter")
        quoted = match[2]
        params[name] = match[3].strip() if quoted is None else _QUOTED_PAIR.sub(r"\1", quoted)
        pos = match.end()
    return main.strip().lower(), params


def parse_boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header value; missing → 400."""
    _, params = parse_params(content_type, "Content-Type header")
    boundary = params.get("boundary")
    if boundary is None:
        raise HTTPError(
            400,
            "multipart/form-data needs a boundary: 'Content-Type: multipart/form-data; "
            "boundary=...'",
        )
    if not _BOUNDARY.fullmatch(boundary):
        raise HTTPError(
            400,
            f"invalid multipart boundary {boundary[:100]!r}: it must be 1 to 70 letters, digits "
            "or '()+_,-./:=? and spaces, not ending with a space (RFC 2046)",
        )
    return boundary.encode("ascii")


def parse_multipart(
    body: bytes, boundary: bytes, *, max_parts: int, max_fields_size: int
) -> tuple[Fields, Files]:
    """Fields and files of a multipart body, each name mapped to all its values in order.

    Args:
        body: the whole request body.
        boundary: from ``parse_boundary``.
        max_parts: more parts than this → 413.
        max_fields_size: more bytes than this in the fields' values (files excluded) → 413.
    """
    dash = b"--" + boundary
    delimiter = b"\r\n" + dash
    shown = dash.decode("latin-1")
    if body.startswith(dash):
        pos = len(dash)
    else:
        found = body.find(delimiter)
        if found < 0:
            raise _bad(f"no line {shown!r} (the boundary its Content-Type announces)")
        pos = found + len(delimiter)
    fields: Fields = {}
    files: Files = {}
    parts = 0
    fields_size = 0
    while True:
        # pos is just after a delimiter: "--" closes the body (an epilogue may follow),
        # anything else must be optional padding and the CRLF before the next part.
        if body.startswith(b"--", pos):
            return fields, files
        newline = body.find(b"\n", pos)
        if newline < 0:
            raise _bad(f"it ends without the closing line '{shown}--'")
        if body[newline - 1 : newline] != b"\r" or body[pos : newline - 1].strip(b" \t"):
            junk = body[pos : newline + 1][:40]
            raise _bad(f"a boundary line is followed by {junk!r} instead of CRLF")
        parts += 1
        if parts > max_parts:
            raise HTTPError(
                413, f"the form has more than {max_parts} parts (the max_form_parts setting)"
            )
        start = newline + 1
        end = body.find(delimiter, start)
        if end < 0:
            raise _bad(f"it ends without the closing line '{shown}--'")
        name, filename, content_type, content = _part(body, start, end, parts)
        if filename is None:
            fields_size += len(content)
            if fields_size > max_fields_size:
                raise HTTPError(
                    413,
                    f"the form's fields hold more than {max_fields_size} bytes "
                    "(the max_form_fields_size setting); send large values as files",
                )
            text = _field_text(name, content_type, content)
            fields.setdefault(name, []).append(text)
        else:
            files.setdefault(name, []).append(UploadedFile(name, filename, content_type, content))
        pos = end + len(delimiter)


def _part(body: bytes, start: int, end: int, index: int) -> tuple[str, str | None, str, bytes]:
    """Name, filename, content type and content of the part in ``body[start:end]``."""
    if body.startswith(b"\r\n", start):
        head = b""
        content_start = start + 2
    else:
        # Searching into the delimiter's own CRLF finds the end of the headers of a part
        # that has no content at all.
        head_end = body.find(b"\r\n\r\n", start, end + 2)
        if head_end < 0:
            raise _bad(f"part {index} has no blank line between its headers and its content")
        head = body[start:head_end]
        content_start = min(head_end + 4, end)
    headers = _headers(head, index)
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise _bad(f"part {index} has no Content-Disposition header")
    what = f"Content-Disposition of part {index}"
    try:
        kind, params = parse_params(disposition, what)
    except HTTPError as exc:
        raise _bad(str(exc.message)) from None
    if kind != "form-data":
        raise _bad(f"the {what} is {kind!r}, not 'form-data'")
    name = params.get("name")
    if name is None:
        raise _bad(f'part {index} has no name (Content-Disposition: form-data; name="...")')
    filename = params.get("filename")
    extended = params.get("filename*")
    if extended is not None:
        filename = _extended_value(extended, what)
    elif filename is not None:
        filename = _html_unescape(filename)
    content_type = headers.get("content-type") or (
        FIELD_CONTENT_TYPE if filename is None else FILE_CONTENT_TYPE
    )
    return _html_unescape(name), filename, content_type, body[content_start:end]


def _field_text(name: str, content_type: str, content: bytes) -> str:
    """A field's value, decoded with its Content-Type's ``charset`` or else as UTF-8."""
    charset = "UTF-8"
    if "charset" in content_type.lower():
        try:
            charset = parse_params(content_type, f"Content-Type of field {name!r}")[1].get(
                "charset", charset
            )
        except HTTPError as exc:
            raise _bad(str(exc.message)) from None
    try:
        return content.decode(charset)
    except LookupError:
        raise _bad(f"field {name!r} has an unknown charset {charset[:40]!r}") from None
    except UnicodeDecodeError:
        raise _bad(f"field {name!r} is not valid {charset[:40]}") from None


def _headers(head: bytes, index: int) -> dict[str, str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"the headers of part {index} are not valid UTF-8") from None
    headers: dict[str, str] = {}
    if not text:
        return headers
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
            raise _bad(f"part {index} has a malformed header line {line[:100]!r}")
        key = name.lower()
        if key in headers:
            raise _bad(f"part {index} repeats its {name} header")
        headers[key] = value.strip(" \t")
    return headers


def _extended_value(value: str, what: str) -> str:
    """An RFC 8187 ``charset'language'percent-encoded`` value (UTF-8 or ISO-8859-1)."""
    charset, _, rest = value.partition("'")
    _, sep, encoded = rest.partition("'")
    if not sep or charset.lower() not in ("utf-8", "iso-8859-1"):
        raise _bad(f"the {what} has a filename* that is not UTF-8''percent-encoded: {value!r}")
    try:
        return unquote(encoded, encoding=charset.lower(), errors="strict")
    except UnicodeDecodeError:
        raise _bad(f"the filename* of the {what} is not valid {charset}") from None


def _html_unescape(value: str) -> str:
    if "%" not in value:
        return value
    return _HTML_ESCAPE.sub(lambda m: _HTML_UNESCAPED[m[1].lower()], value)


def _escape(value: str) -> str:
    value = value.replace("\\", "\\\\")
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


FileSpec = bytes | tuple[str, bytes] | tuple[str, bytes, str] | UploadedFile


def encode_multipart(
    fields: Mapping[str, Any] | None = None,
    files: Mapping[str, FileSpec | list[FileSpec]] | None = None,
    boundary: str | None = None,
) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type value, as a browser would send them.

    A field value may be a list (the name is repeated), ``bytes`` (sent as they are) or
    anything else (sent as ``str(value)`` in UTF-8); a file is ``bytes``,
    ``(filename, bytes)``, ``(filename, bytes, content_type)`` or an ``UploadedFile``.
    A ``boundary`` starting a line of the content, or not valid, or a content type holding CR or LF,
    is a ``ValueError``.
    """
    chunks: list[bytes] = []
    for name, value in (fields or {}).items():
        for item in value if isinstance(value, list) else [value]:
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            chunks.append(_disposition(name, None, None) + data)
    for name, value in (files or {}).items():
        for spec in value if isinstance(value, list) else [value]:
            filename, data, ctype = _file_spec(name, spec)
            chunks.append(_disposition(name, filename, ctype) + data)
    if boundary is None:
        boundary = secrets.token_hex(16)
        while any(boundary.encode() in chunk for chunk in chunks):
            boundary = secrets.token_hex(16)
    elif not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"invalid multipart boundary {boundary[:100]!r} (RFC 2046)")
    elif any(b"\r\n--" + boundary.encode() in chunk for chunk in chunks):
        raise ValueError(f"the boundary {boundary!r} starts a line of the content: pick another")
    dash = b"--" + boundary.encode("ascii")
    body = b"".join(dash + b"\r\n" + chunk + b"\r\n" for chunk in chunks) + dash + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def _file_spec(name: str, spec: FileSpec) -> tuple[str, bytes, str]:
    if isinstance(spec, UploadedFile):
        return spec.filename, spec.body, spec.content_type
    if isinstance(spec, bytes):
        return name, spec, FILE_CONTENT_TYPE
    if len(spec) == 2:
        return spec[0], spec[1], FILE_CONTENT_TYPE
    return spec  # type: ignore[return-value]


def _disposition(name: str, filename: str | None, content_type: str | None) -> bytes:
    head = f'Content-Disposition: form-data; name="{_escape(name)}"'
    if filename is not None:
        if _CONTROL.search(str(content_type)):
            raise ValueError(f"CR or LF in the content type {content_type!r}")
        head += f'; filename="{_escape(filename)}"\r\nContent-Type: {content_type}'
    return head.encode("utf-8") + b"\r\n\r\n"
