"""reloader.py: which edits to an app's sources are noticed."""

from __future__ import annotations

import os
from pathlib import Path

from brubeck.reloader import Reloader


def test_added_modified_and_removed_files(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("A = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("B = 1\n")
    reloader = Reloader(tmp_path, interval=0)
    assert reloader.changed() == []

    (tmp_path / "app.py").write_text("A = 2\n")
    assert reloader.changed() == [str(tmp_path / "app.py")]
    assert reloader.changed() == []

    os.utime(tmp_path / "pkg" / "mod.py", ns=(1, 1))  # same size, another time
    (tmp_path / "new.py").write_text("")
    assert reloader.changed() == [str(tmp_path / "new.py"), str(tmp_path / "pkg" / "mod.py")]

    (tmp_path / "new.py").unlink()
    assert reloader.changed() == [str(tmp_path / "new.py")]


def test_other_files_and_skipped_directories_are_ignored(tmp_path: Path) -> None:
    for name in (".venv", "__pycache__", "node_modules", ".git"):
        (tmp_path / name).mkdir()
    reloader = Reloader(tmp_path, interval=0)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".venv" / "lib.py").write_text("x")
    (tmp_path / "__pycache__" / "app.py").write_text("x")
    (tmp_path / "node_modules" / "x.py").write_text("x")
    assert reloader.changed() == []


def test_scans_wait_for_the_interval(tmp_path: Path) -> None:
    reloader = Reloader(tmp_path, interval=60)
    (tmp_path / "app.py").write_text("")
    assert reloader.changed() == []  # too soon to look again
