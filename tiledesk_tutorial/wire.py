"""Tiledesk's wire format: the facts the client, the listener, the feed and the sandbox all share.

One home for each of them, so that the half of the package that speaks to Tiledesk and the half that
answers like it (the sandbox) cannot drift apart: ids, times, tokens and their claims, webhook
headers, request statuses, who sent a message, ``Retry-After``, and the Realtime API's topics and
frames. What each means on the real server is written in ``docs/wire-format.md``.

This module depends on nothing else in the package.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import jwt

# --- ids ------------------------------------------------------------------------------------------

OBJECT_ID_RE = re.compile(r"^[0-9a-fA-F]{24}$")
_PROCESS_RANDOM = os.urandom(5)
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_counter_lock = threading.Lock()


def is_object_id(value: object) -> bool:
    """True when ``value`` is a MongoDB ObjectId: a string of exactly 24 hexadecimal characters.

    Tiledesk's projects, users (agents), requests' database ids, messages and subscriptions have
    such ids; anonymous visitors have UUIDs instead.
    """
    return isinstance(value, str) and bool(OBJECT_ID_RE.match(value))


def new_object_id() -> str:
    """A new ObjectId as MongoDB makes them: 4 bytes of time, 5 random bytes, a 3-byte counter."""
    with _counter_lock:
        count = next(_counter) & 0xFFFFFF
    return (int(time.time()).to_bytes(4, "big") + _PROCESS_RANDOM + count.to_bytes(3, "big")).hex()


def new_uuid() -> str:
    """A random UUIDv4 with dashes, as Tiledesk uses for anonymous visitors."""
    return str(uuid.uuid4())


def new_request_id(project_id: str) -> str:
    """A conversation id in the format of Tiledesk's widget: ``support-group-<project>-<32 hex>``.

    The project id is not checked here (the client checks what learners pass it).
    """
    return f"support-group-{project_id}-{uuid.uuid4().hex}"


# --- times ----------------------------------------------------------------------------------------


def now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """A time as the server writes it: ``2026-11-25T07:39:56.340Z`` (UTC, milliseconds)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def iso_now() -> str:
    """The current time as the server writes it."""
    return iso(now())


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as in a webhook delivery's ``timestamp``."""
    return int(moment.timestamp() * 1000)


def parse_time(value: Any) -> datetime | None:
    """Read a Tiledesk time: ISO 8601 (``...T07:39:56.340Z``, with or without offset) or epoch ms.

    Returns an aware UTC ``datetime``, or ``None`` when the value is missing or is no time at all
    (so a malformed field from some server version never raises).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


# --- names ----------------------------------------------------------------------------------------


def trim_name(value: Any) -> str | None:
    """A person's name as shown: without the trailing space Tiledesk leaves when there is no last
    name (``"John "`` -> ``"John"``). ``None`` stays ``None``; an empty name becomes ``None``."""
    if value is None:
        return None
    text = (value if isinstance(value, str) else str(value)).strip()
    return text or None


# --- tokens ---------------------------------------------------------------------------------------

#: The scheme Tiledesk wants in ``Authorization`` (not ``Bearer``), and that sign-in returns.
JWT_PREFIX = "JWT "
TOKEN_ALGORITHM = "HS256"  # noqa: S105 (an algorithm name)
TOKEN_ISSUER = "https://tiledesk.com"  # noqa: S105 (a URL, not a secret)
#: The audience of sign-in tokens (agents and visitors).
TOKEN_AUDIENCE = "https://tiledesk.com"  # noqa: S105
#: The audience of a webhook delivery's token is this prefix and the subscription id.
SUBSCRIPTION_AUDIENCE_PREFIX = "https://tiledesk.com/subscriptions/"
#: The ``sub`` claim: an agent's sign-in, a visitor's anonymous sign-in, a delivery's token.
SUBJECT_USER = "user"
SUBJECT_GUEST = "guest"
SUBJECT_SUBSCRIPTION = "subscription"


def bare_token(token: str) -> str:
    """The JWT alone: a leading ``JWT `` (any case) and surrounding spaces removed."""
    value = token.strip()
    if value[:4].lower() == JWT_PREFIX.lower():
        value = value[4:].strip()
    return value


def with_jwt_prefix(token: str) -> str:
    """A token as ``Authorization`` carries it: ``JWT <jwt>`` (from a bare or prefixed token)."""
    return JWT_PREFIX + bare_token(token)


def unverified_claims(token: str) -> dict[str, Any]:
    """A token's claims read **without** checking its signature (to show them, or to choose the
    key that verifies it); ``{}`` when it is no JWT."""
    try:
        claims = jwt.decode(bare_token(token), options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def subscription_audience(subscription_id: str) -> str:
    """The ``aud`` claim of the delivery tokens of this subscription."""
    return SUBSCRIPTION_AUDIENCE_PREFIX + subscription_id


# --- webhooks -------------------------------------------------------------------------------------

#: The header that carries the subscription's secret, in clear, on every delivery.
SECRET_HEADER = "x-hook-secret"  # noqa: S105 (a header name)
#: The ``User-Agent`` of Tiledesk's webhook sender.
WEBHOOK_USER_AGENT = "tiledesk-webhooks"
#: The events the tutorial subscribes to (the real server knows more).
WEBHOOK_EVENTS = ("message.create", "request.create", "request.update", "request.close")


def webhook_headers(secret: str, origin: str) -> dict[str, str]:
    """The headers of a delivery, in the real server's order (transcript 15)."""
    return {
        "Content-Type": "application/json",
        SECRET_HEADER: secret,
        "User-Agent": WEBHOOK_USER_AGENT,
        "Origin": origin,
        "accept": "application/json",
    }


