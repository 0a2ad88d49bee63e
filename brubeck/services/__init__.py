"""ZeroMQ beyond Mongrel2: job queues and request/reply services, with workers in any language.

- Jobs (PUSH/PULL): ``JobQueue`` hands fire-and-forget jobs to a pool of ``JobWorker``s.
- Services (Majordomo, MDP/0.1): a ``Broker`` routes ``ServiceClient`` requests to idle
  ``ServiceWorker``s of the service they name; heartbeats find dead workers, retries recover.

Both wire formats are documented byte by byte in docs/services.md. Names are imported on first
use, so ``python -m brubeck.services.broker`` runs the broker module once, as ``__main__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .broker import Broker
    from .client import ServiceClient
    from .errors import PayloadError, RemoteError, ServiceError, ServiceUnavailable
    from .jobs import JobQueue, JobWorker
    from .worker import ServiceWorker

_HOMES = {
    "Broker": "broker",
    "JobQueue": "jobs",
    "JobWorker": "jobs",
    "PayloadError": "errors",
    "RemoteError": "errors",
    "ServiceClient": "client",
    "ServiceError": "errors",
    "ServiceUnavailable": "errors",
    "ServiceWorker": "worker",
}

__all__ = [
    "Broker",
    "JobQueue",
    "JobWorker",
    "PayloadError",
    "RemoteError",
    "ServiceClient",
    "ServiceError",
    "ServiceUnavailable",
    "ServiceWorker",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'brubeck.services' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
