"""Show secrets without revealing them: tokens, passwords, webhook secrets and authtokens."""

from __future__ import annotations

import re
from typing import Any

from tiledesk_tutorial.wire import JWT_PREFIX

_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")


def redact(secret: str | None, keep: int = 4) -> str:
    """Return ``secret`` with all but its first ``keep`` characters hidden.

    A ``JWT `` prefix is kept visible so that learners can see the token's format. Short values are
    hidden entirely, so that nothing useful can be read off them.
    """
    if secret is None:
        return "<not set>"
    if not isinstance(secret, str):
        secret = str(secret)
    prefix = ""
    for scheme in (JWT_PREFIX, "Bearer ", "Basic "):
        if secret.startswith(scheme):
            prefix, secret = scheme, secret[len(scheme) :]
            break
    if len(secret) <= keep * 3:
        return f"{prefix}***"
    return f"{prefix}{secret[:keep]}…({len(secret)} chars)"


def redact_jwts(text: str) -> str:
    """Replace every JWT found in ``text`` by its redacted form (for logs and error messages)."""
    return _JWT_RE.sub(lambda m: redact(m.group(0), keep=6), text)


#: Keys whose string value is a secret wherever they appear in a JSON document.
SECRET_KEYS = frozenset({"secret", "token", "password", "authtoken", "jwt"})


def redact_secrets(value: Any) -> Any:
    """A copy of a JSON value to show: every secret key's value and every JWT redacted.

    Keys are compared case-insensitively against :data:`SECRET_KEYS`; strings elsewhere have any
    JWT in them shortened, so a token copied into a field is hidden too.
    """
    if isinstance(value, dict):
        return {
            key: redact(item)
            if isinstance(item, str) and str(key).lower() in SECRET_KEYS
            else redact_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(item) for item in value]
    if isinstance(value, str):
        return redact_jwts(value)
    return value
