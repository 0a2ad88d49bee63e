"""A Mongrel2 restart under a handler that is still working: the late answer goes nowhere.

A new Mongrel2 numbers its connections from 1 again and keeps the sender id, while ZeroMQ
reconnects the handler's sockets without a word. An answer to a request of the old Mongrel2
must not reach the new client that got the same connection id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import httpx
import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.mongrel2 import Mongrel2Process
from brubeck.request import Request


class Hold(WebMessageHandler):
    """Answers once ``/release`` was requested; records which connection it holds."""

    async def get(self, name: str) -> str:
        state = self.application.state
        state.held.append((name, self.request.conn_id))
        await state.release.wait()
        return f"answer for {name}"


def make_app() -> Brubeck:
    app = Brubeck(handler_tuples=[(r"^/hold/(\w+)$", Hold)])
    app.state.held = []
    app.state.release = asyncio.Event()

    @app.add_route(r"^/release$")
    def release(application: Brubeck, request: Request) -> str:
        application.state.release.set()
        return "released"

    @app.add_route(r"^/id$")
    def conn_id(application: Brubeck, request: Request) -> str:
        return request.conn_id.decode()

    return app


@pytest.mark.parametrize("how", ["kill -9", "clean stop"])
def test_a_late_answer_never_reaches_the_new_client_with_the_same_id(
    serve, raw_http, wait_for, how
):
    app = make_app()
    m2 = serve(app)
    old = raw_http(m2)
    old.request("GET", "/hold/old")
    wait_for(lambda: app.state.held, what="the old request")
    old_id = app.state.held[0][1]

    if how == "kill -9":
        os.kill(m2.pid, signal.SIGKILL)
    m2.stop()  # reaps a killed Mongrel2; stops the other one gracefully (SIGINT)
    again = Mongrel2Process(m2.config, m2.run_dir)  # the same ports, the same sender id
    again.start()
    try:
        clients = []  # new connections, each held, until one gets the old request's id
        for k in range(20):
            client = raw_http(again)
            client.request("GET", f"/hold/new{k}")
            wait_for(lambda: len(app.state.held) == k + 2, what="a new request")  # noqa: B023
            clients.append((f"new{k}", client))
            new_id = app.state.held[-1][1]
            if new_id == old_id:
                break
            assert int(new_id) < int(old_id), f"ids from {new_id!r} on, never {old_id!r}"
        else:
            pytest.fail(f"no new connection got id {old_id!r}")

        with httpx.Client(base_url=again.url, timeout=5) as http:
            assert http.get("/release").text == "released"
            for name, client in clients:
                response = client.read_response()
                assert response.status == 200
                assert response.body == f"answer for {name}".encode()
            same = clients[-1][1]
            assert same._buffer == b"", "more came after the answer"
            same.sock.settimeout(0.3)
            with pytest.raises(socket.timeout):  # the old answer would come here
                print("after the answer:", same.sock.recv(65536))
            assert http.get("/id").status_code == 200  # and the app goes on serving
    finally:
        again.stop()
