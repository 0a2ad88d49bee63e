"""waiting.py: parked requests are released together, or time out on their own."""

from __future__ import annotations

import asyncio

from brubeck import Brubeck, Response, WebMessageHandler
from brubeck.testing import TestClient, TestResponse
from brubeck.waiting import WaitingRoom


def room_app() -> tuple[Brubeck, WaitingRoom]:
    app = Brubeck()
    room = WaitingRoom(app)

    class Wait(WebMessageHandler):
        async def get(self) -> Response:
            return await room.wait(self.request, timeout=float(self.get_argument("t", "5")))

    app.add_route_rule(r"^/wait$", Wait)
    return app, room


async def test_release_answers_every_waiter_once() -> None:
    app, room = room_app()
    async with TestClient(app) as client:
        for conn_id in (1, 2, 3):
            await client.send_raw(client.build_message("GET", "/wait", conn_id=conn_id))
        async with asyncio.timeout(2):
            while len(room) < 3:
                await asyncio.sleep(0.01)
        assert room.release(Response("news")) == 3 and len(room) == 0
        answers = [TestResponse(await client.receive(c), closed=False) for c in (1, 2, 3)]
        assert [a.text for a in answers] == ["news"] * 3
        assert room.release(Response("again")) == 0


async def test_a_waiter_times_out_with_204() -> None:
    app, room = room_app()
    async with TestClient(app) as client:
        response = await client.get("/wait", params={"t": "0.05"})
        assert response.status_code == 204 and len(room) == 0
