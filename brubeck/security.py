"""Signed values (for cookies and tokens) and password hashing.

Rules of this module: values are serialised as JSON, never pickled, so a forged value can at
worst be a wrong string; every signature check is constant-time; secrets rotate by listing
them newest first (sign with the first, accept any).

A signed value is ``1.<payload>.<signature>``, both parts base64url without padding:
``payload = JSON [name, value, issued_at]`` and
``signature = HMAC-SHA256(secret, "1." + name + "." + payload)``; the name is bound into the
signature so a value signed for one cookie cannot be replayed as another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from typing import Any

import ujson

VERSION = "1"

#: Signed values older than this are refused unless a caller says otherwise (31 days).
DEFAULT_MAX_AGE = 31 * 24 * 3600

Secret = str | bytes
Secrets = Secret | Sequence[Secret]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_list(secrets: Secrets) -> list[bytes]:
    items = [secrets] if isinstance(secrets, (str, bytes)) else list(secrets)
    keys = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in items]
    if not keys or any(len(k) < 16 for k in keys):
        raise ValueError(
            "signing secrets must be at least 16 bytes each; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return keys


def _signature(key: bytes, name: str, payload: str) -> str:
    message = f"{VERSION}.{name}.{payload}".encode()
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def sign_value(secrets: Secrets, name: str, value: Any, *, now: float | None = None) -> str:
    """Sign a JSON-serialisable value under ``name`` with the newest secret."""
    issued = int(time.time() if now is None else now)
    payload = _b64(ujson.dumps([name, value, issued], ensure_ascii=False).encode("utf-8"))
    return f"{VERSION}.{payload}.{_signature(_key_list(secrets)[0], name, payload)}"


def verify_value(
    secrets: Secrets,
    name: str,
    signed: str | None,
    *,
    max_age: float | None = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> Any:
    """The value if ``signed`` is genuine, for ``name``, and younger than ``max_age``; else None.

    Tampered, truncated, expired, renamed or foreign values all give None: a caller cannot
    tell them apart, and need not.
    """
    if not signed or not isinstance(signed, str):
        return None
    version, _, rest = signed.partition(".")
    payload, _, signature = rest.partition(".")
    # compare_digest refuses (TypeError) a str with non-ASCII characters, which a cookie may hold.
    if version != VERSION or not payload or not signature or not signature.isascii():
        return None
    if not any(
        hmac.compare_digest(_signature(key, name, payload), signature) for key in _key_list(secrets)
    ):
        return None
    try:
        signed_name, value, issued = ujson.loads(_unb64(payload))
    except (ValueError, TypeError, binascii.Error):
        return None
    if signed_name != name or not isinstance(issued, int):
        return None
    current = time.time() if now is None else now
    if max_age is not None and current - issued > max_age:
        return None
    if issued > current + 300:  # from the future: a clock far off, or a forged time
        return None
    return value


# XSRF tokens: random, compared in constant time (the double-submit cookie pattern).

_XSRF_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def new_xsrf_token() -> str:
    """32 random bytes, base64url: unguessable, and safe as a cookie value."""
    return _b64(os.urandom(32))


def valid_xsrf_token(token: str) -> bool:
    return len(token) == 43 and set(token) <= _XSRF_ALPHABET


def same_token(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


# Passwords: scrypt, with its parameters stored beside the hash so they can be raised later.

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """A salted scrypt hash, ``scrypt$n$r$p$salt$hash``, for storing instead of the password."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by ``hash_password`` (constant-time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)
