"""Tiledesk webhook deliveries: parse them into events, verify them, and make valid ones for tests.

A delivery is what Tiledesk POSTs to a subscription's ``target`` (contract §5.4)::

    headers: Content-Type: application/json, x-hook-secret: <subscription secret>,
             User-Agent: tiledesk-webhooks, Origin: <server origin>
    body:    {"timestamp": <epoch ms>, "payload": {...}, "hook": {<subscription, no secret>},
              "token": "<HS256 JWT over the hook, signed with the secret>"}

What Tiledesk signs, and what it does not:

- ``x-hook-secret`` is the subscription secret itself, sent in clear on every delivery. Comparing it
  (in constant time) proves the sender knows the secret; it says nothing about the body.
- ``token`` is a JWT whose claims are the *subscription* (``hook``), with audience
  ``https://tiledesk.com/subscriptions/<id>``, issuer ``https://tiledesk.com``, subject
  ``subscription`` and no expiry. It proves the sender knows the secret, and that the delivery is
  for that subscription.
- Nothing covers the ``payload`` or the ``timestamp``: there is no body signature or HMAC. Anyone
  who has seen one delivery (the secret and the token never change) can send any payload. Serve
  the listener over HTTPS (a tunnel does that), keep the secret out of logs, and treat payloads as
  claims.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from tiledesk_tutorial.wire import SenderRole, sender_role

logger = logging.getLogger("tiledesk_tutorial.webhooks")

SECRET_HEADER = "x-hook-secret"  # noqa: S105 (a header name)
TOKEN_ISSUER = "https://tiledesk.com"  # noqa: S105
TOKEN_SUBJECT = "subscription"  # noqa: S105
USER_AGENT = "tiledesk-webhooks"

# Headers worth keeping with an event (never the secret).
KEPT_HEADERS = ("user-agent", "origin", "content-type")


class InvalidDelivery(ValueError):
    """A request body that is not a Tiledesk webhook delivery; ``reason`` says what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSignature(ValueError):
    """A delivery whose ``x-hook-secret`` or ``token`` matches no known subscription secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def subscription_audience(subscription_id: str) -> str:
    """The ``aud`` claim Tiledesk puts in a delivery token for this subscription."""
    return f"https://tiledesk.com/subscriptions/{subscription_id}"


@dataclass(frozen=True, eq=False, repr=False)
class WebhookEvent:
    """One webhook delivery, parsed.

    ``event`` is the subscription's event name (``hook.event``, e.g. ``"message.create"``),
    ``payload`` the event data (for messages: the message with its request embedded),
    ``timestamp`` the server's epoch-millisecond send time (or ``None``), ``received_at`` when this
    process received it (UTC), ``raw`` the whole body as sent. The properties below read the fields
    a tutorial needs most.
    """

    event: str
    hook: dict[str, Any]
    payload: dict[str, Any]
    timestamp: int | None
    received_at: datetime
    raw: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        received = self.received_at.strftime("%H:%M:%S.%f")[:-3]
        if self.is_message:
            text = self.text if self.text is None or len(self.text) <= 60 else self.text[:59] + "…"
            who = (self.sender_fullname or self.sender or "?").strip()
            return (
                f"<WebhookEvent {self.event} {self.role} {who!r}: {text!r} "
                f"request={self.request_id} received={received}>"
            )
        return (
            f"<WebhookEvent {self.event} {self.request_id or self.message_id} received={received}>"
        )

    # -- what a message event says ------------------------------------------------------------
    @property
    def is_message(self) -> bool:
        """True for ``message.create`` events (including the channel-specific variants)."""
        return self.event == "message.create" or self.event.startswith("message.create.")

    @property
    def text(self) -> str | None:
        """The message text (``None`` when the message has no ``text`` field, which happens)."""
        value = self.payload.get("text")
        return value if isinstance(value, str) else None

    @property
    def sender(self) -> str | None:
        """The sender's id: a visitor's UUID, an agent's ObjectId, ``bot_...`` or ``system``."""
        value = self.payload.get("sender")
        return value if isinstance(value, str) else None

    @property
    def sender_fullname(self) -> str | None:
        """The sender's display name, as Tiledesk stored it (it may end with a space)."""
        value = self.payload.get("senderFullname")
        return value if isinstance(value, str) else None

    @property
    def role(self) -> SenderRole | None:
        """Who sent a message: ``visitor``, ``agent``, ``bot`` or ``system`` (else ``None``)."""
        return sender_role(self.payload) if self.is_message else None

    @property
    def request_id(self) -> str | None:
        """The conversation id: ``recipient`` for messages, ``request_id`` for request events."""
        for key in ("recipient", "request_id") if self.is_message else ("request_id",):
            value = self.payload.get(key)
            if isinstance(value, str):
                return value
        request = self.payload.get("request")
        if isinstance(request, dict) and isinstance(request.get("request_id"), str):
            return request["request_id"]
        return None

    @property
    def message_id(self) -> str | None:
        """The payload's ``_id`` (the message id for messages, the request's for request events)."""
        value = self.payload.get("_id")
        return value if isinstance(value, str) else None

    @property
    def project_id(self) -> str | None:
        """The project the event belongs to (``payload.id_project``, else ``hook.id_project``)."""
        value = self.payload.get("id_project") or self.hook.get("id_project")
        return value if isinstance(value, str) else None

    @property
    def subscription_id(self) -> str | None:
        """The id of the subscription that delivered this event (``hook._id``)."""
        value = self.hook.get("_id")
        return value if isinstance(value, str) else None

    @property
    def created_at(self) -> datetime | None:
        """``payload.createdAt`` as an aware datetime, or ``None`` if absent or unreadable."""
        return _parse_iso(self.payload.get("createdAt"))

    @property
    def sent_at(self) -> datetime | None:
        """``timestamp`` as an aware UTC datetime, or ``None`` (also when it is no real time)."""
        if self.timestamp is None:
            return None
        try:
            return datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)
        except (OverflowError, ValueError, OSError):  # beyond the year 9999, or the platform's
            return None

    # -- retries ------------------------------------------------------------------------------
    @property
    def dedupe_key(self) -> tuple[Any, ...] | None:
        """What makes two deliveries the same event, so that a retried delivery is kept once.

        A message is created once, so every ``message.create`` delivery for one message ``_id`` is a
        repeat (a retry, or the same message reaching us through two subscriptions): the key is
        ``(event, _id)``. Request events are different: one request legitimately produces several
        ``request.update`` deliveries and may be closed twice (a re-close re-sends ``request.close``
        with the request unchanged), all with the same ``_id``. What a true retry shares with the
        original is the whole body, sent again as is, including ``timestamp``; so the key for other
        events is ``(event, _id, timestamp, updatedAt)``. Without an ``_id`` there is no key and
        every delivery is kept.
        """
        payload_id = self.payload.get("_id")
        if not isinstance(payload_id, str | int) or isinstance(payload_id, bool):
            return None
        if self.is_message:
            return (self.event, payload_id)
        return (self.event, payload_id, self.timestamp, _hashable(self.payload.get("updatedAt")))

    # -- storage ------------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of a JSON Lines store): the body plus when it came in."""
        return {
            "received_at": self.received_at.isoformat(),
            "headers": dict(self.headers),
            "body": self.raw,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> WebhookEvent:
        """Rebuild an event from :meth:`to_record` output."""
        received_at = _parse_iso(record.get("received_at")) or datetime.now(UTC)
        headers = record.get("headers") if isinstance(record.get("headers"), dict) else {}
        return parse_delivery(record.get("body"), headers=headers, received_at=received_at)

    def summary(self) -> str:
        """One line for a log or a notebook: event, role, sender and text."""
        if self.is_message:
            who = self.sender_fullname or self.sender or "?"
            text = self.text if self.text is not None else "<no text>"
            return f"{self.event} [{self.role}] {who.strip()}: {text}"
        return f"{self.event} {self.request_id or self.message_id or ''}".rstrip()


def parse_delivery(
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    received_at: datetime | None = None,
) -> WebhookEvent:
    """Turn a delivery body (bytes, str or an already-decoded dict) into a :class:`WebhookEvent`.

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
    return WebhookEvent(
        event=event if isinstance(event, str) else "",
        hook=hook,
        payload=payload,
        timestamp=int(timestamp) if timestamp is not None else None,
        received_at=received_at or datetime.now(UTC),
        raw=body,
        headers=kept,
    )


# -- verification ------------------------------------------------------------------------------
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
    :class:`InvalidSignature` with a short reason.
    """
    if not isinstance(token, str) or not token:
        raise InvalidSignature("body has no 'token'")
    if not subscription_id:
        raise InvalidSignature("body has no 'hook._id' to check the token's audience against")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=subscription_audience(subscription_id),
            issuer=TOKEN_ISSUER,
            subject=TOKEN_SUBJECT,
            options={"require": ["aud", "iss", "sub"]},
        )
    except jwt.InvalidTokenError as exc:
        raise InvalidSignature(f"token rejected: {_short(exc)}") from None
    if claims.get("_id") != subscription_id:
        raise InvalidSignature("token rejected: it was issued for another subscription")
    return claims


