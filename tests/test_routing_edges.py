"""routing.py edge cases found by an adversarial pass: reverse URLs that must lead back to
the very values given, escaped anchors, and the route cache."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest

from brubeck.routing import Router


def view(*args: Any, **kwargs: Any) -> None:
    """A function route target; routing never calls it."""


def router_with(pattern: str) -> Router:
    router = Router()
    router.add(pattern, view, name="r")
    return router


def test_reverse_refuses_a_value_an_unanchored_pattern_would_cut_short() -> None:
    """Was a bug.

    ``^/users/(?P<id>\\d+)`` (no ``$``) with ``id="12abc"`` gave ``/users/12abc``: the check
    used a prefix match, but a request for that URL reaches the handler with ``id="12"``.
    Reversal must refuse values the route would not hand back as given.
    """
    router = router_with(r"^/users/(?P<id>\d+)")
    with pytest.raises(ValueError, match="do not match"):
        router.reverse("r", id="12abc")
    assert router.reverse("r", id=12) == "/users/12"


def test_reverse_refuses_values_that_the_groups_would_split_differently() -> None:
    """Was a bug.

    ``^/(\\w+)(\\w+)$`` with ``"ab", "cd"`` gave ``/abcd``, which the route splits into
    ``("abc", "d")``: the handler would get other values than those the URL was built from.
    """
    router = router_with(r"^/(\w+)(\w+)$")
    with pytest.raises(ValueError, match="do not match"):
        router.reverse("r", "ab", "cd")
    named = router_with(r"^/(?P<a>\w+)-?(?P<b>\w+)$")
    with pytest.raises(ValueError, match="is not a literal"):
        named.reverse("r", a="x", b="y")


def test_reverse_of_an_escaped_final_dollar() -> None:
    """Was a bug.

    The final ``$`` of ``^/price\\$`` is an escaped, literal ``$``, not an anchor: it was
    stripped as one, leaving a stray backslash, and reversal failed. It gives ``/price$``.
    """
    router = router_with(r"^/price\$")
    path = router.reverse("r")
    assert path == "/price$"
    route, _, _, _ = router.match("GET", unquote(path))
    assert route is not None
    assert router_with(r"^/price\$$").reverse("r") == "/price$"
    assert router_with(r"^/back\\$").reverse("r") == "/back%5C"


def test_reverse_values_with_slash_question_mark_and_unicode_route_back() -> None:
    router = router_with(r"^/f/(?P<rest>.+)$")
    for value in ("a/b", "what?", "ü /x#y", "%2F"):
        path = router.reverse("r", rest=value)
        assert "?" not in path and "#" not in path
        route, _, kwargs, _ = router.match("GET", unquote(path))
        assert route is not None and kwargs == {"rest": value}


def test_the_cache_is_keyed_by_method_and_cleared_by_new_routes() -> None:
    router = Router()
    first = router.add(r"^/x$", view)
    router.remember("GET", b"/x", (first, (), {}))
    assert ("HEAD", b"/x") not in router.cache
    second = router.add(r"^/x$", view, methods=["POST"], first=True)
    assert router.cache == {}
    assert router.match("POST", "/x")[0] is second


def test_the_cache_is_bounded() -> None:
    router = Router()
    route = router.add(r"^/", view)
    for i in range(Router.CACHE_SIZE + 10):
        router.remember("GET", b"/%d" % i, (route, (), {}))
    assert len(router.cache) <= Router.CACHE_SIZE
