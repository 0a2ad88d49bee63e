"""A chat room: the page at /, a WebSocket at /chat that sends every message to everyone.

brubeck run examples/chat/app.py:app --mongrel2
then open http://127.0.0.1:6767/?name=alice and http://127.0.0.1:6767/?name=bob

Several processes share the room when each is given the list of all of them and its place in
it: CHAT_PEERS="ipc:///tmp/chat-0 ipc:///tmp/chat-1" CHAT_PEER_INDEX=0 (then 1).
"""

import os
import re
from pathlib import Path

from brubeck import Brubeck, Mongrel2Connection, WebMessageHandler, WebSocketHandler

PAGE = Path(__file__).with_name("index.html")
ROOM = "chat"


class Page(WebMessageHandler):
    def get(self):
        return PAGE.read_bytes()


class ChatSocket(WebSocketHandler):
    max_message_size = 4096

    def open(self):
        name = re.sub(r"[^\w.-]", "", self.get_argument("name", ""))[:20]
        self.name = name or f"guest-{self.conn_id.decode()}"
        self.join(ROOM)
        self.write_message({"type": "hello", "name": self.name})
        self.broadcast({"type": "joined", "name": self.name}, to=ROOM, exclude_self=True)

    def on_message(self, message):
        if isinstance(message, bytes):
            self.close(1003, "text messages only")
            return
        self.broadcast({"type": "message", "name": self.name, "text": message}, to=ROOM)

    def on_close(self, code, reason):
        self.broadcast({"type": "left", "name": self.name}, to=ROOM)


def settings_from_env():
    peers = os.environ.get("CHAT_PEERS", "").split()
    if not peers:
        return {}
    return {"websocket_peers": peers, "websocket_peer_index": int(os.environ["CHAT_PEER_INDEX"])}


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[(r"^/$", Page), (r"^/chat$", ChatSocket)],
    settings=settings_from_env(),
)

if __name__ == "__main__":
    app.run()
