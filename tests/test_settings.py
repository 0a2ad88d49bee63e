"""settings.py: environment variables, parsed, checked and applied to an app."""

from __future__ import annotations

import pytest

from brubeck import Brubeck
from brubeck.settings import ENVIRONMENT, SettingsError, apply_to_app, from_environment


def values(environ: dict[str, str]) -> dict[str, object]:
    return {key: value for key, (_, value) in from_environment(environ).items()}


def test_nothing_set_nothing_found() -> None:
    assert from_environment({"PATH": "/bin"}) == {}


def test_values_are_parsed() -> None:
    assert values(
        {
            "BRUBECK_PULL_ADDR": "tcp://10.0.0.5:9999",
            "BRUBECK_WORKERS": "4",
            "BRUBECK_LOG_LEVEL": "WARNING",
            "BRUBECK_JSON_LOGS": "yes",
            "BRUBECK_ACCESS_LOG": "0",
            "BRUBECK_COMPRESS_RESPONSE": "on",
            "BRUBECK_SHUTDOWN_TIMEOUT": "2.5",
            "BRUBECK_REQUEST_ID_HEADER": "true",
            "BRUBECK_WEBSOCKET_PEERS": " ipc:///tmp/p-0  tcp://10.0.0.2:7000 ",
            "BRUBECK_WEBSOCKET_PEER_INDEX": "1",
        }
    ) == {
        "pull": "tcp://10.0.0.5:9999",
        "workers": 4,
        "log_level": "warning",
        "json_logs": True,
        "access_log": False,
        "compress_response": True,
        "shutdown_timeout": 2.5,
        "request_id_header": "X-Request-Id",
        "websocket_peers": ["ipc:///tmp/p-0", "tcp://10.0.0.2:7000"],
        "websocket_peer_index": 1,
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRUBECK_WORKERS", "0"),
        ("BRUBECK_WORKERS", "two"),
        ("BRUBECK_LOG_LEVEL", "loud"),
        ("BRUBECK_JSON_LOGS", "maybe"),
        ("BRUBECK_COMPRESS_RESPONSE", "gzip"),
        ("BRUBECK_SHUTDOWN_TIMEOUT", "-1"),
        ("BRUBECK_REQUEST_TIMEOUT", "nan"),
        ("BRUBECK_MAX_IN_FLIGHT", "0"),
        ("BRUBECK_WEBSOCKET_PEERS", " "),
        ("BRUBECK_WEBSOCKET_PEERS", "localhost:7000"),
        ("BRUBECK_WEBSOCKET_PEER_INDEX", "-1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}='{value}' is not usable"):
        from_environment({name: value})


def test_applied_to_an_app_over_what_its_code_set() -> None:
    app = Brubeck(max_in_flight=5, shutdown_timeout=1, request_timeout=9, max_body_size=10)
    found = from_environment(
        {
            "BRUBECK_MAX_IN_FLIGHT": "50",
            "BRUBECK_SHUTDOWN_TIMEOUT": "3",
            "BRUBECK_REQUEST_TIMEOUT": "30",
            "BRUBECK_MAX_BODY_SIZE": "2048",
            "BRUBECK_WORKERS": "3",  # the command's business, not the app's
        }
    )
    apply_to_app(app, found)
    assert (app.max_in_flight, app.shutdown_timeout) == (50, 3.0)
    assert app.settings["request_timeout"] == 30.0
    assert app.body_limits.max_body_size == 2048
    assert "workers" not in app.settings


def test_every_variable_is_documented() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    missing = [var.name for var in ENVIRONMENT if var.name not in text]
    assert missing == []


async def test_compression_from_the_environment_wins_over_the_app() -> None:
    """A deployment turns gzip off (a proxy in front compresses) without touching the code."""
    from brubeck import WebMessageHandler
    from brubeck.testing import TestClient

    class Page(WebMessageHandler):
        def get(self) -> str:
            return "a line of text\n" * 200

    app = Brubeck(handler_tuples=[(r"^/$", Page)], compress_response=True)
    apply_to_app(app, from_environment({"BRUBECK_COMPRESS_RESPONSE": "off"}))
    async with TestClient(app) as client:
        response = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert response.text == "a line of text\n" * 200
