"""send_file through a real Mongrel2: what the first tests left open.

Mongrel2 drops the spaces before a header's value but keeps those after it, so a client that
pads ``If-Range`` still gets its range only if the file's side trims the value.
"""

import os

import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.conditional import http_date
from brubeck.files import file_etag


class FileHandler(WebMessageHandler):
    async def get(self, name):
        return await self.send_file(name, root=self.application.state.root)


@pytest.fixture(scope="module")
def site(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    data = os.urandom(5000)
    (root / "data.bin").write_bytes(data)
    app = Brubeck(handler_tuples=[(r"^/files/(?P<name>.+)$", FileHandler)])
    app.state.root = root
    status = os.stat(root / "data.bin")
    return serve_module(app), data, file_etag(status), http_date(status.st_mtime)


@pytest.mark.parametrize("validator", ["etag", "date"])
def test_if_range_padded_with_whitespace_keeps_the_range(site, raw_http, validator):
    m2, data, etag, modified = site
    value = etag if validator == "etag" else modified
    conn = raw_http(m2, timeout=10)
    conn.send(
        b"GET /files/data.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=100-199\r\n"
        b"If-Range:   %s \t \r\n\r\n" % value.encode()
    )
    response = conn.read_response()
    assert response.status == 206
    assert response.header("Content-Range") == f"bytes 100-199/{len(data)}"
    assert response.body == data[100:200]
    # A stale validator, padded the same way, still gets the whole file on the same connection.
    conn.send(
        b"GET /files/data.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=100-199\r\n"
        b'If-Range:   "stale" \t \r\n\r\n'
    )
    stale = conn.read_response()
    assert (stale.status, stale.body) == (200, data)
