"""Digests streamed uploads (``upload.stream=1``), run as one or several processes.

python streamed_upload_app.py PULL PUB SPOOL INDEX [PEER ...]: with two or more peers the
processes pass each upload's pieces to its owner (``websocket_peers``).
"""

from __future__ import annotations

import hashlib
import os
import sys

from brubeck import Brubeck, Mongrel2Connection, WebMessageHandler


class Digest(WebMessageHandler):
    def post(self) -> dict:
        data = self.request.body
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pid": os.getpid()}


class Pid(WebMessageHandler):
    def get(self) -> str:
        return str(os.getpid())


if __name__ == "__main__":
    pull, pub, spool, index, *peers = sys.argv[1:]
    settings = {"websocket_peers": peers, "websocket_peer_index": int(index)} if peers else {}
    Brubeck(
        msg_conn=Mongrel2Connection(pull, pub),
        handler_tuples=[(r"^/digest$", Digest), (r"^/pid$", Pid)],
        settings={**settings, "upload_dir": spool},
    ).run()
