"""Framework-free Mongrel2 handler: the baseline that bench/e2e.py measures Brubeck against.

Usage: python bench/bare_handler.py PULL_ADDR PUB_ADDR
"""

import sys

import tnetstring
import zmq

BODY = b"Hello, World!"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


def wants_close(headers: dict) -> bool:
    conn = headers.get(b"connection", b"")
    if isinstance(conn, list):  # repeated header
        conn = b",".join(conn)
    return b"close" in conn.lower() or headers.get(b"VERSION") == b"HTTP/1.0"


def main(pull_addr: str, pub_addr: str) -> None:
    ctx = zmq.Context()
    pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
    pull.connect(pull_addr)
    pub.connect(pub_addr)
    try:
        while True:
            sender, conn_id, path, rest = pull.recv().split(b" ", 3)
            if path == b"@*":  # disconnect (or credits) notice
                continue
            headers, _ = tnetstring.pop(rest)
            target = b"%s %d:%s, " % (sender, len(conn_id), conn_id)
            pub.send(target + RESPONSE)
            if wants_close(headers):
                pub.send(target)  # an empty body tells Mongrel2 to close the connection
    except KeyboardInterrupt:
        pass
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
