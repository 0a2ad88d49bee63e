"""Adversarial cases for long polls, handler timeouts, housekeeping and SSE fields.

Driven through ``TestClient`` (the app's real receive loop) and checked on the bytes each
connection receives: one answer per request, nothing to a connection that left, timeouts
that hold whatever the settings say.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from brubeck import Brubeck, Response, WebMessageHandler
from brubeck.streaming import format_event
from brubeck.testing import TestClient, TestResponse
from brubeck.waiting import WaitingRoom
from tests import fixtures
from tests.test_app_edges import quiet, until
from tests.test_delivery_hardening import notice


async def answer(client: TestClient, conn_id: int, within: float = 1.0) -> TestResponse:
    """The next HTTP answer to ``conn_id`` within ``within`` seconds, past Mongrel2's
    keep-alive ctl messages; TimeoutError if none comes."""
    async with asyncio.timeout(within):
        while True:
            raw = await client.receive(conn_id)
            if b":3:ctl," not in raw[:12]:
                return TestResponse(raw, closed=False)


def room_app(timeout: float) -> tuple[Brubeck, WaitingRoom]:
    app = Brubeck(shutdown_timeout=0.2)
    room = WaitingRoom(app)

    class Wait(WebMessageHandler):
        async def get(self) -> Response:
            return await room.wait(self.request, timeout=timeout)

    class Publish(WebMessageHandler):
        def post(self) -> dict[str, int]:
            return {"released": room.release(Response("news"))}

    app.add_route_rule(r"^/wait$", Wait)
    app.add_route_rule(r"^/publish$", Publish)
    return app, room


# WaitingRoom


async def test_a_release_in_the_turns_after_a_waiters_timeout_sends_one_answer() -> None:
    """Was a bug. A release just after a waiter timed out must not answer it besides its 204."""
    # The timeout cancelled the room's future; until the task runs wait()'s finally (two loop
    # turns, when a publish can be read) release still sends it the shared 200.
    app, room = room_app(timeout=0.05)
    async with TestClient(app) as client:
        await client.send_raw(client.build_message("GET", "/wait", conn_id=1))
        await until(lambda: len(room) == 1, "the waiter")
        (future,) = room._waiting.values()
        while not future.done():  # the timeout fired; the task has not run its finally yet
            await asyncio.sleep(0)
        assert len(room) == 1
        room.release(Response("news"))
        answers = await fixtures.drain(client, 1, wait=0.3)
        statuses = [TestResponse(a, closed=False).status_code for a in answers]
        assert len(answers) == 1, f"one request, {len(answers)} answers: {statuses}"


async def test_a_release_in_the_same_batch_as_the_waiters_disconnect_sends_it_nothing() -> None:
    """Was a bug. A release read in one batch with a waiter's disconnect must not answer it."""
    # The disconnect only asks for the task's cancellation: its room entry stays until the task
    # runs, and may_stream() is True once the connection's queue is forgotten.
    app, room = room_app(timeout=2)
    async with TestClient(app) as client:
        await client.send_raw(client.build_message("GET", "/wait", conn_id=1))
        await client.send_raw(client.build_message("GET", "/wait", conn_id=2))
        await until(lambda: len(room) == 2, "the waiters")
        assert app.msg_conn is not None
        app.msg_conn.pause_reading()  # both messages then arrive in one read
        await client.send_raw(notice(client, 1, "disconnect"))
        await client.send_raw(client.build_message("POST", "/publish", conn_id=3))
        await asyncio.sleep(0.05)
        app.msg_conn.resume_reading()
        published = TestResponse(await client.receive(3), closed=False)
        assert TestResponse(await client.receive(2), closed=False).text == "news"
        sent_to_leaver = await fixtures.drain(client, 1, wait=0.2)
        assert sent_to_leaver == [], f"sent after the client left: {sent_to_leaver!r}"
        assert published.json() == {"released": 1}


# Handler timeouts and the housekeeping task


