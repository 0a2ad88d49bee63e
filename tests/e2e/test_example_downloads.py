"""examples/downloads through a real Mongrel2, driven the way its docstring says: curl."""

import hashlib
import runpy
import subprocess
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "downloads" / "app.py"


@pytest.fixture
def site(serve, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("DOWNLOADS_DIR", str(shared))
    m2 = serve(runpy.run_path(str(EXAMPLE))["app"])
    return m2, shared, tmp_path


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args], capture_output=True, timeout=30, check=True
    )


def test_downloads_need_a_login_then_resume_and_revalidate(site):
    m2, shared, scratch = site
    jar = str(scratch / "jar")
    big = (shared / "big.bin").read_bytes()
    assert len(big) == 3_000_000  # made by the example at import

    refused = _curl("-o", "/dev/null", "-w", "%{http_code}", f"{m2.url}/files/big.bin")
    assert refused.stdout == b"403"
    _curl("-c", jar, "-d", "user=ada", f"{m2.url}/login")

    # A download cut short, then resumed from where it stopped: a 206 for the rest.
    partial = scratch / "big.bin"
    partial.write_bytes(big[:1_234_567])
    resumed = _curl(
        "-b", jar, "-C", "-", "-o", str(partial), "-w", "%{http_code}", f"{m2.url}/files/big.bin"
    )
    assert resumed.stdout == b"206"
    assert hashlib.sha256(partial.read_bytes()).digest() == hashlib.sha256(big).digest()

    # The report: validators, then a 304 for the copy just fetched.
    head = _curl("-b", jar, "-D", "-", "-o", "/dev/null", f"{m2.url}/files/report.csv")
    lines = dict(
        line.split(": ", 1)
        for line in head.stdout.decode("latin-1").split("\r\n")[1:]
        if ": " in line
    )
    assert lines["Content-Type"] == "text/csv; charset=utf-8"
    assert lines["Cache-Control"] == "private, no-cache"
    assert lines["Accept-Ranges"] == "bytes"
    again = _curl(
        "-b",
        jar,
        "-H",
        f"If-None-Match: {lines['ETag']}",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"{m2.url}/files/report.csv",
    )
    assert again.stdout == b"304"


def test_export_names_the_saved_file_and_names_stay_inside(site):
    m2, shared, scratch = site
    jar = str(scratch / "jar")
    _curl("-c", jar, "-d", "user=ada", f"{m2.url}/login")
    saved = _curl(
        "-b",
        jar,
        "-OJ",
        "--output-dir",
        str(scratch),
        "-w",
        "%{filename_effective}",
        f"{m2.url}/export/report.csv",
    )
    assert saved.stdout.decode().endswith("report 2026.csv")
    assert (scratch / "report 2026.csv").read_bytes() == (shared / "report.csv").read_bytes()
    (scratch / "secret.txt").write_text("not shared")
    outside = _curl(
        "-b",
        jar,
        "--path-as-is",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"{m2.url}/files/../secret.txt",
    )
    assert outside.stdout == b"404"
