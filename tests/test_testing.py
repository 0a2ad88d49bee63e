"""testing.py: the TestClient in sync tests, and the pytest plugin's ``client`` fixture."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from brubeck import Brubeck, JSONMessageHandler, WebMessageHandler
from brubeck.testing import SyncTestClient, TestClient

REPO = Path(__file__).resolve().parents[1]


class Hello(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(0.001)
        self.set_cookie("seen", "1")
        return f"hello {self.get_argument('name', 'world')} {self.application.state.started}"


class Items(JSONMessageHandler):
    def post(self, item_id: str) -> dict:
        return {"id": int(item_id), "data": self.request.json, "seen": self.get_cookie("seen")}


def make_app(events: list[str]) -> Brubeck:
    app = Brubeck(handler_tuples=[(r"^/$", Hello), (r"^/items/(?P<item_id>\d+)$", Items)])

    @app.on_startup
    async def start() -> None:
        app.state.started = "yes"
        events.append(f"start in {threading.current_thread().name}")

    app.on_shutdown(lambda: events.append("stop"))
    return app


def test_sync_use_runs_the_app_in_a_thread() -> None:
    events: list[str] = []
    with TestClient(make_app(events)) as client:
        assert isinstance(client, SyncTestClient)
        response = client.get("/", params={"name": "sync"})
        assert (response.status_code, response.text) == (200, "hello sync yes")
        assert client.cookies == {"seen": "1"}
        item = client.post("/items/3", json={"a": 1}).json()
        assert item == {"id": 3, "data": {"a": 1}, "seen": "1"}
        assert client.get("/", version="HTTP/1.0").closed
        assert client.delete("/items/3").status_code == 405
    assert events == ["start in brubeck-testclient", "stop"]


def test_sync_use_twice_and_raw_messages() -> None:
    app = make_app([])
    for _ in range(2):
        with TestClient(app) as client:
            client.send_raw(client.build_message("GET", "/", conn_id=99))
            assert client.receive(99).startswith(b"HTTP/1.1 200 OK\r\n")


def test_calls_outside_the_block_are_refused() -> None:
    with TestClient(make_app([])) as client:
        pass
    with pytest.raises(RuntimeError, match="inside 'with TestClient"):
        client.get("/")


async def test_async_use_is_unchanged() -> None:
    async with TestClient(make_app([])) as client:
        assert (await client.get("/")).text == "hello world yes"


def test_the_pytest_plugin_gives_a_client_for_the_app_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_user_app.py").write_text(
        "import pytest\n"
        "from brubeck import Brubeck\n"
        "\n"
        "pytest_plugins = ['brubeck.pytest_plugin']\n"
        "\n"
        "@pytest.fixture\n"
        "def app():\n"
        "    app = Brubeck()\n"
        "    app.add_route(r'^/$')(lambda application, request: 'from the fixture')\n"
        "    return app\n"
        "\n"
        "def test_it(client):\n"
        "    assert client.get('/').text == 'from the fixture'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={
            "PYTHONPATH": str(REPO),
            "PATH": "/usr/bin:/bin",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
