"""A WebSocket app that counts each connection's messages, run as one or several processes.

python ws_counter_app.py PULL PUB INDEX [PEER ...]: with two or more peers the processes share
WebSocket connections (``websocket_peers``); each reply names the process that answered.
"""

from __future__ import annotations

import os
import sys

from brubeck import Brubeck, Mongrel2Connection, WebMessageHandler, WebSocketHandler


class Counter(WebSocketHandler):
    def open(self) -> None:
        self.count = 0

    def on_message(self, message: str | bytes) -> None:
        self.count += 1
        ownership = self.application.websockets.ownership
        self.write_message(
            {
                "count": self.count,
                "pid": os.getpid(),
                "received": ownership.received if ownership else 0,
            }
        )


class Pid(WebMessageHandler):
    def get(self) -> str:
        return str(os.getpid())


def make_app(pull: str, pub: str, index: int, peers: list[str]) -> Brubeck:
    settings = {"websocket_peers": peers, "websocket_peer_index": index} if peers else {}
    return Brubeck(
        msg_conn=Mongrel2Connection(pull, pub),
        handler_tuples=[(r"^/count$", Counter), (r"^/pid$", Pid)],
        settings=settings,
    )


if __name__ == "__main__":
    pull_addr, pub_addr, peer_index, *peer_list = sys.argv[1:]
    make_app(pull_addr, pub_addr, int(peer_index), peer_list).run()
