"""Notice edits to an app's Python files, for ``brubeck run --reload`` (development only).

Why polling: it needs no dependency and no OS-specific API, and a tree of sources is scanned
in milliseconds. A change is a file added, removed, or with a new modification time or size.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["Reloader"]

#: Directories never scanned: caches, environments, version control.
SKIPPED_DIRS = frozenset(["__pycache__", "node_modules", "site-packages", "venv", "env"])


class Reloader:
    """Poll the ``.py`` files under ``root``; ``changed()`` returns what changed since last time.

    Args:
        root: the directory to watch, recursively (hidden directories are skipped).
        interval: the least time between two scans; ``changed()`` is cheap in between.
    """

    def __init__(self, root: str | Path, interval: float = 0.5) -> None:
        self.root = Path(root).resolve()
        self.interval = interval
        self._snapshot = self._scan()
        self._next = time.monotonic() + interval

    def _scan(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for directory, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    try:
                        stat = os.stat(path)
                    except OSError:
                        continue  # removed while scanning: the next scan sees it gone
                    found[path] = (stat.st_mtime_ns, stat.st_size)
        return found

    def changed(self) -> list[str]:
        """Paths added, removed or modified since the previous scan (none between scans)."""
        now = time.monotonic()
        if now < self._next:
            return []
        self._next = now + self.interval
        old, new = self._snapshot, self._scan()
        self._snapshot = new
        return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))
