"""A pytest plugin with a ``client`` fixture: ``pytest_plugins = ["brubeck.pytest_plugin"]``.

Why: most app tests need the same three lines (build the app, enter a ``TestClient``, leave
it); the fixture does them, for any test module that defines an ``app`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .app import Brubeck
from .testing import SyncTestClient, TestClient


@pytest.fixture
def client(app: Brubeck) -> Iterator[SyncTestClient]:
    """A started ``TestClient`` (sync use) for the ``app`` fixture; stopped after the test."""
    with TestClient(app) as started:
        yield started
