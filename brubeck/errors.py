"""The exception a handler raises to answer with an HTTP error, from anywhere in its code."""

from __future__ import annotations

from .response import check_header, check_status


class HTTPError(Exception):
    """Stop handling the request and answer with ``status``.

    Args:
        status: the HTTP status code, e.g. 404.
        message: shown to the client in the error body (keep secrets out of it).
        headers: extra response headers, e.g. ``{"Allow": "GET"}`` or ``{"Retry-After": "5"}``.
    """

    def __init__(
        self,
        status: int = 500,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        check_status(status)
        self.status = status
        self.message = message
        # Checked here, at the raise that carries them: they bypass the handler's set_header.
        self.headers = {name: str(value) for name, value in (headers or {}).items()}
        for name, value in self.headers.items():
            check_header(name, value)
        super().__init__(status, message)

    @property
    def reason(self) -> str:
        from .response import reason_phrase

        return reason_phrase(self.status)

    def __str__(self) -> str:
        text = f"HTTP {self.status} {self.reason}"
        return f"{text}: {self.message}" if self.message else text
