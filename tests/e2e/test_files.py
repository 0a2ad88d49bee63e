"""send_file through a real Mongrel2, with real HTTP clients (curl, httpx, raw sockets).

Mongrel2 forwards the handler's bytes untouched, so these check what a downloading client
sees: a 5 MB file byte for byte, a resumed download, ranges, a 304 and a HEAD on a connection
that stays usable, names that cannot leave the root, and downloads under
``download.flow_control`` (several at once, and one whose client reads slowly).
"""

import hashlib
import os
import socket
import subprocess
import threading
import time

import httpx
import pytest

from brubeck import Brubeck, WebMessageHandler

SIZE = 5 * 1024 * 1024
FLOW_CONTROL = {"download.flow_control": 1}


class FileHandler(WebMessageHandler):
    timeout = 60

    async def get(self, name):
        return await self.send_file(name, root=self.application.state.root)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    big = os.urandom(SIZE)
    (root / "big.bin").write_bytes(big)
    (root / "small.txt").write_bytes(b"small file\n")
    return root, big


def make_app(root):
    app = Brubeck(handler_tuples=[(r"^/files/(?P<name>.+)$", FileHandler)])
    app.state.root = root
    return app


@pytest.fixture(scope="module")
def site(serve_module, shared):
    """Mongrel2 without flow control (the default)."""
    root, big = shared
    return serve_module(make_app(root)), big


@pytest.fixture(scope="module")
def flow_site(serve_module, shared):
    """Mongrel2 with download.flow_control=1."""
    root, big = shared
    return serve_module(make_app(root), settings=FLOW_CONTROL), big


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def curl(*args: str) -> tuple[int, dict[str, str]]:
    """Status and headers of the last response curl received (the body goes where -o says)."""
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-D", "-", *args],
        capture_output=True,
        timeout=30,
        check=True,
    )
    head = done.stdout.strip().rsplit(b"\r\n\r\n", 1)[-1]
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def local_port(response: httpx.Response) -> int:
    """The client side's port: the same one means the same connection."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_curl_downloads_the_5_mb_file_whole(site, tmp_path):
    m2, big = site
    out = tmp_path / "big.bin"
    status, headers = curl("-o", str(out), f"{m2.url}/files/big.bin")
    assert status == 200
    assert headers["content-length"] == str(SIZE)
    assert "transfer-encoding" not in headers
    assert headers["accept-ranges"] == "bytes"
    assert out.stat().st_size == SIZE
    assert sha256(out.read_bytes()) == sha256(big)


def test_curl_http_1_0_download_ends_with_a_close(site, tmp_path):
    m2, big = site
    out = tmp_path / "big.bin"
    status, headers = curl("--http1.0", "-o", str(out), f"{m2.url}/files/big.bin")
    assert status == 200
    assert headers["connection"].lower() == "close"
    assert headers["content-length"] == str(SIZE)
    assert sha256(out.read_bytes()) == sha256(big)


def test_curl_range_gets_exactly_the_tail(site, tmp_path):
    m2, big = site
    tail = tmp_path / "tail.bin"
    status, headers = curl("-r", "1000000-", "-o", str(tail), f"{m2.url}/files/big.bin")
    assert status == 206
    assert headers["content-range"] == f"bytes 1000000-{SIZE - 1}/{SIZE}"
    assert headers["content-length"] == str(SIZE - 1000000)
    assert tail.read_bytes() == big[1000000:]
    assert sha256(big[:1000000] + tail.read_bytes()) == sha256(big)


def test_curl_resumes_a_partial_download(site, tmp_path):
    """``curl -C -`` asks for the rest of what it has on disk and appends it."""
    m2, big = site
    partial = tmp_path / "partial.bin"
    partial.write_bytes(big[:1234567])
    status, headers = curl("-C", "-", "-o", str(partial), f"{m2.url}/files/big.bin")
    assert status == 206
    assert headers["content-range"] == f"bytes 1234567-{SIZE - 1}/{SIZE}"
    assert sha256(partial.read_bytes()) == sha256(big)


def test_ranges_with_httpx(site):
    m2, big = site
    with httpx.Client(base_url=m2.url, timeout=10) as client:
        suffix = client.get("/files/big.bin", headers={"Range": "bytes=-300000"})
        middle = client.get("/files/big.bin", headers={"Range": "bytes=2000000-2999999"})
        small = client.get("/files/big.bin", headers={"Range": "bytes=100-199"})
        past = client.get("/files/big.bin", headers={"Range": f"bytes={SIZE}-"})
        after = client.get("/files/small.txt")
        ports = {local_port(r) for r in (suffix, middle, small, past, after)}
    assert len(ports) == 1  # one keep-alive connection for all five
    assert suffix.status_code == 206
    assert suffix.headers["content-range"] == f"bytes {SIZE - 300000}-{SIZE - 1}/{SIZE}"
    assert suffix.content == big[-300000:]
    assert middle.status_code == 206
    assert middle.headers["content-range"] == f"bytes 2000000-2999999/{SIZE}"
    assert middle.content == big[2000000:3000000]
    assert (small.status_code, small.content) == (206, big[100:200])
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{SIZE}"
    assert (after.status_code, after.content) == (200, b"small file\n")


def test_a_304_keeps_the_connection_usable(site):
    m2, big = site
    with httpx.Client(base_url=m2.url, timeout=10) as client:
        first = client.get("/files/big.bin")
        assert first.status_code == 200 and first.content == big
        etag = first.headers["etag"]
        fresh = client.get("/files/big.bin", headers={"If-None-Match": etag})
        dated = client.get(
            "/files/big.bin", headers={"If-Modified-Since": first.headers["last-modified"]}
        )
        after = client.get("/files/small.txt")
        ports = {local_port(r) for r in (first, fresh, dated, after)}
    assert len(ports) == 1  # the 304s left the connection usable
    for response in (fresh, dated):
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert (after.status_code, after.content) == (200, b"small file\n")


def test_head_of_the_large_file_then_another_request(site, raw_http):
    m2, big = site
    with httpx.Client(base_url=m2.url, timeout=10) as client:
        head = client.head("/files/big.bin")
        after = client.get("/files/big.bin", headers={"Range": "bytes=0-99"})
        assert local_port(head) == local_port(after)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(SIZE)
    assert head.content == b""
    assert (after.status_code, after.content) == (206, big[:100])
    # On the wire: nothing follows the head, so the next answer parses right after it.
    conn = raw_http(m2, timeout=10)
    conn.request("HEAD", "/files/big.bin")
    raw_head = conn.read_response(head_request=True)
    assert raw_head.header("Content-Length") == str(SIZE)
    conn.request("GET", "/files/small.txt")
    assert conn.read_response().body == b"small file\n"


def exchange(m2, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes (or 5 s of silence)."""
    data = b""
    with socket.create_connection(("127.0.0.1", m2.config.port), timeout=5) as sock:
        sock.sendall(request)
        try:
            while piece := sock.recv(65536):
                data += piece
        except TimeoutError:
            pass
    return data


