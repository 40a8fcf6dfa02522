"""Who is calling, and what they may do: authentication, then the membership and role checks, in the
order the real server runs them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from tiledesk_tutorial.sandbox import tokens
from tiledesk_tutorial.sandbox.errors import (
    ApiError,
    forbidden,
    not_member,
    role_too_low,
    unauthorized,
)
from tiledesk_tutorial.sandbox.guessing import GuessingGuard
from tiledesk_tutorial.sandbox.passwords import verify_password_or_decoy
from tiledesk_tutorial.sandbox.store import Store
from tiledesk_tutorial.wire import (
    SUBJECT_GUEST,
    SUBJECT_USER,
    SUBSCRIPTION_AUDIENCE_PREFIX,
    TOKEN_AUDIENCE,
    bare_token,
    unverified_claims,
)

ROLE_RANK = {
    "guest": 0,
    "user": 1,
    "teammate": 2,
    "agent": 3,
    "supervisor": 4,
    "admin": 5,
    "owner": 6,
}
_SCHEME_RE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a registered user, an anonymous guest, or a webhook subscription."""

    kind: Literal["user", "guest", "subscription"]
    id: str
    fullname: str
    email: str | None = None
    attributes: dict[str, Any] | None = None
    project_id: str | None = None  # the project of a subscription principal