async def test_a_nan_handler_timeout_still_ends_the_request() -> None:
    """Was a bug. A handler `timeout` of NaN must not disable the deadline (it never expired)."""
    # nan <= now is always False in InFlight.expired: the request was never answered.
    app = Brubeck(request_timeout=0.1, keepalive_interval=0.05, shutdown_timeout=0.1)

    class Forever(WebMessageHandler):
        timeout = float("nan")

        async def get(self) -> None:
            await asyncio.Event().wait()

    app.add_route_rule(r"^/$", Forever)
    async with TestClient(app, timeout=1.0) as client:
        await client.send_raw(client.build_message("GET", "/", conn_id=1))
        try:
            response = await answer(client, 1)
        except TimeoutError:
            pytest.fail("no answer within 1 s to a handler with a NaN timeout")
        assert response.status_code in (500, 504)


async def test_one_failed_keep_alive_does_not_end_every_later_timeout() -> None:
    """Was a bug. One failing keep-alive ctl must not kill the sweep that answers timeouts (504)."""
    # send_raw raises BufferError past backlog_limit; _housekeeping let it end its task, so
    # no handler was ever timed out again and no held connection kept alive, silently.
    app = Brubeck(keepalive_interval=0.05, shutdown_timeout=0.1)

    class Hold(WebMessageHandler):
        timeout = 3600

        async def get(self) -> None:
            await asyncio.Event().wait()

    class Slow(WebMessageHandler):
        timeout = 0.1

        async def get(self) -> str:
            await asyncio.sleep(2)
            return "too late"

    app.add_route_rule(r"^/hold$", Hold)
    app.add_route_rule(r"^/slow$", Slow)
    async with TestClient(app, timeout=1.0) as client:
        assert app.msg_conn is not None
        real_ctl, calls = app.msg_conn.ctl, []

        def ctl(*args: object, **kwargs: object) -> None:
            calls.append(args)
            if len(calls) == 1:
                raise BufferError("100000 replies are waiting for Mongrel2 to read them")
            real_ctl(*args, **kwargs)  # type: ignore[arg-type]

        app.msg_conn.ctl = ctl  # type: ignore[method-assign]
        await client.send_raw(client.build_message("GET", "/hold", conn_id=1))
        await until(lambda: calls, "the first keep-alive")
        await client.send_raw(client.build_message("GET", "/slow", conn_id=2))
        try:
            response = await answer(client, 2)
        except TimeoutError:
            pytest.fail("no 504: the timeout sweep died with the failed keep-alive")
        assert response.status_code == 504


async def test_a_zero_keepalive_interval_does_not_spin_and_flood_mongrel2() -> None:
    """Was a bug. keepalive_interval=0 must be refused, not spin the loop sending ctls each turn."""
    # _housekeeping then sleeps 0 forever: thousands of keep-alives a second per held
    # connection. BRUBECK_KEEPALIVE_INTERVAL is checked > 0; the setting was not.
    app = Brubeck(keepalive_interval=0, shutdown_timeout=0.1)

    class Hold(WebMessageHandler):
        async def get(self) -> None:
            await asyncio.Event().wait()

    app.add_route_rule(r"^/hold$", Hold)
    try:
        async with TestClient(app) as client:
            await client.send_raw(client.build_message("GET", "/hold", conn_id=1))
            received, end = 0, time.monotonic() + 0.2
            while time.monotonic() < end:
                try:
                    async with asyncio.timeout(0.05):
                        await client.receive(1)
                        received += 1
                except TimeoutError:
                    pass
    except ValueError:
        return  # refused at start: fine
    assert received <= 2, f"{received} keep-alives to one connection in 0.2 s"


# Server-Sent Events


@pytest.mark.parametrize("retry", ["1000\nevent: evil", "1000\rdata: x", "1e3", -1.5e400])
def test_a_retry_cannot_smuggle_fields_into_an_event(retry: object) -> None:
    """``retry`` goes through int(): text with a line break (or anything not an integer) is
    refused, never written into the stream as extra fields."""
    with pytest.raises((ValueError, OverflowError)):
        format_event("x", retry=retry)  # type: ignore[arg-type]


