"""WebSockets through a real Mongrel2, driven by the ``websockets`` client library.

Every test opens fresh connections: Mongrel2 drops an upgrade sent on a reused keep-alive
connection (MONGREL2.md §B9.11).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from brubeck import Brubeck, HTTPError, WebSocketHandler
from brubeck.mongrel2 import Mongrel2Process

COUNTER_APP = Path(__file__).with_name("ws_counter_app.py")


class Echo(WebSocketHandler):
    """Echoes every message; ``close:CODE:REASON`` makes the server close instead."""

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            self.close(int(code), reason)
            return
        self.write_message(message)


class Small(Echo):
    max_message_size = 1024


class Protocols(Echo):
    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return "chat.v1" if "chat.v1" in subprotocols else None


class Refused(Echo):
    def prepare(self) -> None:
        raise HTTPError(403, "not you")


class Broken(Echo):
    def open(self) -> None:
        raise RuntimeError("open failed")


class Recorder(Echo):
    """Records every ``on_close``; pings fast and gives up fast on a silent client."""

    closes: ClassVar[list[tuple[str, int, str]]] = []
    ping_interval = 0.3
    ping_timeout = 0.3

    def open(self, name: str) -> None:
        self.name = name

    def on_close(self, code: int, reason: str) -> None:
        Recorder.closes.append((self.name, code, reason))


class Lobby(WebSocketHandler):
    def open(self) -> None:
        self.join("lobby")
        self.write_message("joined")

    def on_message(self, message: str | bytes) -> None:
        self.broadcast(message, to="lobby")


def make_app() -> Brubeck:
    return Brubeck(
        handler_tuples=[
            (r"^/echo$", Echo),
            (r"^/small$", Small),
            (r"^/proto$", Protocols),
            (r"^/refused$", Refused),
            (r"^/broken$", Broken),
            (r"^/record/(?P<name>\w+)$", Recorder),
            (r"^/lobby$", Lobby),
        ]
    )


@pytest.fixture(scope="module")
def ws_url(serve_module) -> str:
    m2 = serve_module(make_app())
    return f"ws://127.0.0.1:{m2.config.port}"


def closes_of(name: str) -> list[tuple[int, str]]:
    return [(code, reason) for who, code, reason in Recorder.closes if who == name]


async def wait_for_close_of(name: str, timeout: float = 5.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while not closes_of(name):
        assert time.monotonic() < deadline, f"on_close never ran for {name}"
        await asyncio.sleep(0.02)
    (only,) = closes_of(name)
    return only


async def test_echo_text_and_binary(ws_url: str) -> None:
    async with connect(ws_url + "/echo") as ws:
        await ws.send("hello text")
        assert await ws.recv() == "hello text"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
        await ws.send("héllo ✓")
        assert await ws.recv() == "héllo ✓"


async def test_one_megabyte_message(ws_url: str) -> None:
    payload = random.Random(1).randbytes(1_000_000)
    async with connect(ws_url + "/echo", max_size=None) as ws:
        await ws.send(payload)
        assert await asyncio.wait_for(ws.recv(), 10) == payload


async def test_fragmented_message_arrives_whole(ws_url: str) -> None:
    async with connect(ws_url + "/echo") as ws:
        await ws.send(["frag1-", "frag2-", "frag3"])
        assert await ws.recv() == "frag1-frag2-frag3"


async def test_ping_is_answered(ws_url: str) -> None:
    async with connect(ws_url + "/echo") as ws:
        pong = await ws.ping(b"pingdata")
        await asyncio.wait_for(pong, 5)


async def test_client_close_code_is_echoed_and_reaches_on_close(ws_url: str) -> None:
    async with connect(ws_url + "/record/polite") as ws:
        await ws.close(4000, "bye")
        assert ws.close_code == 4000
    assert await wait_for_close_of("polite") == (4000, "bye")


async def test_server_close_with_code_and_reason(ws_url: str) -> None:
    async with connect(ws_url + "/record/server") as ws:
        await ws.send("close:4001:asked")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert (ws.close_code, ws.close_reason) == (4001, "asked")
    assert await wait_for_close_of("server") == (4001, "asked")  # as the client echoed it


async def test_invalid_utf8_text_closes_with_1007(ws_url: str) -> None:
    async with connect(ws_url + "/echo") as ws:
        await ws.send(b"\xff\xfe not utf-8", text=True)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1007


async def test_message_over_the_limit_closes_with_1009(ws_url: str) -> None:
    async with connect(ws_url + "/small") as ws:
        await ws.send("x" * 1024)
        assert await ws.recv() == "x" * 1024
        await ws.send("x" * 1025)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009


async def test_subprotocol_selection(ws_url: str) -> None:
    async with connect(ws_url + "/proto", subprotocols=["chat.v2", "chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        await ws.send("x")
        assert await ws.recv() == "x"
    async with connect(ws_url + "/proto") as ws:
        assert ws.subprotocol is None


@pytest.mark.parametrize(("path", "status"), [("/refused", 403), ("/broken", 500)])
async def test_refused_handshake_gets_an_http_error(ws_url: str, path: str, status: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url + path, open_timeout=5):
            pass
    assert refused.value.response.status_code == status


async def test_vanished_client_triggers_on_close(ws_url: str) -> None:
    ws = await connect(ws_url + "/record/vanished")
    await ws.send("x")
    assert await ws.recv() == "x"
    ws.transport.abort()  # no close frame: only Mongrel2's disconnect notice tells
    assert await wait_for_close_of("vanished") == (1006, "")


async def test_silent_client_times_out(ws_url: str) -> None:
    """A client that never answers pings is taken as gone (ping 0.3 s, timeout 0.3 s)."""
    host, port = ws_url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET /record/silent HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    try:
        assert await wait_for_close_of("silent") == (1006, "")
    finally:
        writer.close()


async def test_two_hundred_concurrent_clients(ws_url: str) -> None:
    async def one(i: int) -> str:
        async with connect(ws_url + "/echo", open_timeout=10) as ws:
            await ws.send(f"client {i}")
            return await asyncio.wait_for(ws.recv(), 10)  # type: ignore[return-value]

    answers = await asyncio.gather(*(one(i) for i in range(200)))
    assert answers == [f"client {i}" for i in range(200)]


async def test_broadcast_reaches_three_hundred_clients(ws_url: str) -> None:
    clients = await asyncio.gather(
        *(connect(ws_url + "/lobby", open_timeout=10) for _ in range(300))
    )
    try:
        for ws in clients:
            assert await asyncio.wait_for(ws.recv(), 10) == "joined"
        await clients[0].send("hello, everyone")
        got = await asyncio.gather(*(asyncio.wait_for(ws.recv(), 10) for ws in clients))
        assert got == ["hello, everyone"] * 300
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))


async def test_idle_socket_is_kept_alive_past_mongrel2_reaper(serve) -> None:
    class Quiet(Echo):
        ping_interval = 0.4

    m2 = serve(
        Brubeck(handler_tuples=[(r"^/quiet$", Quiet)]),
        settings={"limits.min_ping": 1, "limits.tick_timer": 1},
    )
    async with connect(f"ws://127.0.0.1:{m2.config.port}/quiet", ping_interval=None) as ws:
        await asyncio.sleep(3.2)  # Mongrel2 reaps connections idle over 1 s, checked every 1 s
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), 5) == "still here"


# State kept across processes: one handler per connection, wherever its frames arrive.


def start_counter_processes(m2: Mongrel2Process, tmp_path: Path, count: int) -> list:
    peers = [f"ipc://{tmp_path}/peer-{i}" for i in range(count)] if count > 1 else []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    processes = []
    for i in range(count):
        log = open(tmp_path / f"app-{i}.log", "wb")  # noqa: SIM115 - closed with the process
        args = [sys.executable, str(COUNTER_APP), m2.config.send_spec, m2.config.recv_spec]
        processes.append(
            (
                subprocess.Popen(
                    [*args, str(i), *peers], stdout=log, stderr=subprocess.STDOUT, env=env
                ),
                log,
            )
        )
    return processes


def stop_processes(processes: list) -> None:
    for proc, _ in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, log in processes:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def wait_for_pids(url: str, count: int, timeout: float = 15.0) -> set[str]:
    """Ask until every process has answered once: they are all connected to Mongrel2.

    One keep-alive connection: with a connection per request, each request's disconnect
    notice takes the other process's turn, and the same process would answer every time.
    """
    pids: set[str] = set()
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=1) as client:
        while len(pids) < count:
            assert time.monotonic() < deadline, f"only {len(pids)} of {count} processes answered"
            try:
                pids.add(client.get("/pid").text)
            except httpx.TransportError:
                time.sleep(0.1)
    return pids


@pytest.mark.parametrize("processes", [1, 2])
async def test_state_is_kept_per_connection(mongrel2_factory, tmp_path, processes: int) -> None:
    m2 = mongrel2_factory()
    running = start_counter_processes(m2, tmp_path, processes)
    try:
        pids = await asyncio.to_thread(wait_for_pids, m2.url, processes)

        async def talk(i: int) -> list[dict]:
            async with connect(f"ws://127.0.0.1:{m2.config.port}/count", open_timeout=10) as ws:
                replies = []
                for n in range(20):
                    await ws.send(f"{i}:{n}")
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
                return replies

        conversations = await asyncio.gather(*(talk(i) for i in range(10)))
    finally:
        stop_processes(running)
    owners = set()
    for replies in conversations:
        assert [r["count"] for r in replies] == list(range(1, 21))
        assert len({r["pid"] for r in replies}) == 1, "one connection, one owner"
        owners.add(str(replies[0]["pid"]))
    assert owners <= pids
    if processes == 2:
        assert owners == pids, "each process owns some connections"
        # Mongrel2 alternates messages between the processes: owners got some second-hand.
        assert sum(replies[-1]["received"] for replies in conversations) > 0
