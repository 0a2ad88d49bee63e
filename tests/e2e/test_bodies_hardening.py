"""Request bodies through a real Mongrel2: what a client's own upload headers can do."""

from __future__ import annotations

import contextlib
import os

from brubeck import Brubeck, WebMessageHandler


class Size(WebMessageHandler):
    """The size of the body, inline or spooled."""

    def post(self) -> dict:
        return {"size": len(self.request.body), "spooled": self.request.upload is not None}


def spooled_files(m2) -> list[str]:
    return sorted(os.listdir(m2.upload_dir)) if m2.upload_dir.exists() else []


def test_a_forged_upload_done_header_gets_one_answer_and_leaves_no_file(serve, raw_http, wait_for):
    """Was a bug. A client that sends its own ``X-Mongrel2-Upload-Done`` header with a body
    Mongrel2 spools: Mongrel2 passes the header through on the start notice (and replaces it
    on the done notice), so Brubeck answered the start notice 400, kept the connection, and
    then answered the done notice 200: two responses to one request, which desynchronises a
    keep-alive connection (and any proxy multiplexing clients on it)."""
    m2 = serve(Brubeck(handler_tuples=[(r"^/size$", Size)]))
    conn = raw_http(m2, timeout=2)
    forged = [("X-Mongrel2-Upload-Done", "tmp/forged")]
    conn.request("POST", "/size", headers=forged, body=b"x" * 100_000)
    first = conn.read_response()
    extra = None
    with contextlib.suppress(ConnectionError, TimeoutError):  # closed, or nothing more
        extra = conn.read_response()
    assert extra is None, f"a second response to one request: {first} then {extra}"
    wait_for(lambda: spooled_files(m2) == [], timeout=5)
