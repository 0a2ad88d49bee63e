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
  new content for a year;
- versions are the first 16 hex digits of the SHA-256 of the content, remembered per file until
  its size, modification time or inode changes. Hashing reads the whole file once: handlers do
  it in a thread, ``static_url`` (called while rendering) on the spot.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import HTTPError
from .files import open_file, path_inside
from .handlers import MessageHandler
from .response import Response

__all__ = ["IMMUTABLE", "StaticFileHandler", "StaticFiles", "StaticVersions"]

log = logging.getLogger("brubeck.static")

#: The Cache-Control of a URL whose version is the content's: it can never change.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Hex digits of the SHA-256 kept in a version: 64 bits, no collision between two builds.
VERSION_LENGTH = 16

_Identity = tuple[int, int, int, int]


def _identity(status: os.stat_result) -> _Identity:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


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
            identity = _identity(status)
            entry = self._known.get(path)
            if entry is not None and entry[0] == identity:
                return entry[1]
            digest = hashlib.sha256()
            try:
                while piece := handle.read(1 << 20):
                    digest.update(piece)
            except OSError:
                return None
        value = digest.hexdigest()[:VERSION_LENGTH]
        self._known[path] = (identity, value)
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
        try:
            path = path_inside(name, self.root)
        except HTTPError:
            raise ValueError(f"static file name {name!r} leads out of {self.root}") from None
        url = self.prefix + quote(name.lstrip("/"))
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
        if version is not None:
            self.set_header("Cache-Control", await self._cache_control_for(version, name, root))
        elif self.cache_control is not None:
            self.set_header("Cache-Control", self.cache_control)
        return await self.send_file(name, root=root)

    async def _cache_control_for(
        self, version: str, name: str, root: str | os.PathLike[str]
    ) -> str:
        path = path_inside(name, root)
        versions = self.application.static_versions
        current = versions.known(path)
        if current is None:  # a first request, or a changed file: hash it off the event loop
            current = await asyncio.to_thread(versions.version, path)
        return IMMUTABLE if version == current else "no-cache"


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
