"""Password hashing with scrypt, a deliberately slow key-derivation function."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading

_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    """Return a self-describing scrypt hash of ``password`` with a fresh random salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    encoded_salt = base64.b64encode(salt).decode()
    encoded_digest = base64.b64encode(digest).decode()
    return f"scrypt${_N}${_R}${_P}${encoded_salt}${encoded_digest}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``stored`` hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


_decoy: str | None = None
_decoy_lock = threading.Lock()


def verify_password_or_decoy(password: str, stored: str | None) -> bool:
    """:func:`verify_password`, or, for an account that does not exist (``stored`` None), the same
    work against a decoy hash and False: the time taken does not tell the two apart."""
    global _decoy
    if stored is not None:
        return verify_password(password, stored)
    with _decoy_lock:
        if _decoy is None:
            _decoy = hash_password(base64.b64encode(os.urandom(12)).decode())
    verify_password(password, _decoy)
    return False
