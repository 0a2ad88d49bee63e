"""A job worker for examples/jobs: counts the words of a text, slowly, and reports back.

Start as many as you like; each joins the round robin as it connects:
    python examples/jobs/worker.py [--jobs tcp://127.0.0.1:5560] [--results tcp://127.0.0.1:5561]
"""

import argparse
import asyncio
import os

from brubeck.services import JobQueue, JobWorker


def main() -> None:
    parser = argparse.ArgumentParser(description="word-count job worker")
    parser.add_argument("--jobs", default=os.environ.get("JOBS_ADDRESS", "tcp://127.0.0.1:5560"))
    parser.add_argument(
        "--results", default=os.environ.get("RESULTS_ADDRESS", "tcp://127.0.0.1:5561")
    )
    parser.add_argument("--delay", type=float, default=0.5, help="seconds of pretend work")
    args = parser.parse_args()

    results = JobQueue(args.results, bind=False)
    worker = JobWorker(args.jobs)

    @worker.job
    async def count_words(job):
        await asyncio.sleep(args.delay)  # the slow part of a real job
        words = len(job["text"].split())
        await results.push({"id": job["id"], "status": "done", "words": words, "pid": os.getpid()})

    worker.run()


if __name__ == "__main__":
    main()