# -- making deliveries (for tests, fakes and stand-ins) ----------------------------------------
def sign_delivery(hook: Mapping[str, Any], secret: str, *, issued_at: int | None = None) -> str:
    """Return the ``token`` Tiledesk puts in a delivery for this subscription (``hook``).

    Claims are the hook's fields, then ``iat``, ``aud``, ``iss`` and ``sub``, in the server's order,
    so with the same ``issued_at`` the token is byte-identical to the real server's.
    """
    subscription_id = hook.get("_id")
    if not isinstance(subscription_id, str) or not subscription_id:
        raise ValueError("hook needs an '_id' (the subscription id): it is the token's audience")
    claims = {
        **hook,
        "iat": int(time.time()) if issued_at is None else issued_at,
        "aud": subscription_audience(subscription_id),
        "iss": TOKEN_ISSUER,
        "sub": TOKEN_SUBJECT,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class Delivery:
    """A ready-to-send webhook delivery: ``body`` (a dict) and ``headers``; POST :meth:`data`."""

    body: dict[str, Any]
    headers: dict[str, str]

    def data(self) -> bytes:
        """The body as JSON bytes, as the server sends it."""
        return json.dumps(self.body, separators=(",", ":")).encode()

    def __repr__(self) -> str:
        return f"Delivery(event={self.body.get('hook', {}).get('event')!r}, headers=<hidden>)"


def make_hook(
    event: str = "message.create",
    *,
    target: str = "http://127.0.0.1/webhook",
    project_id: str | None = None,
    subscription_id: str | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """A subscription object as it appears in deliveries (no ``secret``, no ``global``)."""
    now = _iso_now()
    return {
        "_id": subscription_id or _object_id(),
        "target": target,
        "event": event,
        "id_project": project_id or _object_id(),
        "createdBy": created_by or _object_id(),
        "createdAt": now,
        "updatedAt": now,
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
) -> Delivery:
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
    headers = {
        "Content-Type": "application/json",
        SECRET_HEADER: secret,
        "User-Agent": USER_AGENT,
        "Origin": origin,
        "accept": "application/json",
    }
    return Delivery(body=body, headers=headers)


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
    """A ``message.create`` payload shaped like the real one (message + embedded request + lead)."""
    project_id = project_id or _object_id()
    lead_id = str(uuid.uuid4())
    request_id = request_id or f"support-group-{project_id}-{uuid.uuid4().hex}"
    if sender is None:
        sender = {"visitor": lead_id, "agent": _object_id(), "bot": f"bot_{_object_id()}"}.get(
            role, "system"
        )
    names = {"visitor": "Visitor Vic ", "agent": "Ada Agent", "bot": "Bot", "system": "Bot"}
    now = _iso_now()
    payload: dict[str, Any] = {
        "_id": message_id or _object_id(),
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
        "createdAt": now,
        "updatedAt": now,
        "request": {
            "_id": _object_id(),
            "request_id": request_id,
            "id_project": project_id,
            "status": 200,
            "lead": {"_id": _object_id(), "lead_id": lead_id, "fullname": "Visitor Vic "},
        },
    }
    if role == "system":
        payload["attributes"] = {"subtype": "info/support"}
    return payload


# -- JSON Lines ----------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[WebhookEvent]:
    """Read back the events a listener appended to a JSON Lines file (``store_file``).

    Lines that cannot be read (a line cut short when the machine stopped mid-write) are skipped and
    counted in one warning; a missing file gives an empty list.
    """
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[WebhookEvent]:
    """Like :func:`read_jsonl`, one event at a time."""
    path = Path(path)
    if not path.exists():
        return
    bad: list[int] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield WebhookEvent.from_record(json.loads(line))
            except (ValueError, AttributeError):
                bad.append(number)
    if bad:
        logger.warning("%s: skipped %d unreadable line(s): %s", path, len(bad), bad[:10])


# -- helpers ---------------------------------------------------------------------------------------
def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _hashable(value: Any) -> Any:
    """``value`` if it can be part of a dict key, else its JSON text (a list, an object)."""
    if value is None or isinstance(value, str | int | float):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _object_id() -> str:
    """A fresh 24-hex id shaped like a MongoDB ObjectId (time prefix + random)."""
    return f"{int(time.time()):08x}{uuid.uuid4().hex[:16]}"


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
