"""An app whose connections need one owner: streamed uploads, a WebSocket counter, and large
downloads under Mongrel2's download flow control.

Run with ``brubeck run --workers 2 --mongrel2``: the supervisor gives the workers
``websocket_peers`` of their own, so the pieces of an upload, the frames of a socket and, with
flow control, every message of a connection reach the worker that owns it.
"""

import hashlib
import os

from brubeck import Brubeck, WebMessageHandler, WebSocketHandler


class Pid(WebMessageHandler):
    def get(self) -> str:
        return str(os.getpid())


class Digest(WebMessageHandler):
    def post(self) -> dict:
        data = self.request.body
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pid": os.getpid()}


class Bulk(WebMessageHandler):
    """``n`` chunks of 64 KiB, each flushed: a stream that needs Mongrel2's credits."""

    async def get(self, n: str) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        for i in range(int(n)):
            self.write(bytes([i % 251]) * 65536)
            await self.flush()


class Counter(WebSocketHandler):
    def open(self) -> None:
        self.count = 0

    def on_message(self, message: str | bytes) -> None:
        self.count += 1
        self.write_message({"count": self.count, "pid": os.getpid()})


app = Brubeck(
    handler_tuples=[
        (r"^/pid$", Pid),
        (r"^/digest$", Digest),
        (r"^/bulk/(?P<n>\d+)$", Bulk),
        (r"^/count$", Counter),
    ],
    mongrel2_settings={"upload.stream": 1, "download.flow_control": 1},
)
