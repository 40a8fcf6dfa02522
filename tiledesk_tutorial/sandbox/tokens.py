"""JSON Web Tokens signed as Tiledesk signs them (contract §2.6), with PyJWT and HS256."""

from __future__ import annotations

import time
from typing import Any

import jwt

from tiledesk_tutorial.sandbox.ids import new_uuid

ISSUER = "https://tiledesk.com"
AUDIENCE = "https://tiledesk.com"
SUBSCRIPTION_AUDIENCE_PREFIX = "https://tiledesk.com/subscriptions/"
ALGORITHM = "HS256"


def sign_user_token(user: dict[str, Any], secret: str) -> str:
    """The ``JWT <jwt>`` token of an email/password sign-in (``sub: user``)."""
    claims = {
        "_id": user["_id"],
        "email": user["email"],
        "firstname": user["firstname"],
        "lastname": user["lastname"],
        "emailverified": user["emailverified"],
    }
    return "JWT " + _sign(claims, secret, AUDIENCE, "user", jti=True)


def sign_guest_token(guest: dict[str, Any], secret: str) -> str:
    """The ``JWT <jwt>`` token of an anonymous sign-in (``sub: guest``); ``guest`` is the user."""
    return "JWT " + _sign(dict(guest), secret, AUDIENCE, "guest", jti=True)


def sign_subscription_token(hook: dict[str, Any], secret: str) -> str:
    """The ``token`` of a webhook delivery: the hook, signed with the subscription's secret.

    The token depends only on the hook and the second it is issued in, so a burst of deliveries
    reuses one signature per subscription and second.
    """
    issued_at = int(time.time())
    key = (hook["_id"], secret, issued_at)
    token = _subscription_tokens.get(key)
    if token is None:
        if len(_subscription_tokens) > 1000:
            _subscription_tokens.clear()
        audience = SUBSCRIPTION_AUDIENCE_PREFIX + hook["_id"]
        token = _sign(dict(hook), secret, audience, "subscription", issued_at=issued_at)
        _subscription_tokens[key] = token
    return token


_subscription_tokens: dict[tuple[str, str, int], str] = {}


def _sign(
    claims: dict[str, Any],
    secret: str,
    audience: str,
    subject: str,
    jti: bool = False,
    issued_at: int | None = None,
) -> str:
    iat = int(time.time()) if issued_at is None else issued_at
    claims.update(iat=iat, aud=audience, iss=ISSUER, sub=subject)
    if jti:
        claims["jti"] = new_uuid()
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def unverified_audience(token: str) -> str | None:
    """Read a token's audience without verifying it, to choose the key that verifies it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    audience = claims.get("aud")
    return audience if isinstance(audience, str) else None


def verify(token: str, secret: str, audience: str) -> dict[str, Any] | None:
    """Verify a token's HS256 signature and audience; return its claims, or None."""
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM], audience=audience)
    except jwt.PyJWTError:
        return None
