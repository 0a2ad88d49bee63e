"""An app for the adversarial multi-process tests (tests/e2e/test_workers_edges.py).

Run with ``brubeck run --workers N --mongrel2``. Environment switches, read at import:

- ``HUNT_UPLOAD_STREAM=1``: Mongrel2 streams bodies to the handlers (``upload.stream=1``);
- ``HUNT_FLOW_CONTROL=1``: Mongrel2 runs download flow control;
- ``HUNT_CRASH=1``: an ``on_startup`` hook raises, so every worker dies at startup;
- ``ARRIVALS``: a file ``/slow`` appends the worker's pid to as a request arrives;
- ``HUNT_SLOW_WORKER=N``: worker N (``BRUBECK_WORKER_ID``) takes a second longer to start, as
  a worker on a busy machine may.
"""

import asyncio
import hashlib
import os
import time

from brubeck import Brubeck, WebMessageHandler, WebSocketHandler

_worker = os.environ.get("BRUBECK_WORKER_ID")
if _worker and _worker == os.environ.get("HUNT_SLOW_WORKER"):
    time.sleep(1.0)


class Pid(WebMessageHandler):
    def get(self) -> str:
        return str(os.getpid())


class Slow(WebMessageHandler):
    async def get(self) -> str:
        arrivals = os.environ.get("ARRIVALS")
        if arrivals:
            with open(arrivals, "a") as out:
                out.write(f"{os.getpid()}\n")
        await asyncio.sleep(float(self.get_argument("s", "1")))
        return f"slept in {os.getpid()}"


class Digest(WebMessageHandler):
    def post(self) -> dict:
        data = self.request.body
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pid": os.getpid()}


class Bulk(WebMessageHandler):
    """``n`` chunks of 64 KiB, each flushed."""

    async def get(self, n: str) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        for i in range(int(n)):
            self.write(bytes([i % 251]) * 65536)
            await self.flush()


class Room(WebSocketHandler):
    """Joins the room ``lobby``; ``say:TEXT`` broadcasts TEXT to it; anything else echoes."""

    def open(self) -> None:
        self.join("lobby")
        self.write_message({"open": os.getpid(), "conn": self.request.conn_id.decode()})

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("say:"):
            self.broadcast(message[4:], to="lobby")
        else:
            self.write_message({"echo": message, "pid": os.getpid()})


mongrel2_settings = {}
if os.environ.get("HUNT_UPLOAD_STREAM") == "1":
    mongrel2_settings["upload.stream"] = 1
if os.environ.get("HUNT_FLOW_CONTROL") == "1":
    mongrel2_settings["download.flow_control"] = 1

app = Brubeck(
    handler_tuples=[
        (r"^/pid$", Pid),
        (r"^/slow$", Slow),
        (r"^/digest$", Digest),
        (r"^/bulk/(?P<n>\d+)$", Bulk),
        (r"^/room$", Room),
    ],
    mongrel2_settings=mongrel2_settings,
)

if os.environ.get("HUNT_CRASH") == "1":

    @app.on_startup
    def crash() -> None:
        raise RuntimeError("hunt: startup failed on purpose")
