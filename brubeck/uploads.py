"""Mongrel2's async uploads: a large or chunked request body arrives as a file, not bytes.

The flow (MONGREL2.md §A7): message one carries ``x-mongrel2-upload-start: PATH`` and no body;
Mongrel2 streams the body into PATH; message two carries both ``-start`` and ``-done``. Only
message two is answered; answering message one with an error (and a close) refuses the upload,
and Mongrel2 then deletes the file.

Rules of this module: a reported path is resolved inside Mongrel2's run directory (its chroot)
or refused; a client cannot forge an upload, because Mongrel2's own header would then arrive
beside the client's as a list, and a real notice always has an empty body for a body the client
announced; an upload's file is deleted after the response unless the handler kept it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO, Any

START = b"x-mongrel2-upload-start"
DONE = b"x-mongrel2-upload-done"


def upload_stage(headers: dict[bytes, Any], body: bytes) -> str | None:
    """``"start"``, ``"done"``, or None when the message is no (genuine) upload notice."""
    start = headers.get(START)
    if start is None or body or not announces_body(headers):
        return None
    done = headers.get(DONE)
    if done is None:
        return "start"
    return "done"


def announces_body(headers: dict[bytes, Any]) -> bool:
    """Whether the client announced a body: a real upload notice always comes with one."""
    length = headers.get(b"content-length")
    if isinstance(length, bytes) and length.strip().isdigit() and int(length) > 0:
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

    __slots__ = ("_kept", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._kept = False

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
        self._kept = True
        return target

    def keep(self) -> None:
        """Leave the file where it is after the response; deleting it is then up to you."""
        self._kept = True

    def discard(self) -> None:
        if not self._kept:
            self.path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"<Upload {self.path}>"
