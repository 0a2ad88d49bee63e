"""Start the jobs example: the app behind a Mongrel2 of its own, and a few workers.

    python examples/jobs/run.py [--workers 3]

Then ``curl -d 'some words to count' http://127.0.0.1:6767/jobs`` and follow its status_url.
Ctrl-C stops everything.
"""

import argparse
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--port", type=int, default=6767)
    args = parser.parse_args()
    app = [sys.executable, "-m", "brubeck", "run", f"{HERE / 'app.py'}:app", "--mongrel2"]
    procs = [subprocess.Popen([*app, "--port", str(args.port)])]
    procs += [
        subprocess.Popen([sys.executable, str(HERE / "worker.py")]) for _ in range(args.workers)
    ]
    print(f"jobs example: http://127.0.0.1:{args.port}/jobs with {args.workers} workers")
    try:
        while all(p.poll() is None for p in procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                procs[0].wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return max((p.returncode or 0) for p in procs)


if __name__ == "__main__":
    sys.exit(main())