@pytest.mark.parametrize(
    "target",
    [
        "/files/..%2F..%2Fetc%2Fpasswd",
        "/files/../../etc/passwd",
        "/files/" + "..%2F" * 12 + "etc%2Fpasswd",
        "/files/" + "../" * 12 + "etc/passwd",
        "/files/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/files//etc/passwd",
        "/files/%2Fetc%2Fpasswd",
    ],
)
def test_traversal_attempts_never_reach_etc_passwd(site, target):
    m2, _ = site
    data = exchange(
        m2,
        f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode(),
    )
    assert data, "no answer at all"
    status_line = data.split(b"\r\n", 1)[0]
    status = int(status_line.split()[1])
    assert 400 <= status < 500, status_line
    assert b"root:" not in data


def test_flow_controlled_download_arrives_whole(flow_site, tmp_path):
    m2, big = flow_site
    out = tmp_path / "big.bin"
    status, headers = curl("-o", str(out), f"{m2.url}/files/big.bin")
    assert status == 200
    assert headers["content-length"] == str(SIZE)
    assert sha256(out.read_bytes()) == sha256(big)


def test_four_concurrent_flow_controlled_downloads(flow_site):
    m2, big = flow_site
    digests: dict[int, str] = {}
    errors: list[BaseException] = []

    def download(n: int) -> None:
        try:
            digest = hashlib.sha256()
            with httpx.stream("GET", f"{m2.url}/files/big.bin", timeout=20) as response:
                assert response.status_code == 200
                assert response.headers["content-length"] == str(SIZE)
                for piece in response.iter_bytes():
                    digest.update(piece)
            digests[n] = digest.hexdigest()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=download, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert digests == dict.fromkeys(range(4), sha256(big))


def test_a_slow_reader_under_flow_control_gets_the_whole_file(flow_site):
    m2, big = flow_site
    digest, size, reads = hashlib.sha256(), 0, 0
    started = time.monotonic()
    with (
        httpx.Client(base_url=m2.url, timeout=20) as client,
        client.stream("GET", "/files/big.bin") as response,
    ):
        assert response.status_code == 200
        for piece in response.iter_bytes(chunk_size=64 * 1024):
            digest.update(piece)
            size += len(piece)
            reads += 1
            if reads <= 10:
                time.sleep(0.2)
        port = local_port(response)
        follow = client.get("/files/small.txt")  # the connection is still good afterwards
        assert local_port(follow) == port
    assert time.monotonic() - started >= 2.0
    assert (size, digest.hexdigest()) == (SIZE, sha256(big))
    assert (follow.status_code, follow.content) == (200, b"small file\n")


def test_flow_controlled_range_and_304(flow_site):
    m2, big = flow_site
    with httpx.Client(base_url=m2.url, timeout=10) as client:
        ranged = client.get("/files/big.bin", headers={"Range": "bytes=1000000-3999999"})
        fresh = client.get("/files/big.bin", headers={"If-None-Match": ranged.headers["etag"]})
        after = client.get("/files/small.txt")
    assert ranged.status_code == 206
    assert ranged.content == big[1000000:4000000]
    assert fresh.status_code == 304 and fresh.content == b""
    assert (after.status_code, after.content) == (200, b"small file\n")
