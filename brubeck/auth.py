"""Authentication helpers: who the user is, and verb methods that require one.

A handler mixes in ``UserHandlingMixin`` and overrides ``get_current_user`` (typically reading
a signed cookie); ``@authenticated`` answers 401 when there is no user, ``@web_authenticated``
redirects a browser to the ``login_url`` setting instead. Both work on ``def`` and
``async def`` verb methods. ``get_current_user`` may be ``async def`` (a session looked up in
a store): the guard of an ``async def`` method awaits it; anywhere it cannot be awaited,
reading ``current_user`` raises, since a coroutine object would pass for a logged-in user.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from .errors import HTTPError

_UNSET: Any = object()


class UserHandlingMixin:
    """``current_user``: whatever ``get_current_user`` returns, computed once per request."""

    _current_user: Any = _UNSET

    def get_current_user(self) -> Any:
        """Override: return the user for this request, or None when nobody is logged in."""
        return None

    @property
    def current_user(self) -> Any:
        if self._current_user is _UNSET:
            user = self.get_current_user()
            if inspect.isawaitable(user):
                _close(user)
                raise TypeError(
                    f"{type(self).__name__}.get_current_user is async, and current_user "
                    "cannot await it here: guard an async def method with @authenticated "
                    "(it awaits it), or set self.current_user = await self.get_current_user() "
                    "in an async def prepare"
                )
            self._current_user = user
        return self._current_user

    @current_user.setter
    def current_user(self, value: Any) -> None:
        self._current_user = value


def _close(awaitable: Any) -> None:
    """Drop a coroutine nobody will await without Python's "never awaited" warning."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


async def _load_user(handler: Any) -> None:
    """Await an ``async def get_current_user`` once, so that ``current_user`` has its value."""
    if getattr(handler, "_current_user", None) is _UNSET:
        user = handler.get_current_user()
        handler._current_user = await user if inspect.isawaitable(user) else user


def _check(handler: Any, redirect: bool) -> Any:
    """None when a user is logged in; else raise 401, or return a redirect response."""
    if getattr(handler, "current_user", None):
        return None
    login_url = handler.settings.get("login_url") if redirect else None
    if not login_url or handler.request.method not in ("GET", "HEAD"):
        # RFC 9110 wants a challenge with every 401; cookie sessions have no standard scheme,
        # so the app names its own (e.g. 'Bearer realm="api"') or none is sent.
        challenge = handler.settings.get("www_authenticate")
        raise HTTPError(401, "log in first", {"WWW-Authenticate": challenge} if challenge else None)
    separator = "&" if "?" in login_url else "?"
    return handler.redirect(f"{login_url}{separator}{urlencode({'next': handler.request.uri})}")


def _guard(method: Callable[..., Any], redirect: bool) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def guarded_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            await _load_user(self)
            refused = _check(self, redirect)
            return refused if refused is not None else await method(self, *args, **kwargs)

        return guarded_async

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        refused = _check(self, redirect)
        return refused if refused is not None else method(self, *args, **kwargs)

    return guarded


def authenticated(method: Callable[..., Any]) -> Callable[..., Any]:
    """Require a logged-in user; answer 401 otherwise (for APIs).

    The 401 carries ``WWW-Authenticate`` with the ``www_authenticate`` setting, when set.
    """
    return _guard(method, redirect=False)


def web_authenticated(method: Callable[..., Any]) -> Callable[..., Any]:
    """Require a logged-in user; send a browser to ``settings["login_url"]?next=…`` otherwise.

    Without a ``login_url`` setting, or for methods other than GET and HEAD, answer 401.
    """
    return _guard(method, redirect=True)
