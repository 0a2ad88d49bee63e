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


def mask_xsrf_token(token: str) -> str:
    """The token under a fresh random pad: the pad, then token XOR pad (86 characters).

    A page sent gzipped must not carry the same secret each time next to text an attacker
    chooses: the compressed size would give it away (BREACH). Masked, it differs on every
    page; ``unmask_xsrf_token`` gives the token back.
    """
    raw = _unb64(token)
    pad = os.urandom(len(raw))
    return _b64(pad + bytes(a ^ b for a, b in zip(raw, pad, strict=True)))


def unmask_xsrf_token(sent: str) -> str:
    """The token a masked one carries; a token sent as it is (from the cookie, by
    JavaScript) comes back unchanged; anything else gives a string no token equals."""
    if len(sent) != 86 or not set(sent) <= _XSRF_ALPHABET:
        return sent
    try:
        both = _unb64(sent)
    except (ValueError, binascii.Error):
        return sent
    if _b64(both) != sent:  # the last character's unused bits: one token, one spelling
        return sent
    pad, masked = both[:32], both[32:]
    return _b64(bytes(a ^ b for a, b in zip(masked, pad, strict=True)))


def same_token(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


# Passwords: scrypt, with its parameters stored beside the hash so they can be raised later.

#: OWASP's Password Storage Cheat Sheet floor for scrypt (N=2^14, r=8, p=5): about 0.3 s of
#: one core per hash, so call it off the event loop (``await asyncio.to_thread(...)``).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 5

#: The most memory one check may take (128 * r * n bytes): raised parameters stay checkable
#: (OpenSSL's default limit is 32 MiB), a stored hash cannot make the process take gigabytes.
_SCRYPT_MAX_MEMORY = 1 << 30


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    needed = 128 * r * (n + p + 2)
    if needed > _SCRYPT_MAX_MEMORY:
        raise ValueError(f"scrypt parameters n={n}, r={r} need more than 1 GiB")
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=needed + (1 << 20)
    )


def hash_password(password: str) -> str:
    """A salted scrypt hash, ``scrypt$n$r$p$salt$hash``, for storing instead of the password."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, 32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by ``hash_password`` (constant-time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)