# max_in_flight


async def test_a_disconnect_is_heard_while_the_app_is_at_max_in_flight() -> None:
    """Was a bug. At max_in_flight a disconnect notice must still be read and free its slot."""
    # Reading pauses for notices too: on_connection_close never runs, the task keeps its slot
    # until its own timeout (an hour for the documented SSE ticker) and nothing is served.
    closed: list[bytes] = []
    app = Brubeck(max_in_flight=1, shutdown_timeout=0.2)

    class Hold(WebMessageHandler):
        timeout = 3600

        async def get(self) -> None:
            await asyncio.Event().wait()

        def on_connection_close(self) -> None:
            closed.append(self.request.conn_id)

    class Quick(WebMessageHandler):
        def get(self) -> str:
            return "quick"

    app.add_route_rule(r"^/hold$", Hold)
    app.add_route_rule(r"^/quick$", Quick)
    async with TestClient(app, timeout=1.0) as client:
        await client.send_raw(client.build_message("GET", "/hold", conn_id=1))
        await until(lambda: len(app._inflight) == 1, "the held request")
        await client.send_raw(notice(client, 1, "disconnect"))
        try:
            await until(lambda: closed, "on_connection_close", timeout=1.0)
        except TimeoutError:
            pytest.fail("the disconnect notice was not read while at max_in_flight")
        await client.send_raw(client.build_message("GET", "/quick", conn_id=2))
        assert TestResponse(await client.receive(2), closed=False).text == "quick"
        assert await quiet(client, 1, 0.05)


def full_app() -> tuple[Brubeck, asyncio.Event]:
    """max_in_flight=1: one /hold fills the process; /quick answers at once once it runs."""
    gate = asyncio.Event()
    app = Brubeck(max_in_flight=1, shutdown_timeout=0.2)

    class Hold(WebMessageHandler):
        async def get(self) -> str:
            await gate.wait()
            return "held"

    class Quick(WebMessageHandler):
        def get(self) -> str:
            return f"quick {self.request.conn_id.decode()}"

    app.add_route_rule(r"^/hold$", Hold)
    app.add_route_rule(r"^/quick$", Quick)
    return app, gate


async def test_requests_held_while_full_start_in_order_as_slots_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Brubeck, "held_limit", 1)
    app, gate = full_app()
    async with TestClient(app, timeout=1.0) as client:
        await client.send_raw(client.build_message("GET", "/hold", conn_id=1))
        await until(lambda: len(app._inflight) == 1, "the held request")
        await client.send_raw(client.build_message("GET", "/hold", conn_id=2))
        await client.send_raw(client.build_message("GET", "/quick", conn_id=3))
        await until(lambda: len(app._held or ()) == 1, "one request held, then reading paused")
        assert app.msg_conn is not None and app.msg_conn._paused  # the rest wait in ZeroMQ
        assert await quiet(client, 3, 0.05)
        gate.set()  # 1 answers; 2 starts (and answers at once); then 3 is read and answered
        assert (await answer(client, 1)).text == "held"
        assert (await answer(client, 2)).text == "held"
        assert (await answer(client, 3)).text == "quick 3"
    assert app._held is None


async def test_a_held_request_of_a_client_that_left_is_never_answered() -> None:
    """Its connection id may belong to another client by the time a slot frees."""
    app, gate = full_app()
    async with TestClient(app, timeout=1.0) as client:
        await client.send_raw(client.build_message("GET", "/hold", conn_id=1))
        await until(lambda: len(app._inflight) == 1, "the held request")
        await client.send_raw(client.build_message("GET", "/quick", conn_id=2))
        await until(lambda: len(app._held or ()) == 1, "the second request held")
        await client.send_raw(notice(client, 2, "disconnect"))
        await until(lambda: not app._held, "the held request dropped")
        gate.set()
        assert (await answer(client, 1)).text == "held"
        assert await quiet(client, 2, 0.1)
