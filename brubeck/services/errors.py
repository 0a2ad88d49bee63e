"""The exceptions of ``brubeck.services``: one base, one subclass per thing a caller handles."""

from __future__ import annotations


class ServiceError(Exception):
    """Something went wrong between this process and a job pool or a service."""


class ServiceUnavailable(ServiceError, TimeoutError):
    """No worker took the job, or no reply came, within the time allowed.

    It is a ``TimeoutError`` too: what the caller learns is that time ran out, and the message
    says what was waited for and what usually causes it.
    """


class RemoteError(ServiceError):
    """The worker received the request and its handler failed; the message is the worker's."""


class PayloadError(ServiceError, ValueError):
    """Frames that are not a payload: an unknown encoding tag, bad UTF-8 or bad JSON."""
