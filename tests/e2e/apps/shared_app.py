"""An app whose connections need one owner: streamed uploads and a WebSocket counter.

Run with ``brubeck run --workers 2 --mongrel2``: the supervisor gives the workers
``websocket_peers`` of their own, so the pieces of an upload and the frames of a socket reach
the worker that owns the connection, wherever Mongrel2 sends them.
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


class Counter(WebSocketHandler):
    def open(self) -> None:
        self.count = 0

    def on_message(self, message: str | bytes) -> None:
        self.count += 1
        self.write_message({"count": self.count, "pid": os.getpid()})


app = Brubeck(
    handler_tuples=[(r"^/pid$", Pid), (r"^/digest$", Digest), (r"^/count$", Counter)],
    mongrel2_settings={"upload.stream": 1},
)
