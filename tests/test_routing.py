"""routing.py: regex routes tried in order, methods, 405 sets and reverse URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest

from brubeck.handlers import MessageHandler
from brubeck.routing import Route, Router


def view(*args: Any, **kwargs: Any) -> None:
    """A function route target; routing never calls it."""


class Reader(MessageHandler):
    def get(self) -> None: ...


class Writer(MessageHandler):
    def post(self) -> None: ...

    def delete(self) -> None: ...


class Everything(MessageHandler):
    def get(self) -> None: ...

    def head(self) -> None: ...

    def post(self) -> None: ...

    def put(self) -> None: ...

    def patch(self) -> None: ...

    def delete(self) -> None: ...

    def options(self) -> None: ...


def test_first_match_wins() -> None:
    router = Router()
    first = router.add(r"^/items/new$", view)
    router.add(r"^/items/(?P<id>\w+)$", view)
    route, args, kwargs, _ = router.match("GET", "/items/new")
    assert (route, args, kwargs) == (first, (), {})


def test_named_groups_become_kwargs_and_unnamed_groups_args() -> None:
    router = Router()
    route = router.add(r"^/(\w+)/(?P<year>\d{4})/(\d+)/(?P<slug>[a-z-]+)$", view)
    assert router.match("GET", "/blog/2024/7/hello-world") == (
        route,
        ("blog", "7"),
        {"year": "2024", "slug": "hello-world"},
        frozenset(),
    )


def test_optional_named_group_that_did_not_match_is_left_out() -> None:
    router = Router()
    router.add(r"^/page(?:/(?P<number>\d+))?$", view)
    assert router.match("GET", "/page")[2] == {}
    assert router.match("GET", "/page/3")[2] == {"number": "3"}


def test_patterns_match_from_the_start_of_the_path() -> None:
    router = Router()
    route = router.add(r"/api", view)
    assert router.match("GET", "/api/v1/anything")[0] is route
    assert router.match("GET", "/x/api")[0] is None


def test_no_route_is_none_with_nothing_allowed() -> None:
    assert Router().match("GET", "/") == (None, (), {}, frozenset())


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        (None, {"GET", "HEAD"}),
        ("post", {"POST"}),
        (["GET", "post"], {"GET", "HEAD", "POST"}),
        (("PUT", "DELETE"), {"PUT", "DELETE"}),
    ],
)
def test_methods_of_a_function_route(methods: Any, expected: set[str]) -> None:
    assert Route("/", view, methods).methods == expected


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (Reader, {"GET", "HEAD"}),
        (Writer, {"POST", "DELETE"}),
        (Everything, {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}),
    ],
)
def test_methods_of_a_handler_class_are_the_verbs_it_defines(
    handler: type[MessageHandler], expected: set[str]
) -> None:
    assert Route("/", handler).methods == expected


def test_a_class_without_verbs_is_refused_when_routed() -> None:
    """Every request to it would be a 404 with no clue why (a misspelt ``Get``, say)."""
    with pytest.raises(ValueError, match="MessageHandler has no verb method"):
        Route("/", MessageHandler)


def test_explicit_methods_override_the_class_verbs() -> None:
    assert Route("/", Everything, ["GET"]).methods == {"GET", "HEAD"}


def test_head_is_implied_by_get() -> None:
    router = Router()
    route = router.add("^/$", Reader)
    assert router.match("HEAD", "/")[0] is route


def test_a_method_mismatch_reports_the_allowed_methods() -> None:
    router = Router()
    router.add(r"^/thing$", Reader)
    router.add(r"^/thing$", view, methods=["PUT"])
    router.add(r"^/other$", Writer)
    route, args, kwargs, allowed = router.match("POST", "/thing")
    assert (route, args, kwargs) == (None, (), {})
    assert allowed == {"GET", "HEAD", "PUT"}


def test_a_later_route_with_the_method_still_matches() -> None:
    router = Router()
    router.add(r"^/thing$", Reader)
    writer = router.add(r"^/thing$", Writer)
    assert router.match("POST", "/thing")[0] is writer


def test_init_kwargs_are_kept_on_the_route() -> None:
    route = Router().add("^/$", Reader, greeting="hi", n=3)
    assert route.init_kwargs == {"greeting": "hi", "n": 3}
    assert Route("/", Reader).init_kwargs == {}


def test_a_built_route_may_have_init_kwargs_of_any_name() -> None:
    router = Router()
    init = {"name": "page", "methods": ["PUT"], "pattern": "p", "target": "t"}
    route = router.add_route(Route("^/$", Reader, init_kwargs=init))
    assert (route.name, route.methods, route.init_kwargs) == (None, {"GET", "HEAD"}, init)
    assert router.match("GET", "/")[0] is route


@pytest.mark.parametrize("pattern", ["(", "[a-", "*x", "(?P<id>x)(?P<id>y)"])
def test_invalid_regex_is_a_value_error_naming_the_pattern(pattern: str) -> None:
    with pytest.raises(ValueError, match="is not a valid regex") as info:
        Route(pattern, view)
    assert repr(pattern) in str(info.value)


def test_repr() -> None:
    assert repr(Route("^/a$", Reader)) == "<Route '^/a$' -> Reader>"


# Reverse URLs


def router_with(*routes: tuple[str, str]) -> Router:
    router = Router()
    for name, pattern in routes:
        router.add(pattern, view, name=name)
    return router


@pytest.mark.parametrize(
    ("pattern", "args", "kwargs", "path"),
    [
        (r"^/$", (), {}, "/"),
        (r"^/users/(?P<user_id>\d+)$", (), {"user_id": 42}, "/users/42"),
        (r"^/users/(\d+)/posts/(\d+)$", (7, "8"), {}, "/users/7/posts/8"),
        (r"^/(\w+)/(?P<year>\d+)$", ("blog",), {"year": 2024}, "/blog/2024"),
        (r"^/files/(?P<name>[^/]+)$", (), {"name": "a b&c?d"}, "/files/a%20b%26c%3Fd"),
        (r"^/tag/(?P<tag>\w+)$", (), {"tag": "café"}, "/tag/caf%C3%A9"),
        (r"^/v1\.0/(?P<x>\d+)$", (), {"x": 1}, "/v1.0/1"),
        (r"^/a-b_c/(?P<x>(\d+))$", (), {"x": 5}, "/a-b_c/5"),
        (r"/open/(?P<id>\d+)", (), {"id": 1}, "/open/1"),
    ],
)
def test_reverse(pattern: str, args: tuple[Any, ...], kwargs: dict[str, Any], path: str) -> None:
    router = router_with(("r", pattern))
    assert router.reverse("r", *args, **kwargs) == path


def test_reversed_paths_route_back_to_their_values() -> None:
    router = router_with(("file", r"^/files/(?P<name>[^/]+)/(\d+)$"))
    path = router.reverse("file", 3, name="über doc")
    route, args, kwargs, _ = router.match("GET", unquote(path))
    assert (route and route.name, args, kwargs) == ("file", ("3",), {"name": "über doc"})


def test_reverse_unknown_name() -> None:
    with pytest.raises(KeyError, match="no route named 'nope'"):
        router_with(("r", "^/$")).reverse("nope")


@pytest.mark.parametrize(
    ("pattern", "args", "kwargs", "message"),
    [
        (r"^/u/(?P<id>\d+)$", (), {}, "needs a value for 'id'"),
        (r"^/u/(\d+)/(\d+)$", (1,), {}, "needs more positional values"),
        (r"^/u/(?P<id>\d+)$", (), {"id": "abc"}, "do not match"),
        (r"^/u/(?P<name>[^/]+)$", (), {"name": "a/b"}, "do not match"),
        (r"^/u/(?:\d+)$", (), {}, "cannot reverse"),
        (r"^/u/(?=x)x$", (), {}, "cannot reverse"),
        (r"^/u/\d+$", (), {}, "is not a literal"),
        (r"^/u/(?P<id>\d+)/.*$", (), {"id": 1}, "is not a literal"),
        (r"^/(a|b)x+$", ("a",), {}, "is not a literal"),
    ],
)
def test_reverse_errors(
    pattern: str, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        router_with(("r", pattern)).reverse("r", *args, **kwargs)


def test_duplicate_route_names_are_refused() -> None:
    router = router_with(("home", "^/$"))
    with pytest.raises(ValueError, match="a route named 'home' exists already"):
        router.add("^/home$", view, name="home")
    with pytest.raises(ValueError, match="a route named 'home' exists already"):
        router.add_route(Route("^/home$", view, name="home"))
    assert len(router.routes) == 1
    assert router.reverse("home") == "/"


def test_unnamed_routes_may_share_a_pattern() -> None:
    router = Router()
    router.add("^/$", view)
    router.add("^/$", view)
    assert len(router.routes) == 2
