"""Brubeck's receiving and sending, with the bare handler's work per request: a diagnostic.

This app reads and replies through ``Mongrel2Connection`` as every Brubeck app does (each
wakeup drains the queue, the replies of a run leave together), but answers each message with
bench/bare_handler.py's own parse-and-answer code instead of a Request, the router, a
handler and a Response. Against the bare handler it measures what Brubeck's I/O costs or
saves; against a real app, what the framework's per-request work costs:

    python bench/e2e.py --app bench/apps/io_only.py:app --path /brubeck --access-log off
"""

import sys
from pathlib import Path

import tnetstring

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bare_handler import answer, wants_close

from brubeck import Brubeck, Mongrel2Connection


class IOOnlyApp(Brubeck):
    """Every message is answered like the bare handler answers it; nothing else runs."""

    def handle_message(self, raw: bytes) -> None:
        sender, conn_id, path, rest = raw.split(b" ", 3)
        if path == b"@*":  # disconnect (or credits) notice
            return
        headers, _ = tnetstring.pop(rest)
        target = b"%s %d:%s, " % (sender, len(conn_id), conn_id)
        conn = self.msg_conn
        assert conn is not None
        conn.send_raw(target + answer(path))
        if wants_close(headers):
            conn.send_raw(target)


app = IOOnlyApp(msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"))

if __name__ == "__main__":
    app.run()
