"""send_file and StaticFileHandler through a real Mongrel2: hostile requests a client can
send, and that Mongrel2 passes on to the handler untouched.

A Range of thousands of digits does not fit in Mongrel2's default 4096-byte request buffer
(Mongrel2 answers 400 itself); it reaches the handler once ``limits.buffer_size`` is raised, as
the Mongrel2 manual advises for large headers (cookies, tokens).

The tests whose docstring starts with "Was a bug." failed when they were written.
"""

import os

import pytest

from brubeck import Brubeck, StaticFileHandler, WebMessageHandler

#: More digits than int() converts by default (sys.get_int_max_str_digits() is 4300).
MANY = 5000


class FileHandler(WebMessageHandler):
    async def get(self, name):
        return await self.send_file(name, root=self.application.state.root)


#: Room for large request headers, as the Mongrel2 manual advises (content_length >= it).
BIG_HEADERS = {"limits.buffer_size": 16384, "limits.content_length": 20480}


@pytest.fixture(scope="module")
def site(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    data = os.urandom(5000)
    (root / "data.bin").write_bytes(data)
    (root / "index.html").write_bytes(b"<h1>index</h1>\n")
    app = Brubeck(
        handler_tuples=[
            (r"^/files/(?P<name>.+)$", FileHandler),
            (
                r"^/site/(?P<path>.*)$",
                StaticFileHandler,
                {"root": str(root), "default_filename": "index.html"},
            ),
        ]
    )
    app.state.root = root
    return serve_module(app, settings=BIG_HEADERS), data


def test_a_range_of_thousands_of_digits_is_answered_and_the_connection_stays_usable(site, raw_http):
    """Was a bug. With room for large headers, Mongrel2 passes a Range of 5000 digits on;
    ``int()`` refused it and the request was a 500 with a traceback logged. A range past
    any size is a 416 that names the size (RFC 9110 §15.5.17), and leading zeros do not
    change a number (RFC 9110 §14.1.1)."""
    m2, data = site
    conn = raw_http(m2, timeout=10)
    conn.request("GET", "/files/data.bin", [("Range", "bytes=" + "9" * MANY + "-")])
    past = conn.read_response()
    conn.request("GET", "/files/data.bin", [("Range", "bytes=" + "0" * MANY + "10-19")])
    padded = conn.read_response()
    assert past.status == 416
    assert past.header("Content-Range") == f"bytes */{len(data)}"
    assert padded.status == 206
    assert padded.body == data[10:20]


def test_a_static_name_too_long_for_the_file_system_is_a_404(site, raw_http):
    """Was a bug. Mongrel2 passes a 300-byte path segment on (its default buffer has room
    for it too); with ``default_filename``, ``StaticFileHandler`` let ``Path.is_dir()``
    raise ENAMETOOLONG: a 500 with a traceback logged, where every other name that is not
    a file is a 404."""
    m2, _ = site
    conn = raw_http(m2, timeout=10)
    conn.request("GET", "/site/" + "a" * 300)
    response = conn.read_response()
    assert response.status == 404
