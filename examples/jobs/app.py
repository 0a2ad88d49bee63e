"""Background jobs from a web app: POST /jobs queues text for a worker pool, GET /jobs/<id> says
how it went.

The app owns two queues: it PUSHes jobs to the workers (a ``JobQueue`` it binds) and it PULLs
their results (a ``JobWorker`` it binds, fed by every worker's own ``JobQueue``). Job states
live in this process's memory, so run one app process (or keep them in a shared store).
Start everything with ``python examples/jobs/run.py`` (see README.md).
"""

import asyncio
import os
import uuid

from brubeck import Brubeck, HTTPError, Mongrel2Connection, WebMessageHandler
from brubeck.services import JobQueue, JobWorker, ServiceUnavailable

JOBS_ADDRESS = os.environ.get("JOBS_ADDRESS", "tcp://127.0.0.1:5560")
RESULTS_ADDRESS = os.environ.get("RESULTS_ADDRESS", "tcp://127.0.0.1:5561")


class JobsHandler(WebMessageHandler):
    async def post(self):
        text = self.message.body.decode("utf-8", "replace")
        if not text.strip():
            raise HTTPError(400, "POST some text to count its words")
        job_id = uuid.uuid4().hex[:16]
        self.application.state.jobs[job_id] = {"id": job_id, "status": "queued"}
        try:
            await self.application.state.queue.push({"id": job_id, "text": text}, timeout=2.0)
        except ServiceUnavailable as exc:
            del self.application.state.jobs[job_id]
            raise HTTPError(503, str(exc), {"Retry-After": "5"}) from None
        self.set_status(202)
        self.set_header("Location", f"/jobs/{job_id}")
        self.set_body({"id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}"})
        return self.render()


class JobStatusHandler(WebMessageHandler):
    def get(self, job_id):
        job = self.application.state.jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"no job {job_id}")
        self.set_body(job)
        return self.render()


def make_app(jobs_address=JOBS_ADDRESS, results_address=RESULTS_ADDRESS, msg_conn=None):
    app = Brubeck(
        msg_conn=msg_conn,
        handler_tuples=[
            (r"^/jobs$", JobsHandler),
            (r"^/jobs/(?P<job_id>[0-9a-f]+)$", JobStatusHandler),
        ],
    )
    app.state.jobs = {}

    async def record(result):
        """A worker's report: ``{"id": ..., "status": "done", ...}`` (runs in the app's loop)."""
        job = app.state.jobs.get(result.get("id"))
        if job is not None:
            job.update(result)

    results = app.state.results = JobWorker(results_address, record, bind=True)

    @app.on_startup
    async def open_queues():
        app.state.queue = JobQueue(jobs_address)
        app.state.queue.open()
        app.state.results_task = asyncio.get_running_loop().create_task(results.serve())
        await results.started()

    @app.on_shutdown
    async def close_queues():
        results.stop()
        await app.state.results_task
        await app.state.queue.close()

    return app


app = make_app(msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"))

if __name__ == "__main__":
    app.run()
