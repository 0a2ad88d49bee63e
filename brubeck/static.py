"""Static files served by the app, and versioned URLs that browsers may cache for a year.

Mongrel2's ``Dir`` route is the fastest way to publish a directory, and needs no handler. The
app serves static files itself when they must pass its rules (a login, a tenant's directory),
in development, or when one process should own its assets. Either way, ``static_url`` names
a file with a hash of its content (``/static/app.css?v=3f2a…``): a page that links that URL
lets the browser keep the file until the content, and so the URL, changes.

Rules of this module:

- ``StaticFileHandler`` answers GET and HEAD through ``send_file``, so it has the validators,
  304, byte ranges and streaming of large files; a name that leads out of its ``root`` is a
  404, and so is a hidden name (a part starting with ``.``) unless ``serve_hidden``;
- a request whose ``v`` is the file's current version gets ``Cache-Control: public,
  max-age=31536000, immutable``; a stale ``v`` gets ``no-cache``, so an old page never pins
  new content for a year; the version is checked on the open file that is then sent, so a
  file replaced meanwhile never goes out under the version of the one it replaced;
- versions are the first 16 hex digits of the SHA-256 of the content, remembered per file until
  its size, modification or change time, or inode changes. Hashing reads the whole file once:
  handlers do it in a thread, ``static_url`` (called while rendering) on the spot.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import posixpath
import re
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from .errors import HTTPError
from .files import guess_type, open_file, path_inside
from .handlers import MessageHandler
from .response import Response

__all__ = ["IMMUTABLE", "StaticFileHandler", "StaticFiles", "StaticVersions"]

log = logging.getLogger("brubeck.static")

#: The Cache-Control of a URL whose version is the content's: it can never change.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Hex digits of the SHA-256 kept in a version: 64 bits, no collision between two builds.
VERSION_LENGTH = 16

_Identity = tuple[int, int, int, int, int]


def _identity(status: os.stat_result) -> _Identity:
    # ctime too: a build that rewrites a file in place and restores its mtime (reproducible
    # builds do) changes it, and nobody can set it back; a stale version would be immutable.
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


class StaticVersions:
    """Content hashes of files, computed once per version of each file."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[_Identity, str]] = {}

    def known(self, path: Path) -> str | None:
        """The version if it is remembered and the file has not changed since; else None."""
        entry = self._known.get(path)
        if entry is None:
            return None
        try:
            identity = _identity(os.stat(path))
        except OSError:
            return None
        return entry[1] if entry[0] == identity else None

    def version(self, path: Path) -> str | None:
        """The version of a regular file (hashing it if it changed); None if there is none."""
        try:
            handle, status = open_file(path, None)  # non-blocking: a named pipe is refused
        except HTTPError:
            return None
        with handle:
            return self.version_of_open(path, handle, status)

    def remembered(self, path: Path, status: os.stat_result) -> str | None:
        """The version remembered for ``path`` if ``status`` (of an open handle) is its file's."""
        entry = self._known.get(path)
        return entry[1] if entry is not None and entry[0] == _identity(status) else None

    def version_of_open(self, path: Path, handle: BinaryIO, status: os.stat_result) -> str | None:
        """The version of the content of ``handle`` (open on ``path``, ``status`` its fstat),
        remembered under ``path``: the version of those very bytes, whatever ``path`` names
        by now. Hashing blocks: a handler calls it in a thread."""
        current = self.remembered(path, status)
        if current is not None:
            return current
        digest = hashlib.sha256()
        try:
            while piece := handle.read(1 << 20):  # a handle just opened: from its start
                digest.update(piece)
        except OSError:
            return None
        value = digest.hexdigest()[:VERSION_LENGTH]
        self._known[path] = (_identity(status), value)
        return value


