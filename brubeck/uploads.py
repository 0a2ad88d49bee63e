"""Mongrel2's async uploads: a large or chunked request body arrives as a file, not bytes.

The flow (MONGREL2.md §A7): message one carries ``x-mongrel2-upload-start: PATH`` and no body;
Mongrel2 streams the body into PATH; message two carries both ``-start`` and ``-done``. Only
message two is answered; answering message one with an error (and a close) refuses the upload,
and Mongrel2 then deletes the file.

Rules of this module: a reported path is resolved inside Mongrel2's run directory (its chroot)
or refused; a real notice always has an empty body for a body the client announced; a client's
own ``X-Mongrel2-Upload-Done`` header (Mongrel2 1.12 passes it on in the start notice, and
replaces it only in the done notice) refuses the upload with a 400 at once, so that one request
never gets two answers; an upload's file is deleted after the response unless the handler kept
it, and a body stream left half read is closed then either way.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import HTTPError
from .request import declares_over

if TYPE_CHECKING:
    from .app import Brubeck
    from .request import Request
    from .routing import Route

START = b"x-mongrel2-upload-start"
DONE = b"x-mongrel2-upload-done"

log = logging.getLogger("brubeck.app")


def upload_stage(headers: dict[bytes, Any], body: bytes) -> str | None:
    """``"start"``, ``"done"``, ``"forged"`` (a start notice with a done header the client
    sent), or None when the message is no (genuine) upload notice."""
    start = headers.get(START)
    if start is None or body or not announces_body(headers):
        return None
    done = headers.get(DONE)
    if done is None:
        return "start"
    return "done" if done == start else "forged"


def announces_body(headers: dict[bytes, Any]) -> bool:
    """Whether the client announced a body: a real upload notice always comes with one."""
    length = headers.get(b"content-length")
    if isinstance(length, bytes):
        digits = length.strip()
        if digits.isdigit() and digits.strip(b"0"):  # nonzero; int() raises past 4300 digits
            return True
    encoding = headers.get(b"transfer-encoding")
    return isinstance(encoding, bytes) and b"chunked" in encoding.lower()


def resolve_reported_path(root: Path, path: str) -> Path:
    """Map a path Mongrel2 reports inside its chroot to the real file under ``root``.

    Raises:
        ValueError: the path would leave ``root``.
    """
    root = Path(os.path.normpath(root))
    resolved = Path(os.path.normpath(root / path.lstrip("/")))
    if resolved == root or root not in resolved.parents:
        raise ValueError(f"{path!r} resolves outside Mongrel2's run directory {root}")
    return resolved


class Upload:
    """The file a request body was streamed into; deleted after the response unless kept."""

    __slots__ = ("_closers", "_kept", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._kept = False
        #: what must close before the file goes: a body stream left half read
        self._closers: list[Callable[[], None]] = []

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def open(self) -> IO[bytes]:
        return self.path.open("rb")

    def read(self) -> bytes:
        return self.path.read_bytes()

    def save_as(self, destination: str | os.PathLike[str]) -> Path:
        """Move the file to ``destination`` (it is then yours, and not deleted)."""
        target = Path(shutil.move(str(self.path), os.fspath(destination)))
        self.path = target  # size, read() and request.body still describe the file
        self._kept = True
        return target

    def keep(self) -> None:
        """Leave the file where it is after the response; deleting it is then up to you."""
        self._kept = True

    def close_on_discard(self, close: Callable[[], None]) -> None:
        self._closers.append(close)

    def discard(self) -> None:
        """After the response: close what still reads the file, then delete it unless kept."""
        closers, self._closers = self._closers, []
        for close in closers:
            close()
        if not self._kept:
            self.path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"<Upload {self.path}>"


def check_upload_start(app: Brubeck, request: Request) -> Route:
    """The route of the upload announced by ``request``; raises ``HTTPError`` if it must be
    refused now.

    Refused: no route (404) or no method (405) for it, a body over ``max_upload_size`` or a
    handler whose ``accept_upload()`` returns False (413). Nothing is spooled for those.
    """
    route, _, _, allowed = app.router.match(request.method, request.path)
    if route is None:
        if allowed:
            raise HTTPError(405, headers={"Allow": ", ".join(sorted(allowed))})
        raise HTTPError(404, f"nothing here at {request.path}")
    limit = int(app.settings.get("max_upload_size", 1 << 30))
    length = request.raw_headers.get(b"content-length")
    # Stripped as announces_body strips it.
    if isinstance(length, bytes) and declares_over(length.strip(), limit):
        raise HTTPError(413, f"uploads are limited to {limit} bytes")
    accept = getattr(route.target, "accept_upload", None) if route.is_class else None
    if accept is not None:
        handler = route.target(app, request, **route.init_kwargs)
        if handler.accept_upload() is False:
            raise HTTPError(413, "this upload was refused")
    return route


def finished_upload(headers: dict[bytes, Any], run_dir: str) -> Upload:
    """The upload a done notice reports, checked: raises ``HTTPError`` (400, 500) if it is not
    one Mongrel2 wrote inside ``run_dir``."""
    start, done = headers.get(START), headers.get(DONE)
    if not isinstance(done, bytes) or start != done:
        raise HTTPError(400, "the upload's start and done notices disagree")
    try:
        upload = Upload(resolve_reported_path(Path(run_dir), done.decode("latin-1")))
    except ValueError as exc:
        log.error("refused an upload path: %s", exc)
        raise HTTPError(400, "bad upload path") from None
    if not upload.path.is_file():
        log.error("upload file %s is missing: is mongrel2_run_dir right?", upload.path)
        raise HTTPError(500, "the uploaded file is missing")
    return upload


def overran(upload: Upload, headers: dict[bytes, Any]) -> bool:
    """Cut the file to its declared length if it holds more; True if it did.

    Mongrel2 1.12 writes a request pipelined right after a spooled body into the same file:
    the handler would read it as the end of the body, and the client wait for its answer.
    """
    declared = headers.get(b"content-length")
    if not isinstance(declared, bytes) or not (digits := declared.strip()).isdigit():
        return False  # chunked: Mongrel2 wrote the de-chunked body, whatever its length
    if len(digits) > 18:  # more than any file holds (and more than int() reads past 4300)
        return False
    length = int(digits)
    if upload.size <= length:
        return False
    log.warning(
        "upload %s holds %d bytes for a Content-Length of %d (a request pipelined after "
        "it?): cut to its length, and the connection closed",
        upload.path,
        upload.size,
        length,
    )
    os.truncate(upload.path, length)
    return True
