"""Helpers for the services tests: worker processes to kill, polling, and the C worker build.

Run as a script, it is a worker process for the tests:
    python -m tests.services_support mdp ADDR [--heartbeat S] [--service NAME]
    python -m tests.services_support jobs JOBS_ADDR RESULTS_ADDR
The MDP worker answers ``{"pid": ..., "payload": ...}``; a payload ``{"hang": PATH}`` makes the
first worker that creates PATH write its pid there and hang, so a test knows whom to kill.
The job worker pushes ``{"pid": ..., "job": ...}`` to RESULTS_ADDR for each job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
C_WORKER_SOURCE = ROOT / "examples" / "services" / "upper_worker.c"
APT_PACKAGES = ["libzmq3-dev", "gcc"]


async def eventually(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def free_tcp_address() -> str:
    """A loopback TCP endpoint nobody listens on now, for a process that must bind it itself."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


class Processes:
    """Child processes started by one test: each killed (if alive) and reaped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str | Path) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"proc-{len(self.started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(a) for a in args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        proc.log = log  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def python(self, *args: str | Path) -> subprocess.Popen[bytes]:
        return self.start(sys.executable, *args)

    def mdp_worker(
        self, address: str, heartbeat: float = 0.1, service: str = "echo"
    ) -> subprocess.Popen[bytes]:
        return self.python(
            "-m",
            "tests.services_support",
            "mdp",
            address,
            "--heartbeat",
            str(heartbeat),
            "--service",
            service,
        )

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(5)

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                self.kill(proc)


# The C worker: needs gcc and libzmq's headers (Debian: libzmq3-dev).


def _toolchain_ready() -> bool:
    return shutil.which("gcc") is not None and Path("/usr/include/zmq.h").is_file()


def _install_toolchain() -> str:
    """Try apt-get; return what went wrong ("" when it worked)."""
    if not shutil.which("apt-get"):
        return "apt-get is not available"
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install packages"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]
    try:
        done = subprocess.run(install, env=env, capture_output=True, timeout=300)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            done = subprocess.run(install, env=env, capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "apt-get took longer than 300s"
    if done.returncode != 0:
        return f"apt-get failed: {done.stderr.decode(errors='replace').strip()[-300:]}"
    return ""


def build_c_worker(directory: Path) -> Path:
    """Compile examples/services/upper_worker.c; skip the test (fail under CI=true) if we cannot."""
    binary = directory / "upper_worker"
    if binary.exists():
        return binary
    if not _toolchain_ready():
        problem = _install_toolchain()
        if problem or not _toolchain_ready():
            problem = problem or "installing them did not provide them"
            reason = (
                f"cannot build the C worker: gcc or libzmq3-dev is missing and {problem} "
                f"(install with `apt-get install -y {' '.join(APT_PACKAGES)}`)"
            )
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true but {reason}", pytrace=False)
            pytest.skip(reason)
    done = subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(C_WORKER_SOURCE), "-lzmq"],
        capture_output=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.fail(f"the C worker does not compile:\n{done.stderr.decode(errors='replace')}")
    return binary


# Worker processes, when this module runs as a script.


def _mdp_worker(address: str, heartbeat: float, service: str) -> None:
    from brubeck.services import ServiceWorker

    worker = ServiceWorker(address, service, heartbeat=heartbeat, reconnect=0.1)

    @worker.handler
    async def answer(payload: Any) -> Any:
        if isinstance(payload, dict) and "hang" in payload:
            try:
                fd = os.open(payload["hang"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # another worker took the hang: answer
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                await asyncio.sleep(3600)
        return {"pid": os.getpid(), "payload": payload}

    worker.run()


def _job_worker(jobs_address: str, results_address: str) -> None:
    from brubeck.services import JobQueue, JobWorker

    results = JobQueue(results_address, bind=False)

    async def handle(job: Any) -> None:
        await results.push({"pid": os.getpid(), "job": job})

    JobWorker(jobs_address, handle).run()


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    kinds = parser.add_subparsers(dest="kind", required=True)
    mdp = kinds.add_parser("mdp")
    mdp.add_argument("address")
    mdp.add_argument("--heartbeat", type=float, default=0.1)
    mdp.add_argument("--service", default="echo")
    jobs = kinds.add_parser("jobs")
    jobs.add_argument("jobs_address")
    jobs.add_argument("results_address")
    args = parser.parse_args(argv)
    if args.kind == "mdp":
        _mdp_worker(args.address, args.heartbeat, args.service)
    else:
        _job_worker(args.jobs_address, args.results_address)


if __name__ == "__main__":
    main(sys.argv[1:])
