"""Fixtures shared between test modules."""

# The fake Mongrel2s of tests/test_connection.py, for tests/test_connection_edges.py too.
from tests.test_connection import new_mongrel2  # noqa: F401