def retry_after_seconds(headers: Mapping[str, str] | Any) -> float | None:
    """``Retry-After`` in seconds (a number of seconds, or an HTTP date), or ``None``.

    ``headers`` is any mapping with ``.get`` (case-insensitive ones are looked up as given; plain
    dicts are also tried in lower case).
    """
    if headers is None:
        return None
    value = headers.get("Retry-After")
    if value is None:
        value = headers.get("retry-after")
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now()).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


# --- requests (conversations) ---------------------------------------------------------------------

#: Request statuses of Tiledesk 2.x.
REQUEST_STATUS: dict[int, str] = {
    50: "TEMP",
    100: "UNASSIGNED",
    150: "ABANDONED",
    200: "ASSIGNED",
    300: "SERVED",
    1000: "CLOSED",
}
STATUS_UNASSIGNED = 100
STATUS_ASSIGNED = 200
STATUS_CLOSED = 1000


def request_status_name(status: int | None) -> str | None:
    """The name of a request status (``200`` -> ``"ASSIGNED"``), or ``None`` if unknown."""
    return REQUEST_STATUS.get(status) if isinstance(status, int) else None


def is_open_status(status: Any) -> bool:
    """Whether a request with this status is open, as the Realtime API's snapshot counts it:
    above TEMP, below CLOSED, and not ABANDONED."""
    return isinstance(status, int) and 50 < status < STATUS_CLOSED and status != 150


# --- who sent a message ---------------------------------------------------------------------------

SenderRole = Literal["visitor", "agent", "bot", "system"]


def sender_role(message: Mapping[str, Any]) -> SenderRole:
    """Classify a Tiledesk message (REST, webhook ``payload`` or realtime frame) by its sender.

    The real server's rules: system and info messages come from ``system`` or carry an
    ``attributes.subtype`` starting with ``info``; bots have ``bot_`` ids; the visitor is the
    request's lead (``sender == request.lead.lead_id``); anyone else is an agent. Without an
    embedded request, a sender id that is an ObjectId is an agent and anything else (a UUID) a
    visitor.
    """
    sender = str(message.get("sender") or "")
    attributes = message.get("attributes")
    subtype = attributes.get("subtype") if isinstance(attributes, dict) else None
    if sender == "system" or (isinstance(subtype, str) and subtype.startswith("info")):
        return "system"
    if sender.startswith("bot_"):
        return "bot"
    request = message.get("request")
    if isinstance(request, dict):
        lead = request.get("lead")
        lead_id = lead.get("lead_id") if isinstance(lead, dict) else None
        if lead_id is not None:
            return "visitor" if sender == lead_id else "agent"
    return "agent" if is_object_id(sender) else "visitor"


