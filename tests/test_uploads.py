"""uploads.py: telling real upload notices from forged ones, confining paths, cleanup."""

from __future__ import annotations

import pytest

from brubeck.uploads import DONE, START, Upload, resolve_reported_path, upload_stage

ANNOUNCED = {b"content-length": b"300000"}


@pytest.mark.parametrize(
    ("headers", "body", "stage"),
    [
        ({START: b"tmp/u.1", **ANNOUNCED}, b"", "start"),
        ({START: b"tmp/u.1", DONE: b"tmp/u.1", **ANNOUNCED}, b"", "done"),
        ({START: b"tmp/u.1", b"transfer-encoding": b"chunked"}, b"", "start"),
        ({START: b"tmp/u.1", **ANNOUNCED}, b"inline body", None),  # a client's own header
        ({START: b"tmp/u.1"}, b"", None),  # no body announced
        ({START: b"tmp/u.1", b"content-length": b"0"}, b"", None),
        ({**ANNOUNCED}, b"", None),
    ],
)
def test_upload_stage(headers, body, stage):
    assert upload_stage(headers, body) == stage


def test_paths_resolve_inside_the_run_dir(tmp_path):
    assert resolve_reported_path(tmp_path, "/tmp/upload.X") == tmp_path / "tmp" / "upload.X"
    assert resolve_reported_path(tmp_path, "tmp/upload.X") == tmp_path / "tmp" / "upload.X"
    for escaping in ("/../etc/passwd", "tmp/../../x", "/", ""):
        with pytest.raises(ValueError, match="outside"):
            resolve_reported_path(tmp_path, escaping)


def test_upload_is_deleted_unless_kept_or_saved(tmp_path):
    paths = [tmp_path / name for name in ("a", "b", "c")]
    for path in paths:
        path.write_bytes(b"data")
    dropped, kept, saved = (Upload(path) for path in paths)
    assert dropped.size == 4 and dropped.read() == b"data"
    kept.keep()
    target = saved.save_as(tmp_path / "moved")
    for upload in (dropped, kept, saved):
        upload.discard()
    assert not paths[0].exists() and paths[1].exists() and target.read_bytes() == b"data"
