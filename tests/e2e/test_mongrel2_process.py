"""brubeck.mongrel2 against a real Mongrel2, with a framework-free pyzmq handler."""

import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import tnetstring
import zmq

from brubeck.mongrel2 import Mongrel2Config, Mongrel2Process, StaticDir


class RawHandler(threading.Thread):
    """The smallest correct handler: answer each request with its path, nothing else."""

    def __init__(self, send_spec: str, recv_spec: str) -> None:
        super().__init__(daemon=True)
        self.send_spec, self.recv_spec = send_spec, recv_spec
        self.requests: list[tuple[bytes, dict, bytes]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pub = ctx.socket(zmq.PUB)
        try:
            pull.connect(self.send_spec)
            pub.connect(self.recv_spec)
            while not self._stop_event.is_set():
                if not pull.poll(50):
                    continue
                sender, conn_id, path, rest = pull.recv().split(b" ", 3)
                if path == b"@*":  # Mongrel2 notice (disconnect)
                    continue
                headers, rest = tnetstring.pop(rest)
                body, _ = tnetstring.pop(rest)
                self.requests.append((path, headers, body))
                reply = b"hello " + path
                http = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply)
                pub.send(b"%s %d:%s, %s" % (sender, len(conn_id), conn_id, http))
        finally:
            pull.close(linger=0)
            pub.close(linger=0)
            ctx.term()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
        assert not self.is_alive()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_get_through_real_mongrel2(mongrel2_factory):
    m2 = mongrel2_factory()
    handler = RawHandler(m2.config.send_spec, m2.config.recv_spec)
    handler.start()
    try:
        with httpx.Client(base_url=m2.url, timeout=5) as client:
            resp = client.get("/hello/world", params={"a": "1"})
        assert resp.status_code == 200
        assert resp.text == "hello /hello/world"
        path, headers, body = handler.requests[0]
        assert body == b""
        assert path == b"/hello/world"
        assert headers[b"METHOD"] == b"GET"
        assert headers[b"QUERY"] == b"a=1"
    finally:
        handler.stop()
    pid = m2.pid
    assert pid is not None
    m2.stop()
    assert _gone(pid)
    assert not m2.pid_file.exists()
    assert m2.pid is None
    m2.stop()  # idempotent


def test_static_dir_route(tmp_path):
    run_dir = tmp_path / "site"
    (run_dir / "static" / "sub").mkdir(parents=True)
    (run_dir / "static" / "hello.txt").write_text("static hello\n")
    (run_dir / "static" / "sub" / "index.html").write_text("<p>index</p>")
    config = Mongrel2Config.on_free_ports(routes={"/": "handler", "/static/": StaticDir("static/")})
    with Mongrel2Process(config, run_dir) as m2, httpx.Client(base_url=m2.url, timeout=5) as c:
        resp = c.get("/static/hello.txt")
        assert resp.status_code == 200
        assert resp.text == "static hello\n"
        assert resp.headers["content-type"] == "text/plain"
        resp = c.get("/static/sub/")
        assert resp.status_code == 200
        assert resp.text == "<p>index</p>"
        assert c.get("/static/missing.txt").status_code == 404
        pid = m2.pid
    assert pid is not None and _gone(pid)


def test_refuses_second_instance_in_same_dir(mongrel2_factory):
    m2 = mongrel2_factory()
    twin = Mongrel2Process(Mongrel2Config.on_free_ports(), m2.run_dir)
    with pytest.raises(RuntimeError, match="already runs"):
        twin.start()
    assert m2.running


def test_stale_pid_file_is_removed(tmp_path):
    run_dir = tmp_path / "site"
    (run_dir / "run").mkdir(parents=True)
    (run_dir / "run" / "mongrel2.pid").write_text("999999999")
    with Mongrel2Process(Mongrel2Config.on_free_ports(), run_dir) as m2:
        assert m2.pid is not None
        assert m2.pid_file.read_text().strip() == str(m2.pid)


@contextlib.contextmanager
def port_in_use() -> Iterator[int]:
    """Hold a listening port so that Mongrel2 cannot bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_startup_failure_reports_logs(tmp_path):
    with port_in_use() as port:
        m2 = Mongrel2Process(Mongrel2Config.on_free_ports(port=port), tmp_path)
        with pytest.raises(RuntimeError, match="exited with code") as info:
            m2.start(timeout=15)
    assert f"Can't announce on TCP port {port}" in str(info.value)
    assert not m2.running


def test_upload_path_resolves_into_run_dir(mongrel2_factory):
    m2 = mongrel2_factory(settings={"limits.content_length": 4096})
    handler = UploadHandler(m2)
    handler.start()
    try:
        payloads = [os.urandom(4097), os.urandom(300_000)]
        with httpx.Client(base_url=m2.url, timeout=5) as client:
            for payload in payloads:
                resp = client.post("/upload", content=payload)
                assert resp.status_code == 200
                assert resp.text == str(len(payload))
        assert handler.saw == payloads
        assert list(m2.upload_dir.iterdir()) == []
    finally:
        handler.stop()


class UploadHandler(RawHandler):
    """Answer only the upload-done message, with the size of the file it read and deleted."""

    def __init__(self, m2: Mongrel2Process) -> None:
        super().__init__(m2.config.send_spec, m2.config.recv_spec)
        self.m2 = m2
        self.saw: list[bytes] = []

    def run(self) -> None:
        ctx = zmq.Context()
        pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
        try:
            pull.connect(self.send_spec)
            pub.connect(self.recv_spec)
            while not self._stop_event.is_set():
                if not pull.poll(50):
                    continue
                sender, conn_id, path, rest = pull.recv().split(b" ", 3)
                headers, _ = tnetstring.pop(rest)
                done = headers.get(b"x-mongrel2-upload-done")
                if path == b"@*" or done is None:
                    continue
                file = self.m2.resolve_path(done.decode())
                assert file.parent == self.m2.upload_dir
                self.saw.append(file.read_bytes())
                file.unlink()
                reply = str(len(self.saw[-1])).encode()
                http = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply)
                pub.send(b"%s %d:%s, %s" % (sender, len(conn_id), conn_id, http))
        finally:
            pull.close(linger=0)
            pub.close(linger=0)
            ctx.term()
