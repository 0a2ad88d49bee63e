"""URL routing: regexes compiled once, tried in order, first match wins.

Named groups become keyword arguments and unnamed groups positional ones. A route that
matches the path but not the method is remembered, so the app can answer 405 with ``Allow``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

from .protocol import CONTROL_CHARACTER

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class Route:
    """One pattern and what answers it.

    Args:
        pattern: a regular expression matched against the percent-decoded path.
        target: a handler class or a function ``f(application, message, *args, **kwargs)``.
        methods: the methods a function answers; a class answers the verbs it defines.
        name: a name for ``Router.reverse``.
        init_kwargs: passed to the handler class's ``initialize``.
    """

    __slots__ = (
        "check_xsrf",
        "finishes",
        "has_groups",
        "init_kwargs",
        "is_class",
        "methods",
        "name",
        "pattern",
        "positional",
        "regex",
        "target",
    )

    def __init__(
        self,
        pattern: str,
        target: Any,
        methods: Iterable[str] | None = None,
        name: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(pattern, str):  # a bytes regex cannot match the decoded path
            raise TypeError(f"a route pattern is a str, got {pattern!r}")
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"route pattern {pattern!r} is not a valid regex: {exc}") from None
        self.pattern = pattern
        self.target = target
        self.name = name
        self.init_kwargs = init_kwargs or {}
        named = set(self.regex.groupindex.values())
        #: indices of unnamed groups, passed positionally in order
        self.positional = tuple(i for i in range(1, self.regex.groups + 1) if i not in named)
        self.has_groups = self.regex.groups > 0
        self.is_class = isinstance(target, type)
        #: set by the app: whether the handler class has an ``on_finish`` worth calling
        self.finishes = False
        #: set by the app: whether a function route checks the XSRF token (classes do it)
        self.check_xsrf = True
        self.methods = _route_methods(target, methods)

    def match(self, path: str) -> tuple[tuple[str, ...], dict[str, str]] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        return self.arguments(found)

    def arguments(self, found: re.Match[str]) -> tuple[tuple[str, ...], dict[str, str]]:
        """Handler arguments from a match: unnamed groups in order, named ones by name."""
        if not self.has_groups:
            return (), {}
        kwargs = {k: v for k, v in found.groupdict().items() if v is not None}
        args = tuple(found.group(i) for i in self.positional) if self.positional else ()
        return args, kwargs

    def __repr__(self) -> str:
        return f"<Route {self.pattern!r} -> {getattr(self.target, '__name__', self.target)}>"


def _route_methods(target: Any, methods: Iterable[str] | None) -> frozenset[str]:
    if isinstance(methods, str):
        methods = [methods]
    is_handler_class = isinstance(target, type) and hasattr(target, "allowed_methods")
    if methods is not None:
        found = frozenset(m.upper() for m in methods)
        if not found:  # a route that could never be matched
            raise ValueError(f"method= names no method for {target!r}")
        if is_handler_class:
            # Only what the class answers: else a 405 from the route would name methods the
            # class refuses (and the class's 405 methods the route refuses).
            answered = frozenset(target.allowed_methods())
            if not found & answered:
                raise ValueError(
                    f"{target.__name__} answers none of {', '.join(sorted(found))}: "
                    f"it has methods for {', '.join(sorted(answered))}"
                )
            found &= answered
    elif is_handler_class:
        found = frozenset(target.allowed_methods())
        if not found:  # a misspelt ``Get``: every request would be a 404, with no clue why
            raise ValueError(
                f"{target.__name__} has no verb method (get, post, ...): no request can reach it"
            )
    else:
        found = frozenset({"GET"})
    if "GET" in found:
        found |= {"HEAD"}
    return found


class Router:
    """An ordered list of routes."""

    #: Most (method, raw path) results ``match_raw`` remembers; the table is cleared when full.
    CACHE_SIZE = 4096

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._named: dict[str, Route] = {}
        #: (method, raw path) → a previous successful match. Hot paths repeat: a hit skips
        #: decoding and every regex. Only matches are remembered (a flood of unknown paths
        #: cannot grow it), it is cleared when full, and readers must not mutate the kwargs.
        self.cache: dict[tuple[str, bytes], tuple[Route, tuple[str, ...], dict[str, str]]] = {}

    def add(
        self,
        pattern: str,
        target: Any,
        methods: Iterable[str] | None = None,
        name: str | None = None,
        **init_kwargs: Any,
    ) -> Route:
        return self.add_route(Route(pattern, target, methods, name, init_kwargs))

    def add_route(self, route: Route, *, first: bool = False) -> Route:
        """Append a built route (``first``: put it before the others); its init kwargs may use
        any key, even ``name`` or ``methods``."""
        name = route.name
        if name is not None:
            if name in self._named:
                raise ValueError(f"a route named {name!r} exists already: {self._named[name]!r}")
            self._named[name] = route
        if first:
            self.routes.insert(0, route)
        else:
            self.routes.append(route)
        self.cache.clear()
        return route

    def remember(
        self,
        method: str,
        raw_path: bytes,
        found: tuple[Route, tuple[str, ...], dict[str, str]],
    ) -> None:
        if len(self.cache) >= self.CACHE_SIZE:
            self.cache.clear()
        self.cache[(method, raw_path)] = found

    def match(
        self, method: str, path: str
    ) -> tuple[Route | None, tuple[str, ...], dict[str, str], frozenset[str]]:
        """The first route for this path and method, or None and the methods the path allows."""
        allowed: frozenset[str] = frozenset()
        for route in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            if method in route.methods:
                args, kwargs = route.arguments(found)
                return route, args, kwargs, allowed
            allowed |= route.methods
        return None, (), {}, allowed

    def reverse(self, name: str, /, *args: Any, **kwargs: Any) -> str:
        """Build the path of a named route from values for its groups.

        Only patterns whose groups are plain ``(...)`` or ``(?P<name>...)`` can be reversed;
        values are percent-encoded and the result must match the route. ``name`` is
        positional-only, so a group may be called ``name`` too.
        """
        route = self._named.get(name)
        if route is None:
            raise KeyError(f"no route named {name!r}")
        values = list(args)
        filled: list[tuple[str | None, str]] = []
        path = _fill(route.pattern, values, kwargs, filled)
        unused = sorted(set(kwargs) - set(route.regex.groupindex))
        if values or unused:  # a value that has no group: the caller meant another route
            extra = [repr(v) for v in values] + unused
            raise ValueError(f"route {route.pattern!r} has no group for {', '.join(extra)}")
        # Routes see the percent-decoded path: check what the request for this URL will match.
        # A control character is refused in a request's path (a 400), so here too.
        # The whole path must match (a prefix match would cut ``12abc`` to ``12`` for an
        # unanchored ``(\d+)``), and give each group the very value it was built from.
        decoded = unquote(path)
        found = None if CONTROL_CHARACTER.search(decoded) else route.regex.fullmatch(decoded)
        if found is None or not _gives_back(route, found, filled):
            raise ValueError(f"values {args!r} {kwargs!r} do not match route {route.pattern!r}")
        return path


_GROUP = re.compile(r"\((\?P<(\w+)>)?")
_REGEX_ONLY = re.compile(r"(?<!\\)[\[\]*+?{}|.]")


def _gives_back(route: Route, found: re.Match[str], filled: list[tuple[str | None, str]]) -> bool:
    """Whether the match hands the handler the values the path was built from."""
    positional = [value for key, value in filled if key is None]
    one_to_one = len(positional) == len(route.positional)  # not so with nested groups
    if one_to_one and positional != [found.group(i) for i in route.positional]:
        return False
    return all(found.group(key) == value for key, value in filled if key is not None)


def _fill(
    pattern: str, args: list[Any], kwargs: dict[str, Any], filled: list[tuple[str | None, str]]
) -> str:
    """The path of ``pattern`` with its groups filled; ``filled`` gets (name or None, value)."""
    text = pattern.removeprefix("^")
    if text.endswith("$"):
        backslashes = len(text) - 1 - len(text[:-1].rstrip("\\"))
        if backslashes % 2 == 0:  # an anchor, not an escaped ``\$``
            text = text[:-1]
    out: list[str] = []
    pos = 0
    while True:
        start = _next_group(text, pos)
        if start is None:
            out.append(_literal(text[pos:], pattern))
            return "".join(out)
        out.append(_literal(text[pos:start], pattern))
        opener = _GROUP.match(text, start)
        assert opener is not None
        end = _group_end(text, start, pattern)
        group_name = opener.group(2)
        if group_name:
            if group_name not in kwargs:
                raise ValueError(f"route {pattern!r} needs a value for {group_name!r}")
            value = kwargs[group_name]
        else:
            if not args:
                raise ValueError(f"route {pattern!r} needs more positional values")
            value = args.pop(0)
        filled.append((group_name or None, str(value)))
        out.append(quote(str(value), safe=""))
        pos = end + 1


def _next_group(text: str, pos: int) -> int | None:
    i = pos
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "(":
            if text.startswith("(?", i) and not text.startswith("(?P<", i):
                raise ValueError(f"cannot reverse a pattern with {text[i : i + 3]!r} groups")
            return i
        i += 1
    return None


def _group_end(text: str, start: int, pattern: str) -> int:
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced parentheses in route {pattern!r}")


def _literal(text: str, pattern: str) -> str:
    """A pattern's fixed text as URL text: ``\\?`` is a ``?`` of the path, so ``%3F``."""
    if _REGEX_ONLY.search(text):
        raise ValueError(f"cannot reverse route {pattern!r}: {text!r} is not a literal")
    return quote(re.sub(r"\\(.)", r"\1", text), safe=_PATH_SAFE)


#: What stays as it is in a reversed path: its separators and the characters RFC 3986 allows
#: in a segment (the rest, ``%`` included, is percent-encoded: routes see the decoded path).
_PATH_SAFE = "/:@!$&'()*+,;="
