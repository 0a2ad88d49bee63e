"""Authentication helpers: who the user is, and verb methods that require one.

A handler mixes in ``UserHandlingMixin`` and overrides ``get_current_user`` (typically reading
a signed cookie); ``@authenticated`` answers 401 when there is no user, ``@web_authenticated``
redirects a browser to the ``login_url`` setting instead. Both work on ``def`` and
``async def`` verb methods.
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
            self._current_user = self.get_current_user()
        return self._current_user

    @current_user.setter
    def current_user(self, value: Any) -> None:
        self._current_user = value


def _check(handler: Any, redirect: bool) -> Any:
    """None when a user is logged in; else raise 401, or return a redirect response."""
    if getattr(handler, "current_user", None):
        return None
    login_url = handler.settings.get("login_url") if redirect else None
    if not login_url or handler.request.method not in ("GET", "HEAD"):
        raise HTTPError(401, "log in first")
    separator = "&" if "?" in login_url else "?"
    return handler.redirect(f"{login_url}{separator}{urlencode({'next': handler.request.uri})}")


def _guard(method: Callable[..., Any], redirect: bool) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def guarded_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            refused = _check(self, redirect)
            return refused if refused is not None else await method(self, *args, **kwargs)

        return guarded_async

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        refused = _check(self, redirect)
        return refused if refused is not None else method(self, *args, **kwargs)

    return guarded


def authenticated(method: Callable[..., Any]) -> Callable[..., Any]:
    """Require a logged-in user; answer 401 otherwise (for APIs)."""
    return _guard(method, redirect=False)


def web_authenticated(method: Callable[..., Any]) -> Callable[..., Any]:
    """Require a logged-in user; send a browser to ``settings["login_url"]?next=…`` otherwise.

    Without a ``login_url`` setting, or for methods other than GET and HEAD, answer 401.
    """
    return _guard(method, redirect=True)
