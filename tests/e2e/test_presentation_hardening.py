"""Access-log lines through a real Mongrel2: what a client can put into them.

The app writes the raw path into the line decoded as Latin-1, without escaping: 0x85 would be
NEL (a line break for Python's ``splitlines``), 0x9B CSI (an ANSI escape introducer). These
tests pin that Mongrel2 answers such request lines with its own 400, so they never get there.
"""

from __future__ import annotations

import logging
import unicodedata

import pytest

from brubeck import Brubeck, WebMessageHandler


class Hello(WebMessageHandler):
    def get(self, rest):
        return "hello"


@pytest.fixture
def site(serve):
    return serve(Brubeck(handler_tuples=[(r"^/(.*)$", Hello)], access_log=True))


def access_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "brubeck.access"]


@pytest.mark.parametrize("path", ["/x\x1b[2J", "/x\x85", "/x\x9b2J", "/caf\xc3\xa9"])
def test_control_and_high_bytes_in_the_path_never_reach_the_log(
    site, raw_http, caplog, wait_for, path
):
    """The plain access line quotes the raw path: Mongrel2 must refuse such bytes first."""
    caplog.set_level(logging.INFO, logger="brubeck.access")
    conn = raw_http(site)
    conn.request("GET", path)
    assert conn.read_response().status == 400
    after = raw_http(site)  # Mongrel2 closed the first connection
    after.request("GET", "/after")
    assert after.read_response().status == 200
    lines = wait_for(
        lambda: [m for m in access_messages(caplog) if "/after" in m], what="the next line"
    )
    every = "".join(access_messages(caplog))
    assert [c for c in every if unicodedata.category(c) == "Cc" or ord(c) > 0x7E] == []
    assert len(lines) == 1


def test_a_client_header_named_remote_addr_does_not_spoof_the_address(
    site, raw_http, caplog, wait_for
):
    """Mongrel2 lower-cases client header names, so REMOTE_ADDR stays its own."""
    caplog.set_level(logging.INFO, logger="brubeck.access")
    conn = raw_http(site)
    conn.request("GET", "/spoof", headers=[("REMOTE_ADDR", "6.6.6.6")])
    assert conn.read_response().status == 200
    lines = wait_for(lambda: access_messages(caplog), what="an access-log line")
    assert lines[0].startswith('127.0.0.1 "GET /spoof" 200 5 '), lines[0]
