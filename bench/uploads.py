"""Large uploads through Mongrel2, in each of its modes: seconds and MB/s per upload.

Modes (one Mongrel2 and one handler process each, started and stopped here):

- ``m2-file``: ``upload.stream=0``; Mongrel2 writes the body to a file, the handler hashes it;
- ``stream-file``: ``upload.stream=1``; Brubeck writes the pieces to a file (``upload_dir``),
  then the handler hashes it;
- ``stream-live``: ``upload.stream=1``; a ``stream_request_body`` handler hashes the pieces as
  they arrive, nothing is written.

The streamed modes run once per ``--windows`` value (``upload_stream_window``: bytes granted
ahead of what was written or read). curl sends the body (``--data-binary``) to 127.0.0.1; each
upload's answer must be the body's SHA-256. Client, Mongrel2 and handler share the machine's
cores; compare the modes with each other, in one run.

    python bench/uploads.py --size-mb 100 --repeat 3
    python bench/uploads.py --size-mb 20 --windows 65536,262144,1048576 --json uploads.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, add_json_option, script_parser, start, stop, write_json

sys.path.insert(0, str(REPO))

from brubeck.mongrel2 import Mongrel2Config, Mongrel2Process

APP = "bench/apps/upload_bench.py:app"
TIMEOUT = 300


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--size-mb", type=int, default=100, help="upload size in MB (100)")
    parser.add_argument("--repeat", type=int, default=3, help="uploads per mode (3; median)")
    parser.add_argument(
        "--windows",
        default="65536,262144,1048576",
        help="upload_stream_window values for the streamed modes (65536,262144,1048576)",
    )
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.repeat < 1:
        parser.error("--size-mb and --repeat must be at least 1")
    try:
        args.windows = [int(w) for w in args.windows.split(",")]
    except ValueError:
        parser.error(f"--windows takes integers separated by commas, got {args.windows!r}")
    if not shutil.which("curl"):
        parser.error("curl is needed (apt-get install curl)")
    return args


def upload(url: str, body: Path, expected: str) -> float:
    """Seconds for one upload; raises if the answer is not the body's digest."""
    started = time.monotonic()
    result = subprocess.run(
        ["curl", "-sS", "--max-time", str(TIMEOUT), "--data-binary", f"@{body}", url],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 10,
    )
    took = time.monotonic() - started
    if result.returncode != 0 or json.loads(result.stdout or "{}").get("sha256") != expected:
        raise RuntimeError(f"upload to {url} failed: {result.stdout[:200]} {result.stderr[:200]}")
    return took


def run_mode(
    name: str, path: str, stream: bool, window: int | None, body: Path, expected: str, args, tmp
) -> dict[str, object]:
    run_dir = Path(tmp) / f"{name}-{window}"
    spool = run_dir / "spool"
    spool.mkdir(parents=True)
    config = Mongrel2Config.on_free_ports(settings={"upload.stream": 1} if stream else {})
    handler = None
    with Mongrel2Process(config, run_dir / "mongrel2") as m2:
        env = {
            "UPLOAD_WINDOW": str(window or 262144),
            "UPLOAD_DIR": str(spool),
            "BRUBECK_MONGREL2_RUN_DIR": str(m2.run_dir),
        }
        argv = [sys.executable, "-m", "brubeck", "--log-level", "warning", "run", APP]
        argv += ["--pull", config.send_spec, "--pub", config.recv_spec]
        handler = start(argv, run_dir / "handler.log", env_extra=env)
        try:
            time.sleep(1.0)  # connect; the first upload would wait for it anyway
            times = [upload(m2.url + path, body, expected) for _ in range(args.repeat)]
        finally:
            stop(handler)
    seconds = statistics.median(times)
    row = {
        "mode": name,
        "window": window,
        "seconds": round(seconds, 3),
        "mb_per_s": round(args.size_mb / seconds, 1),
        "runs": [round(t, 3) for t in times],
    }
    print(
        f"  {name:12} window {window or '-':>8}  {seconds:6.2f} s  {row['mb_per_s']:7.1f} MB/s",
        file=sys.stderr,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="brubeck-uploads-") as tmp:
        body = Path(tmp) / "body.bin"
        digest = hashlib.sha256()
        with body.open("wb") as out:
            for _ in range(args.size_mb):
                block = os.urandom(1 << 20)
                digest.update(block)
                out.write(block)
        expected = digest.hexdigest()
        rows = [run_mode("m2-file", "/file", False, None, body, expected, args, tmp)]
        for window in args.windows:
            rows.append(run_mode("stream-file", "/file", True, window, body, expected, args, tmp))
            rows.append(run_mode("stream-live", "/live", True, window, body, expected, args, tmp))
    print(f"\n{args.size_mb} MB per upload, median of {args.repeat}\n")
    print("| mode | window | seconds | MB/s | vs m2-file |")
    print("|---|---:|---:|---:|---:|")
    base = rows[0]["seconds"]
    for row in rows:
        ratio = base / row["seconds"]  # type: ignore[operator]
        window = row["window"] or "-"
        print(f"| {row['mode']} | {window} | {row['seconds']} | {row['mb_per_s']} | {ratio:.2f} |")
    if args.json:
        write_json(args.json, {"size_mb": args.size_mb, "repeat": args.repeat}, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
