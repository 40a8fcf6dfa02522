"""Tiledesk webhook deliveries: verify one and read it into an :class:`Event`; make valid ones.

A delivery is what Tiledesk POSTs to a subscription's ``target`` (docs/wire-format.md,
"Webhook deliveries")::

    headers: Content-Type: application/json, x-hook-secret: <subscription secret>,
             User-Agent: tiledesk-webhooks, Origin: <server origin>
    body:    {"timestamp": <epoch ms>, "payload": {...}, "hook": {<subscription, no secret>},
              "token": "<HS256 JWT over the hook, signed with the secret>"}

:func:`verify_delivery` is the whole check a receiver makes, in order: the ``x-hook-secret`` header
is the secret of a known subscription (compared in constant time), the body is a delivery, and,
when asked, the ``token`` is a JWT from that subscription. It returns the
:class:`~tiledesk_tutorial.models.Event` or raises one :class:`WebhookVerificationError`.

What Tiledesk signs, and what it does not:

- ``x-hook-secret`` is the subscription secret itself, sent in clear on every delivery. Comparing it
  proves the sender knows the secret; it says nothing about the body.
- ``token`` is a JWT whose claims are the *subscription* (``hook``), with audience
  ``https://tiledesk.com/subscriptions/<id>``, issuer ``https://tiledesk.com``, subject
  ``subscription`` and no expiry. It proves the sender knows the secret, and that the delivery is
  for that subscription.
- Nothing covers the ``payload`` or the ``timestamp``: there is no body signature or HMAC. Anyone
  who has seen one delivery (the secret and the token never change) can send any payload. Serve
  the listener over HTTPS (a tunnel does that), keep the secret out of logs, and treat payloads as
  claims.

The ``make_*`` functions build deliveries exactly as the real server does, to test a receiver or
to feed a listener without a server.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from tiledesk_tutorial.errors import InvalidInputError, TiledeskTutorialError
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.wire import (
    SECRET_HEADER,
    SUBJECT_SUBSCRIPTION,
    TOKEN_ALGORITHM,
    TOKEN_ISSUER,
    SenderRole,
    iso_now,
    new_object_id,
    new_request_id,
    new_uuid,
    now,
    subscription_audience,
    webhook_headers,
)

__all__ = [
    "KEPT_HEADERS",
    "InvalidDelivery",
    "OutgoingDelivery",
    "WebhookVerificationError",
    "make_delivery",
    "make_hook",
    "make_message_payload",
    "match_secret",
    "parse_delivery",
    "sign_delivery",
    "verify_delivery",
    "verify_token",
]

#: Headers worth keeping with an event (never the secret).
KEPT_HEADERS = ("user-agent", "origin", "content-type")


class WebhookVerificationError(TiledeskTutorialError, ValueError):
    """A request that is not an accepted Tiledesk delivery.

    Attributes:
        reason: what was wrong, in a few words (the listener answers it as ``{"error": reason}``).
        status: the HTTP status a receiver answers: 401 when the sender is not proven (secret,
            token), 400 when the body is no delivery (:class:`InvalidDelivery`).
    """

    status = 401

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        self.reason = reason
        super().__init__(reason, hint=hint)


class InvalidDelivery(WebhookVerificationError):
    """A body that is not a Tiledesk webhook delivery (not JSON, no ``payload``...): answer 400."""

    status = 400


# -- verifying and reading -------------------------------------------------------------------------
def verify_delivery(
    body: bytes | str | Mapping[str, Any],
    headers: Mapping[str, str],
    secrets: Iterable[str],
    *,
    verify_token: bool = False,
    received_at: datetime | None = None,
) -> Event:
    """Check a delivery the way a receiver should, and return it as an :class:`Event`.

    The checks, in order:

    1. with ``secrets`` (the subscriptions' secrets): the ``x-hook-secret`` header is one of them,
       compared in constant time; with no secrets at all, any sender is accepted;
    2. the body is a delivery: a JSON object with a ``payload`` object (:func:`parse_delivery`);
    3. with ``verify_token``: the body's ``token`` is a JWT signed with that secret for the
       delivering subscription (:func:`verify_token`).

    Raises:
        WebhookVerificationError: the secret or the token does not prove the sender (``status``
            401); :class:`InvalidDelivery` (``status`` 400) when the body is no delivery.
    """
    known = [s for s in secrets if s]
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    secret = None
    if known:
        given = lowered.get(SECRET_HEADER)
        secret = match_secret(given, known)
        if secret is None:
            if given:
                raise WebhookVerificationError(
                    "wrong x-hook-secret: it is not the secret of a known subscription",
                    hint="add the secret that create_subscription() returned "
                    "(listener.add_secret(subscription.secret)).",
                )
            raise WebhookVerificationError(
                "missing x-hook-secret header",
                hint="Tiledesk sends it on every delivery: this request did not come from it.",
            )
    event = parse_delivery(body, headers=lowered, received_at=received_at)
    if verify_token:
        if secret is None:
            raise WebhookVerificationError(
                "token not checked: the listener knows no subscription secret yet",
                hint="add the subscription's secret first (listener.add_secret(...)).",
            )
        _token_claims(event.raw.get("token"), secret, event.subscription_id)
    return event


def parse_delivery(
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    received_at: datetime | None = None,
) -> Event:
    """Turn a delivery body (bytes, str or an already-decoded dict) into an :class:`Event`,
    without checking who sent it (:func:`verify_delivery` does).

    Raises :class:`InvalidDelivery` saying what was wrong: not JSON, not a JSON object, no
    ``payload`` object, a ``hook`` that is not an object.
    """
    if isinstance(body, bytes | bytearray | str):
        if not body:
            raise InvalidDelivery("empty body: expected a JSON object with a 'payload'")
        try:
            body = json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise InvalidDelivery(f"body is not valid JSON ({_short(exc)})") from None
        except RecursionError:
            raise InvalidDelivery("body is nested too deeply to be a webhook delivery") from None
    if not isinstance(body, dict):
        raise InvalidDelivery(
            f"body is a JSON {_json_type(body)}, expected an object with 'hook' and 'payload'"
        )
    payload = body.get("payload")
    if payload is None:
        raise InvalidDelivery("body has no 'payload': this is not a Tiledesk webhook delivery")
    if not isinstance(payload, dict):
        raise InvalidDelivery(f"'payload' is a JSON {_json_type(payload)}, expected an object")
    hook = body.get("hook", {})
    if not isinstance(hook, dict):
        raise InvalidDelivery(f"'hook' is a JSON {_json_type(hook)}, expected an object")
    event = hook.get("event")
    timestamp = body.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        timestamp = None
    elif isinstance(timestamp, float) and not math.isfinite(timestamp):
        timestamp = None  # NaN, or a number too large for a float (1e999): no time at all
    kept = {}
    if headers:
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        kept = {name: lowered[name] for name in KEPT_HEADERS if lowered.get(name)}
    return Event(
        event=event if isinstance(event, str) else "",
        payload=payload,
        source="webhook",
        received_at=received_at or now(),
        raw=body,
        headers=kept,
        hook=hook,
        timestamp=int(timestamp) if timestamp is not None else None,
    )


def match_secret(header_value: str | None, secrets: Iterable[str]) -> str | None:
    """Return the known secret equal to ``header_value`` (compared in constant time), else ``None``.

    Every secret is compared, so the time taken does not tell which one matched.
    """
    if not header_value:
        return None
    given = header_value.encode()
    found = None
    for secret in secrets:
        if hmac.compare_digest(given, secret.encode()) and found is None:
            found = secret
    return found


def verify_token(token: Any, secret: str, subscription_id: str | None) -> dict[str, Any]:
    """Check a delivery's ``token`` the way Tiledesk makes it and return its claims.

    Pins the algorithm (HS256), the audience (``https://tiledesk.com/subscriptions/<id>``), the
    issuer and the subject; requires the token's ``_id`` to be the delivery's subscription. Raises
    :class:`WebhookVerificationError` with a short reason.
    """
    return _token_claims(token, secret, subscription_id)


def _token_claims(token: Any, secret: str, subscription_id: str | None) -> dict[str, Any]:
    # verify_delivery's own flag is named verify_token: it calls this.
    if not isinstance(token, str) or not token:
        raise WebhookVerificationError("body has no 'token'")
    if not subscription_id:
        raise WebhookVerificationError(
            "body has no 'hook._id' to check the token's audience against"
        )
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[TOKEN_ALGORITHM],
            audience=subscription_audience(subscription_id),
            issuer=TOKEN_ISSUER,
            subject=SUBJECT_SUBSCRIPTION,
            options={"require": ["aud", "iss", "sub"]},
        )
    except jwt.InvalidTokenError as exc:
        raise WebhookVerificationError(f"token rejected: {_short(exc)}") from None
    if claims.get("_id") != subscription_id:
        raise WebhookVerificationError("token rejected: it was issued for another subscription")
    return claims


# -- making deliveries (for tests, fakes and stand-ins) --------------------------------------------
def sign_delivery(hook: Mapping[str, Any], secret: str, *, issued_at: int | None = None) -> str:
    """Return the ``token`` Tiledesk puts in a delivery for this subscription (``hook``).

    Claims are the hook's fields, then ``iat``, ``aud``, ``iss`` and ``sub``, in the server's order,
    so with the same ``issued_at`` the token is byte-identical to the real server's.
    """
    subscription_id = hook.get("_id")
    if not isinstance(subscription_id, str) or not subscription_id:
        raise InvalidInputError(
            "hook needs an '_id' (the subscription id): it is the token's audience"
        )
    claims = {
        **hook,
        "iat": int(time.time()) if issued_at is None else issued_at,
        "aud": subscription_audience(subscription_id),
        "iss": TOKEN_ISSUER,
        "sub": SUBJECT_SUBSCRIPTION,
    }
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


@dataclass(frozen=True)
class OutgoingDelivery:
    """A delivery ready to be POSTed: ``body`` (a dict) and ``headers``; send :meth:`data`.

    (Not to be confused with the sandbox's outbox rows, which it sends itself.)
    """

    body: dict[str, Any]
    headers: dict[str, str]

    def data(self) -> bytes:
        """The body as JSON bytes, as the server sends it."""
        return json.dumps(self.body, separators=(",", ":")).encode()

    def __repr__(self) -> str:
        event = self.body.get("hook", {}).get("event")
        return f"OutgoingDelivery(event={event!r}, headers=<hidden>)"


def make_hook(
    event: str = "message.create",
    *,
    target: str = "http://127.0.0.1/webhook",
    project_id: str | None = None,
    subscription_id: str | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """A subscription object as it appears in deliveries (no ``secret``, no ``global``)."""
    created = iso_now()
    return {
        "_id": subscription_id or new_object_id(),
        "target": target,
        "event": event,
        "id_project": project_id or new_object_id(),
        "createdBy": created_by or new_object_id(),
        "createdAt": created,
        "updatedAt": created,
        "__v": 0,
    }


def make_delivery(
    payload: Mapping[str, Any],
    secret: str,
    *,
    event: str = "message.create",
    hook: Mapping[str, Any] | None = None,
    timestamp: int | None = None,
    origin: str = "http://localhost:3000",
) -> OutgoingDelivery:
    """Build a delivery exactly in Tiledesk's format: body, ``token`` and headers.

    Pass the ``hook`` of a real subscription, or let one be made for ``event`` (with the payload's
    ``id_project``). Use it to test a receiver, or to feed a listener without a server.
    """
    if hook is None:
        hook = make_hook(event, project_id=payload.get("id_project"))
    hook = dict(hook)
    body = {
        "timestamp": int(time.time() * 1000) if timestamp is None else timestamp,
        "payload": dict(payload),
        "hook": hook,
        "token": sign_delivery(hook, secret),
    }
    return OutgoingDelivery(body=body, headers=webhook_headers(secret, origin))


def make_message_payload(
    text: str,
    *,
    role: SenderRole = "visitor",
    request_id: str | None = None,
    project_id: str | None = None,
    message_id: str | None = None,
    sender: str | None = None,
    sender_fullname: str | None = None,
) -> dict[str, Any]:
    """A ``message.create`` payload shaped like the real one (message + embedded request + lead).

    Names end with a space where the real server leaves one (``"Visitor Vic "``), so that code
    reading payloads meets what it will meet.
    """
    project_id = project_id or new_object_id()
    lead_id = new_uuid()
    request_id = request_id or new_request_id(project_id)
    if sender is None:
        sender = {
            "visitor": lead_id,
            "agent": new_object_id(),
            "bot": f"bot_{new_object_id()}",
        }.get(role, "system")
    names = {"visitor": "Visitor Vic ", "agent": "Ada Agent", "bot": "Bot", "system": "Bot"}
    created = iso_now()
    payload: dict[str, Any] = {
        "_id": message_id or new_object_id(),
        "type": "text",
        "text": text,
        "sender": sender,
        "senderFullname": sender_fullname if sender_fullname is not None else names[role],
        "recipient": request_id,
        "id_project": project_id,
        "status": 0,
        "channel_type": "group",
        "channel": {"name": "chat21"},
        "createdBy": sender,
        "createdAt": created,
        "updatedAt": created,
        "request": {
            "_id": new_object_id(),
            "request_id": request_id,
            "id_project": project_id,
            "status": 200,
            "lead": {"_id": new_object_id(), "lead_id": lead_id, "fullname": "Visitor Vic "},
        },
    }
    if role == "system":
        payload["attributes"] = {"subtype": "info/support"}
    return payload


# -- helpers ---------------------------------------------------------------------------------------
def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _short(exc: BaseException, limit: int = 120) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
