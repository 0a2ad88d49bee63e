"""An MDP/0.1 worker on plain pyzmq, without Brubeck: what a worker in any language does.

It registers for a service ("echo" by default) and answers each request with its body frames
unchanged. It heartbeats, takes the broker for dead after LIVENESS silent heartbeats and
registers again on a new socket, and says DISCONNECT when stopped with Ctrl-C or SIGTERM.

Usage: python examples/services/echo_worker.py tcp://127.0.0.1:5555 [--service echo]
"""

import argparse
import signal
import sys
import time

import zmq

WORKER = b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"
LIVENESS = 3


def connect(ctx: zmq.Context, broker: str, service: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(broker)
    sock.send_multipart([b"", WORKER, READY, service])
    return sock


def serve(broker: str, service: bytes, heartbeat: float) -> None:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    ctx = zmq.Context()
    sock = connect(ctx, broker, service)
    heard = sent = time.monotonic()
    try:
        while not stopping:
            wake = min(heard + LIVENESS * heartbeat, sent + heartbeat)
            if sock.poll(max(0.0, wake - time.monotonic()) * 1000, zmq.POLLIN):
                frames = sock.recv_multipart()
                heard = time.monotonic()
                if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
                    print("echo_worker: dropped a message that is not MDP/0.1", file=sys.stderr)
                elif frames[2] == REQUEST and len(frames) >= 6 and frames[4] == b"":
                    address, body = frames[3], frames[5:]
                    sock.send_multipart([b"", WORKER, REPLY, address, b"", *body])
                    sent = time.monotonic()
                elif frames[2] == DISCONNECT:
                    heard = 0.0  # reconnect below
            now = time.monotonic()
            if now - heard >= LIVENESS * heartbeat:
                print("echo_worker: lost the broker; registering again", file=sys.stderr)
                sock.close()
                time.sleep(heartbeat)
                sock = connect(ctx, broker, service)
                heard = sent = time.monotonic()
            elif now - sent >= heartbeat:
                sock.send_multipart([b"", WORKER, HEARTBEAT])
                sent = now
    except KeyboardInterrupt:
        pass
    sock.send_multipart([b"", WORKER, DISCONNECT])
    sock.close(linger=500)
    ctx.term()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", nargs="?", default="tcp://127.0.0.1:5555")
    parser.add_argument("--service", default="echo")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds (default 1.0)")
    args = parser.parse_args()
    serve(args.broker, args.service.encode(), args.heartbeat)