class StaticFiles:
    """The app's static directory (``static_path``) and the URL prefix it is served under.

    Args:
        root: the directory.
        prefix: the URL path it appears under; starts and ends with ``/``.
        versions: where content hashes are remembered (the app shares one with its handlers).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        prefix: str = "/static/",
        versions: StaticVersions | None = None,
    ) -> None:
        if not (isinstance(prefix, str) and prefix.startswith("/") and prefix.endswith("/")):
            raise ValueError(f"static_url_prefix must start and end with '/', got {prefix!r}")
        self.root = root
        self.prefix = prefix
        self.versions = versions or StaticVersions()

    @classmethod
    def from_settings(
        cls, settings: dict[str, Any], versions: StaticVersions | None = None
    ) -> StaticFiles | None:
        root = settings.get("static_path")
        if root is None:
            return None
        return cls(root, settings.get("static_url_prefix", "/static/"), versions)

    @property
    def pattern(self) -> str:
        """The route that serves the directory: everything under the prefix."""
        return f"^{re.escape(self.prefix)}(?P<path>.*)$"

    def url(self, name: str, include_version: bool = True) -> str:
        """The URL of ``name`` under the prefix, with ``?v=`` its content's version.

        A name that leads out of the directory is a ValueError (it is the code's mistake, not
        the client's); a missing file logs a warning and gets a URL without a version.
        """
        # The name as a browser will ask for it: it drops ``.`` and ``..`` parts before it does
        # (RFC 3986 §5.2.4), so ``..`` must not climb above the prefix, even to come back.
        relative = posixpath.normpath(name or ".")
        if relative.startswith("/") or relative == ".." or relative.startswith("../"):
            raise ValueError(f"static file name {name!r} leads out of {self.root}")
        relative = "" if relative == "." else relative + "/" * name.endswith("/")
        try:
            path = path_inside(relative, self.root)
        except HTTPError:
            raise ValueError(f"static file name {name!r} leads out of {self.root}") from None
        url = self.prefix + quote(relative)
        if not include_version:
            return url
        version = self.versions.version(path)
        if version is None:
            log.warning("static_url: no file %r in %s; its URL has no version", name, self.root)
            return url
        return f"{url}?v={version}"


class StaticFileHandler(MessageHandler):
    """Serves the files of one directory: ``(r"^/assets/(.*)$", StaticFileHandler,
    {"root": "assets"})``.

    The route's group named ``path`` is the name (leading slashes dropped); without one, the
    first unnamed group, else the first named one. Init kwargs (or a subclass) set ``root``,
    ``default_filename`` (``"index.html"``: serve it for a directory, after redirecting
    ``/dir`` to ``/dir/``), ``cache_control`` (sent when the URL has no ``v``) and
    ``serve_hidden``.
    """

    root: str | os.PathLike[str] | None = None
    default_filename: str | None = None
    cache_control: str | None = None
    serve_hidden: bool = False

    async def get(self, *args: str | None, **kwargs: str | None) -> Response:
        root = self.root
        if root is None:
            raise RuntimeError(
                f"{type(self).__name__} needs a root: "
                f'(pattern, {type(self).__name__}, {{"root": "static"}})'
            )
        path = _name_from(args, kwargs)
        name = (path or "").lstrip("/")  # an optional group that did not match is None
        if not self.serve_hidden and _is_hidden(name):
            raise HTTPError(404)
        # os.path.isdir: False, not an OSError, for a name too long or a directory not readable
        if self.default_filename is not None and os.path.isdir(path_inside(name, root)):
            if not self.request.path.endswith("/"):  # else the page's relative links break
                query = self.request.query_string
                # One leading slash, always: ``//evil.example`` would be another host.
                here = "/" + quote(self.request.path.lstrip("/"))
                location = here + "/" + (f"?{query}" if query else "")
                return self.redirect(location, permanent=True)
            name = os.path.join(name, self.default_filename)
        version = self.get_argument("v", None)
        if version is None:
            if self.cache_control is not None:
                self.set_header("Cache-Control", self.cache_control)
            return await self.send_file(name, root=root)
        # The version is checked on the very handle whose bytes are sent: a file renamed into
        # place meanwhile must not go out for a year under the version of the one it replaced.
        handle, status = open_file(name, root)
        with handle:
            versions = self.application.static_versions
            real = path_inside(name, root)  # the key static_url remembers the version under
            current = versions.remembered(real, status)
            if current is None:  # a first request, or a changed file: hash it off the event loop
                current = await asyncio.to_thread(versions.version_of_open, real, handle, status)
            self.set_header("Cache-Control", IMMUTABLE if version == current else "no-cache")
            return await self.send_file(_reopenable(handle), guess_type(name))


def _reopenable(handle: BinaryIO) -> str:
    """A name that opens the same file as ``handle``, even once its own name is another's."""
    return f"/dev/fd/{handle.fileno()}"


def _name_from(args: tuple[str | None, ...], kwargs: dict[str, str | None]) -> str | None:
    """The group named ``path`` (even after an unnamed one: ``^/(en|fr)/(?P<path>.*)``), else
    the first unnamed group, else the first named one, else the whole directory."""
    if "path" in kwargs:
        return kwargs["path"]
    if args:
        return args[0]
    return next(iter(kwargs.values()), "")


def _is_hidden(name: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in name.split("/"))
