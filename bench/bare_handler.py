"""Framework-free Mongrel2 handler: the baseline the benchmarks measure Brubeck against.

A blocking pyzmq loop that parses each request as Brubeck must (split, tnetstring headers),
picks the answer by path and replies. Its answers are byte for byte as long as Brubeck's for
the same paths of examples/hello and bench/apps/hello_bench.py, Date header included, so the
comparison measures the framework and not the size of the response.

Usage: python bench/bare_handler.py [--spin-us N] PULL_ADDR PUB_ADDR

``--spin-us N`` burns N µs of CPU per request (a busy loop), for the sensitivity check in
bench/README.md ("Where a gap comes from"): how the rate falls as a handler spends more CPU per
request. Without it the loop pays one test of a local per request.
"""

import argparse
import time
from email.utils import formatdate

import tnetstring
import zmq

TEXT_TYPE = b"text/plain; charset=utf-8"
HTML_TYPE = b"text/html; charset=utf-8"
JSON_TYPE = b"application/json"

#: Fixed answers: (content type, body) by path.
FIXED = {
    b"/brubeck": (HTML_TYPE, b"Take five"),  # examples/hello DemoHandler
    b"/text": (TEXT_TYPE, b"Hello, World!"),
    b"/async/text": (TEXT_TYPE, b"Hello, World!"),
    b"/json": (JSON_TYPE, b'{"message":"Hello, World!"}'),
    b"/async/json": (JSON_TYPE, b'{"message":"Hello, World!"}'),
    b"/await/json": (JSON_TYPE, b'{"message":"Hello, World!"}'),
}
#: Paths ending in an id, answered {"user":"<id>"} like the apps' UserHandler.
USER_PREFIXES = (b"/user/", b"/async/user/")
NOT_FOUND = (TEXT_TYPE, b"not found\n")

_date_second = 0
_date_line = b""


def date_line() -> bytes:
    """Brubeck sends a Date header, so the baseline does too (formatted once a second)."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()
    return _date_line


def answer(path: bytes) -> bytes:
    """The HTTP response for a request path."""
    found = FIXED.get(path)
    status = b"200 OK"
    if found is None:
        for prefix in USER_PREFIXES:
            if path.startswith(prefix):
                found = (JSON_TYPE, b'{"user":"%s"}' % path[len(prefix) :])
                break
        else:
            found, status = NOT_FOUND, b"404 Not Found"
    ctype, body = found
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        ctype,
        len(body),
        date_line(),
        body,
    )


def wants_close(headers: dict) -> bool:
    conn = headers.get(b"connection", b"")
    if isinstance(conn, list):  # repeated header
        conn = b",".join(conn)
    return b"close" in conn.lower() or headers.get(b"VERSION") == b"HTTP/1.0"


def spin(seconds: float) -> None:
    """Burn this thread's CPU, as a slower handler would (CPU time: being preempted on a busy
    machine does not count)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def main(pull_addr: str, pub_addr: str, spin_us: float = 0.0) -> None:
    ctx = zmq.Context()
    pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
    # A PUB socket silently drops messages past its high-water mark (1000 by default), which
    # would make the baseline look faster than it is. Unlimited is safe: the load generator
    # bounds the replies in flight (wrk's connections, capacity.py's window).
    pub.setsockopt(zmq.SNDHWM, 0)
    pull.connect(pull_addr)
    pub.connect(pub_addr)
    burn = spin_us / 1e6
    try:
        while True:
            sender, conn_id, path, rest = pull.recv().split(b" ", 3)
            if path == b"@*":  # disconnect (or credits) notice
                continue
            headers, _ = tnetstring.pop(rest)
            if burn:
                spin(burn)
            target = b"%s %d:%s, " % (sender, len(conn_id), conn_id)
            pub.send(target + answer(path))
            if wants_close(headers):
                pub.send(target)  # an empty body tells Mongrel2 to close the connection
    except KeyboardInterrupt:
        pass
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The framework-free baseline handler.")
    parser.add_argument("pull_addr")
    parser.add_argument("pub_addr")
    parser.add_argument("--spin-us", type=float, default=0.0, help="CPU µs to burn per request")
    args = parser.parse_args()
    main(args.pull_addr, args.pub_addr, args.spin_us)