@dataclass(frozen=True)
class Membership:
    """A principal's place in one project: its role (``subscription`` for a webhook's token)."""

    role: str

    def at_least(self, role: str) -> bool:
        """True when this membership's role is ``role`` or higher."""
        return ROLE_RANK.get(self.role, -1) >= ROLE_RANK[role]


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, as passport does on Tiledesk."""

    def __init__(self, store: Store, global_secret: str) -> None:
        self._store = store
        self._secret = global_secret
        # Checking a password takes ~80 ms by design; remember recent successes so that HTTP Basic
        # on every call (as the tutorial's curl commands do) stays fast.
        self._basic_cache: OrderedDict[str, str] = OrderedDict()
        #: Failure counts of HTTP Basic and sign-in, per account and per address.
        self.guard = GuessingGuard()
        self._cache_lock = threading.Lock()
        # Verifying a token and reading its user takes ~90 us, a fifth of a message POST; the
        # principal it gives is remembered until the token's ``exp`` (users are never disabled
        # in the sandbox). Memberships are read each time: ~8 us, not worth a cache.
        self._principals: dict[str, tuple[Principal, float]] = {}

    def authenticate(self, header: str | None, address: str | None = None) -> Principal:
        """Return the caller, or raise the real server's 401 (or 400/403) answer; ``429`` for
        HTTP Basic after repeated wrong passwords for the account or from ``address``."""
        if not header:
            raise unauthorized()
        match = _SCHEME_RE.match(header)
        if not match:
            raise unauthorized()
        scheme, credentials = match.group(1).lower(), match.group(2)
        if scheme == "jwt":
            principal = self._cached(credentials) or self._from_jwt(credentials)
        elif scheme == "basic":
            principal = self._from_basic(credentials, address)
        else:  # Bearer and everything else: neither strategy of the real server matches.
            raise unauthorized()
        if len(header.split(" ")) != 2:
            # Tiledesk's valid-token middleware: the header must be exactly "<scheme> <value>".
            raise forbidden("Unauthorized.")
        return principal

    def _from_jwt(self, token: str) -> Principal:
        audience = unverified_claims(token).get("aud")
        if isinstance(audience, str) and audience.startswith(SUBSCRIPTION_AUDIENCE_PREFIX):
            return self._subscription_principal(token, audience)
        claims = tokens.verify(token, self._secret, TOKEN_AUDIENCE)
        if claims is None:
            raise unauthorized()
        subject = claims.get("sub")
        if subject == SUBJECT_USER:
            user = self._store.doc(
                "SELECT doc FROM users WHERE id = ?", (str(claims.get("_id", "")),)
            )
            if user is None or user.get("status") != 100:
                raise unauthorized()
            return self._remember(token, claims, _user_principal(user))
        if subject == SUBJECT_GUEST and isinstance(claims.get("_id"), str):
            return self._remember(
                token,
                claims,
                Principal(
                    kind="guest",
                    id=claims["_id"],
                    fullname=str(claims.get("fullName") or claims.get("firstname") or "Guest"),
                    email=claims.get("email") if isinstance(claims.get("email"), str) else None,
                    attributes=claims.get("attributes")
                    if isinstance(claims.get("attributes"), dict)
                    else None,
                ),
            )
        raise unauthorized()

    def agent_from_token(self, token: str) -> Principal | None:
        """The agent whose sign-in token this is (``JWT ...`` or bare), or None.

        For the Realtime API's handshake: only a registered, active user's token opens a socket
        (a visitor's, a webhook delivery's or a forged one does not).
        """
        claims = tokens.verify(bare_token(token), self._secret, TOKEN_AUDIENCE)
        if claims is None or claims.get("sub") != SUBJECT_USER:
            return None
        user = self._store.doc("SELECT doc FROM users WHERE id = ?", (str(claims.get("_id", "")),))
        if user is None or user.get("status") != 100:
            return None
        return _user_principal(user)

    def _cached(self, token: str) -> Principal | None:
        found = self._principals.get(token)
        if found is None:
            return None
        principal, expires = found
        if time.time() >= expires:  # PyJWT refuses a token from its ``exp`` second on
            self._principals.pop(token, None)
            return None
        return principal

    def _remember(self, token: str, claims: dict[str, Any], principal: Principal) -> Principal:
        if len(self._principals) >= 10_000:
            self._principals.clear()  # a crude bound; a workshop never comes near it
        expires = claims.get("exp")
        self._principals[token] = (
            principal,
            float(expires) if isinstance(expires, int | float) else math.inf,
        )
        return principal

    def _subscription_principal(self, token: str, audience: str) -> Principal:
        subscription_id = audience[len(SUBSCRIPTION_AUDIENCE_PREFIX) :]
        row = self._store.query_one(
            "SELECT secret, id_project FROM subscriptions WHERE id = ?", (subscription_id,)
        )
        if row is None or tokens.verify(token, row[0], audience) is None:
            raise unauthorized()
        return Principal(
            kind="subscription", id=subscription_id, fullname="Guest", project_id=row[1]
        )

    def _from_basic(self, credentials: str, address: str | None) -> Principal:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ApiError(400, "Bad Request", plain=True) from None
        if ":" not in decoded:
            raise ApiError(400, "Bad Request", plain=True)
        email, password = decoded.split(":", 1)
        self.guard.check(email, address)  # before the cache, which would confirm a guess
        row = self._store.query_one(
            "SELECT password_hash, doc FROM users WHERE email = ?", (email.lower(),)
        )
        if row is None:
            verify_password_or_decoy(password, None)
            self.guard.failed(email, address)
            raise unauthorized()
        stored_hash, doc = row
        key = hashlib.sha256(f"{email.lower()}\0{password}\0{stored_hash}".encode()).hexdigest()
        with self._cache_lock:
            cached = key in self._basic_cache
            if cached:
                self._basic_cache.move_to_end(key)
        if not cached:
            if not verify_password_or_decoy(password, stored_hash):
                self.guard.failed(email, address)
                raise unauthorized()
            self.guard.succeeded(email)
            with self._cache_lock:
                self._basic_cache[key] = email
                while len(self._basic_cache) > 1024:
                    self._basic_cache.popitem(last=False)
        user = json.loads(doc)
        if user.get("status") != 100:
            raise unauthorized()
        return _user_principal(user)

    def membership(self, principal: Principal, project_id: str) -> Membership:
        """The principal's membership of ``project_id``, or the real server's 403."""
        if principal.kind == "subscription":
            # Unlike Tiledesk, a subscription's token is only good for its own project.
            if principal.project_id != project_id:
                raise not_member()
            return Membership(role="subscription")
        doc = self._store.doc(
            "SELECT doc FROM project_users WHERE id_project = ? AND user_key = ?",
            (project_id, principal.id),
        )
        if doc is None or doc.get("status") != "active":
            raise not_member()
        return Membership(role=doc["role"])

    def require(
        self,
        principal: Principal,
        project_id: str,
        role: str,
        *,
        subscription_allowed: bool = False,
    ) -> Membership:
        """Check that the principal belongs to the project with at least ``role``."""
        member = self.membership(principal, project_id)
        if member.role == "subscription":
            if not subscription_allowed:
                raise role_too_low()
            return member
        if not member.at_least(role):
            raise role_too_low()
        return member


def _user_principal(user: dict[str, Any]) -> Principal:
    return Principal(
        kind="user",
        id=user["_id"],
        fullname=f"{user.get('firstname', '')} {user.get('lastname', '')}".strip(),
        email=user.get("email"),
    )
