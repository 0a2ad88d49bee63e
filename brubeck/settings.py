"""The environment variables that configure a deployed app, parsed and checked in one place.

Why: supervisors and containers configure processes through their environment. ``brubeck run``
reads these variables; a command-line flag wins over its variable, and a variable wins over
what the app's code set. Every setting, with its default, is listed in ``docs/settings.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ENVIRONMENT", "EnvVar", "SettingsError", "apply_to_app", "from_environment"]


class SettingsError(ValueError):
    """An environment variable has a value Brubeck cannot use."""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("use 1/true/yes/on or 0/false/no/off")


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise ValueError(f"must be >= {low}")
        return value

    return parse


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be > 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be >= 0")
    return value


def _log_level(text: str) -> str:
    value = text.strip().lower()
    if value not in ("debug", "info", "warning", "error"):
        raise ValueError("use debug, info, warning or error")
    return value


def _text(text: str) -> str:
    return text


def _endpoints(text: str) -> list[str]:
    endpoints = text.split()
    if not endpoints or not all("://" in endpoint for endpoint in endpoints):
        raise ValueError("give ZeroMQ endpoints (e.g. ipc:///run/app/0 tcp://10.0.0.2:7000)")
    return endpoints


def _header_name(text: str) -> str | None:
    """A header name, ``1``/``true`` for ``X-Request-Id``, empty or ``0``/``false`` for none."""
    value = text.strip()
    if value.lower() in ("", "0", "false", "no", "off"):
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return "X-Request-Id"
    from .response import check_header

    check_header(value, "")  # a ValueError names what is wrong with it
    return value


def _endpoint(text: str) -> str:
    value = text.strip()
    if "://" not in value or len(value.split()) != 1:
        raise ValueError("give one ZeroMQ endpoint (e.g. tcp://127.0.0.1:9999)")
    return value


def _event_loop(text: str) -> str:
    value = text.strip().lower()
    if value not in ("asyncio", "uvloop", "auto"):
        raise ValueError("use asyncio, uvloop or auto")
    return value


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: what it sets, where, and how its text is read."""

    name: str
    key: str
    where: Literal["cli", "attribute", "setting"]
    parse: Callable[[str], Any]
    doc: str


ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar("BRUBECK_PULL_ADDR", "pull", "cli", _endpoint, "the PULL address (`--pull`)"),
    EnvVar("BRUBECK_PUB_ADDR", "pub", "cli", _endpoint, "the PUB address (`--pub`)"),
    EnvVar("BRUBECK_WORKERS", "workers", "cli", _int_at_least(1), "handler processes"),
    EnvVar("BRUBECK_LOG_LEVEL", "log_level", "cli", _log_level, "`--log-level`"),
    EnvVar("BRUBECK_JSON_LOGS", "json_logs", "cli", _bool, "`--json-logs`"),
    EnvVar("BRUBECK_ACCESS_LOG", "access_log", "setting", _bool, "`--access-log`"),
    EnvVar("BRUBECK_EVENT_LOOP", "event_loop", "setting", _event_loop, "`--loop`"),
    EnvVar("BRUBECK_COMPRESS_RESPONSE", "compress_response", "setting", _bool, "gzip"),
    EnvVar(
        "BRUBECK_REQUEST_ID_HEADER",
        "request_id_header",
        "setting",
        _header_name,
        "response header for the request id",
    ),
    EnvVar(
        "BRUBECK_SHUTDOWN_TIMEOUT",
        "shutdown_timeout",
        "attribute",
        _non_negative_float,
        "seconds a graceful stop waits",
    ),
    EnvVar(
        "BRUBECK_MAX_IN_FLIGHT",
        "max_in_flight",
        "attribute",
        _int_at_least(1),
        "requests at once per process",
    ),
    EnvVar(
        "BRUBECK_REQUEST_TIMEOUT",
        "request_timeout",
        "setting",
        _positive_float,
        "seconds before a 504",
    ),
    EnvVar(
        "BRUBECK_KEEPALIVE_INTERVAL",
        "keepalive_interval",
        "setting",
        _positive_float,
        "keep-alive ctl period",
    ),
    EnvVar(
        "BRUBECK_MONGREL2_RUN_DIR",
        "mongrel2_run_dir",
        "setting",
        _text,
        "Mongrel2's run directory, for uploads",
    ),
    EnvVar("BRUBECK_MAX_BODY_SIZE", "max_body_size", "setting", _int_at_least(0), "bytes"),
    EnvVar("BRUBECK_MAX_UPLOAD_SIZE", "max_upload_size", "setting", _int_at_least(0), "bytes"),
    EnvVar(
        "BRUBECK_WEBSOCKET_PEERS",
        "websocket_peers",
        "setting",
        _endpoints,
        "ZeroMQ endpoints, one per process, separated by spaces",
    ),
    EnvVar(
        "BRUBECK_WEBSOCKET_PEER_INDEX",
        "websocket_peer_index",
        "setting",
        _int_at_least(0),
        "this process's place in the peers",
    ),
)


def from_environment(environ: Mapping[str, str]) -> dict[str, tuple[EnvVar, Any]]:
    """The variables set in ``environ``, parsed: ``{key: (variable, value)}``.

    Raises ``SettingsError`` naming the variable and its value when one cannot be used.
    """
    found: dict[str, tuple[EnvVar, Any]] = {}
    for var in ENVIRONMENT:
        text = environ.get(var.name)
        if text is None:
            continue
        try:
            found[var.key] = (var, var.parse(text))
        except ValueError as exc:
            raise SettingsError(f"{var.name}={text!r} is not usable: {exc}") from None
    return found


def apply_to_app(app: Any, found: Mapping[str, tuple[EnvVar, Any]]) -> None:
    """Set the app's attributes and settings that ``found`` names (CLI-only keys are skipped)."""
    from .request import BodyLimits

    for key, (var, value) in found.items():
        if var.where == "attribute":
            setattr(app, key, value)
        elif var.where == "setting":
            app.settings[key] = value
    if "request_timeout" in found:  # read into an attribute when the app was made
        app.request_timeout = app.settings["request_timeout"]
    if any(key in found for key in ("max_body_size", "max_form_parts", "max_form_fields_size")):
        app.body_limits = BodyLimits.from_settings(app.settings)
