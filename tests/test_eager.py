"""eager.py: coroutines that cannot suspend run without a task; the others still get one."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from brubeck import Brubeck, JSONMessageHandler, WebMessageHandler
from brubeck.eager import SUSPENDS, never_suspends, value_now
from brubeck.request import Request
from brubeck.testing import TestClient


async def plain() -> int:
    total = sum(n for n in range(3))  # a generator expression yields, but in its own frame
    return total + len([n for n in range(2)])


async def awaits() -> int:
    await asyncio.sleep(0)
    return 1


class _Ctx:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def uses_async_with() -> int:
    async with _Ctx():
        return 1


async def _numbers() -> Any:
    yield 1


async def uses_async_for() -> int:
    async for n in _numbers():
        return n
    return 0


async def async_comprehension() -> list[int]:
    return [n async for n in _numbers()]


async def awaits_only_on_one_branch(wait: bool) -> int:
    if wait:
        await asyncio.sleep(0)
    return 2


async def raises() -> None:
    raise ValueError("from inside")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (plain, True),
        (raises, True),
        (awaits, False),
        (uses_async_with, False),
        (uses_async_for, False),
        (async_comprehension, False),
        (lambda: awaits_only_on_one_branch(False), False),  # decided by code, not by the run
    ],
)
def test_never_suspends_reads_the_bytecode(make: Any, expected: bool) -> None:
    coro = make()
    try:
        assert never_suspends(coro) is expected
    finally:
        coro.close()


def test_only_native_coroutines_qualify() -> None:
    assert not never_suspends(None)
    assert not never_suspends("text")
    assert not never_suspends(asyncio.sleep)  # a function, not a coroutine
    future = asyncio.new_event_loop().create_future()
    assert not never_suspends(future)
    future.get_loop().close()


def test_value_now_returns_the_value_or_raises_the_error() -> None:
    assert value_now(plain()) == 3 + 2
    with pytest.raises(ValueError, match="from inside"):
        value_now(raises())


def test_value_now_leaves_what_may_suspend_unstarted() -> None:
    coro = awaits()
    assert value_now(coro) is SUSPENDS
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
    coro.close()
    assert value_now("not awaitable") is SUSPENDS


class NoAwait(JSONMessageHandler):
    async def get(self) -> Any:
        self.add_to_payload("task", asyncio.current_task() is not None)
        return self.render()


class Awaits(JSONMessageHandler):
    async def get(self) -> Any:
        await asyncio.sleep(0)
        self.add_to_payload("task", asyncio.current_task() is not None)
        return self.render()


class AsyncPrepare(WebMessageHandler):
    async def prepare(self) -> None:
        self.set_header("X-Prepared", "yes")

    async def get(self) -> Any:
        return "prepared"


class AsyncPrepareRefuses(WebMessageHandler):
    async def prepare(self) -> None:
        self.set_status(403)
        self.set_body("no")
        self.render()

    def get(self) -> Any:
        raise AssertionError("get must not run after prepare answered")


class NoAwaitFails(WebMessageHandler):
    async def get(self) -> Any:
        raise RuntimeError("handler bug")


def eager_app() -> Brubeck:
    app = Brubeck(
        handler_tuples=[
            (r"^/no-await$", NoAwait),
            (r"^/awaits$", Awaits),
            (r"^/prepare$", AsyncPrepare),
            (r"^/refused$", AsyncPrepareRefuses),
            (r"^/fails$", NoAwaitFails),
        ]
    )

    @app.add_route(r"^/fn$")
    async def function_route(application: Brubeck, request: Request) -> dict[str, bool]:
        return {"task": asyncio.current_task() is not None}

    return app


async def test_a_handler_that_cannot_suspend_is_answered_without_a_task() -> None:
    app = eager_app()
    async with TestClient(app) as client:
        spawned: list[Any] = []
        original = app._start_task

        def spy(request: Any, pending: Any, handler: Any) -> None:
            spawned.append(pending)
            original(request, pending, handler)

        app._start_task = spy  # type: ignore[method-assign]
        for path in ("/no-await", "/fn"):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.json() == {"task": False}
        assert spawned == []
        response = await client.get("/awaits")
        assert response.json() == {"task": True}
        assert len(spawned) == 1


async def test_async_prepare_without_await_runs_inline_and_can_answer() -> None:
    async with TestClient(eager_app()) as client:
        response = await client.get("/prepare")
        assert (response.status_code, response.text) == (200, "prepared")
        assert response.headers["x-prepared"] == "yes"
        refused = await client.get("/refused")
        assert (refused.status_code, refused.text) == (403, "no")


async def test_an_error_in_a_handler_that_cannot_suspend_is_a_500() -> None:
    async with TestClient(eager_app()) as client:
        response = await client.get("/fails")
        assert response.status_code == 500
        assert (await client.get("/no-await")).status_code == 200