# --- the Realtime API (WebSocket) -----------------------------------------------------------------

RealtimeMethod = Literal["CREATE", "UPDATE"]
#: The text of heartbeat frames: the client sends ``ping``, the server answers ``pong`` (and the
#: server sends its own ``ping`` every 30 s).
HEARTBEAT_PING = "ping"
HEARTBEAT_PONG = "pong"
#: How often the real server pings, in seconds; a client silent for a whole period is dropped.
SERVER_PING_INTERVAL = 30.0
#: Snapshot limits of the real server: open requests on ``/<pid>/requests``, messages on
#: ``/<pid>/requests/<rid>/messages``.
SNAPSHOT_REQUESTS_LIMIT = 100
SNAPSHOT_MESSAGES_LIMIT = 300


def topic_requests(project_id: str) -> str:
    """The topic of every request of a project: ``/<project_id>/requests``."""
    return f"/{project_id}/requests"


def topic_request(project_id: str, request_id: str) -> str:
    """The topic of one request: ``/<project_id>/requests/<request_id>``."""
    return f"/{project_id}/requests/{request_id}"


def topic_messages(project_id: str, request_id: str) -> str:
    """The topic of one request's messages: ``/<project_id>/requests/<request_id>/messages``."""
    return f"/{project_id}/requests/{request_id}/messages"


@dataclass(frozen=True)
class Topic:
    """A parsed realtime topic: ``kind`` is ``"requests"``, ``"request"`` or ``"messages"``."""

    kind: Literal["requests", "request", "messages"]
    project_id: str
    request_id: str | None = None

    def __str__(self) -> str:
        if self.kind == "requests":
            return topic_requests(self.project_id)
        assert self.request_id is not None
        if self.kind == "request":
            return topic_request(self.project_id, self.request_id)
        return topic_messages(self.project_id, self.request_id)


_TOPIC_RE = re.compile(r"^/([0-9a-fA-F]{24})/requests(?:/([^/\s]+)(/messages)?)?$")


def parse_topic(topic: Any) -> Topic | None:
    """Read one of the three request topics; ``None`` for anything else (other topics exist on
    the real server, outside the tutorial's subset)."""
    if not isinstance(topic, str):
        return None
    match = _TOPIC_RE.match(topic)
    if not match:
        return None
    project_id, request_id, messages = match.groups()
    if request_id is None:
        return Topic("requests", project_id)
    return Topic("messages" if messages else "request", project_id, request_id)


def frame(action: str, payload: Any = None) -> str:
    """A realtime frame as the server writes it: compact JSON, ``action`` then ``payload``."""
    body: dict[str, Any] = {"action": action}
    if payload is not None:
        body["payload"] = payload
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def frame_subscribe(topic: str) -> str:
    """The client's frame that subscribes to ``topic``."""
    return frame("subscribe", {"topic": topic})


def frame_unsubscribe(topic: str) -> str:
    """The client's frame that unsubscribes from ``topic``."""
    return frame("unsubscribe", {"topic": topic})


def frame_heartbeat(text: str = HEARTBEAT_PING) -> str:
    """A heartbeat frame (``ping`` from either side, ``pong`` in answer)."""
    return frame("heartbeat", {"message": {"text": text}})


def frame_publish(topic: str, method: RealtimeMethod, message: Any) -> str:
    """The server's frame carrying ``message`` (an object, or an array for a snapshot)."""
    return frame("publish", {"topic": topic, "method": method, "message": message})


# ----------------------------------------------------------------------------- rich messages

#: The message types a conversation carries (the real server accepts any string).
MESSAGE_TYPES = ("text", "image", "file")
#: Chat uploads: ``POST /:pid/files/chat`` (multipart, field ``file``), read back with
#: ``GET /:pid/files?path=<filename>``.
UPLOAD_FIELD = "file"
#: The real server's allow-list of chat upload extensions, and the media type each is served as.
UPLOAD_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".pdf": "application/pdf",
    ".txt": "text/plain",
}
#: The real server's default upload limit (1 MB).
UPLOAD_LIMIT = 1024 * 1024
#: The rating a visitor gives a conversation: ``PATCH /:pid/requests/:rid/rating``.
RATING_MIN = 1
RATING_MAX = 5
