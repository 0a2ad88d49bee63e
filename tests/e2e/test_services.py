"""Services and jobs behind a real Mongrel2: HTTP requests answered by a C worker through the
Majordomo broker, and background jobs done by a worker process (examples/services, examples/jobs).
"""

import runpy
import time

import httpx
import pytest

from tests.services_support import ROOT, Processes, build_c_worker


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


def load_example(name: str) -> dict:
    return runpy.run_path(str(ROOT / "examples" / name / "app.py"))


def test_a_handler_answers_with_the_c_worker(serve, procs, tmp_path, wait_for):
    c_worker = build_c_worker(tmp_path)
    app = load_example("services")["make_app"]("tcp://127.0.0.1:*", timeout=0.5)
    m2 = serve(app)
    broker = app.state.broker
    with httpx.Client(base_url=m2.url, timeout=5) as http:
        started = time.monotonic()
        unavailable = http.get("/upper", params={"text": "nobody home"})
        assert unavailable.status_code == 503
        assert time.monotonic() - started < 2
        assert unavailable.headers["Retry-After"] == "1"

        procs.start(c_worker, broker.address, "upper", "200")
        wait_for(lambda: broker.worker_count("upper") == 1, what="the C worker")
        answer = http.get("/upper", params={"text": "hello, mongrel2"})
        assert answer.status_code == 200
        assert answer.text == "HELLO, MONGREL2"
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_jobs_example_post_then_poll_until_done(serve, procs, wait_for):
    app = load_example("jobs")["make_app"]("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    m2 = serve(app)
    queue, results = app.state.queue, app.state.results
    worker = ROOT / "examples" / "jobs" / "worker.py"
    procs.python(worker, "--jobs", queue.address, "--results", results.address, "--delay", "0.05")
    wait_for(lambda: queue.workers == 1, timeout=10, what="the job worker")
    with httpx.Client(base_url=m2.url, timeout=5) as http:
        accepted = http.post("/jobs", content="four words to count")
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["status"] == "queued"
        assert accepted.headers["Location"] == job["status_url"]

        def done():
            status = http.get(job["status_url"]).json()
            return status if status["status"] == "done" else None

        status = wait_for(done, timeout=10, what="the job to finish")
        assert status["words"] == 4
        assert http.get("/jobs/0123abcd").status_code == 404
        assert http.post("/jobs", content="  ").status_code == 400
