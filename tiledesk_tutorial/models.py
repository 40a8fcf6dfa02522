"""Light typed views of what Tiledesk sends back: users, projects, messages, requests, webhooks.

Each class keeps the handful of fields a learner looks at, with Python names, and the JSON exactly
as the server sent it in ``.raw``. ``from_json`` accepts missing fields (real servers differ by
version and deployment), so a field the server left out is ``None`` or empty, never an error.
Names such as ``"Visitor Vic "`` lose the trailing space Tiledesk adds when there is no last name;
``.raw`` keeps the original. Secrets (tokens, webhook secrets) are redacted in every ``repr``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from tiledesk_tutorial.redact import redact, redact_secrets
from tiledesk_tutorial.wire import (
    REQUEST_STATUS,
    STATUS_CLOSED,
    SUBJECT_GUEST,
    SenderRole,
    parse_time,
    request_status_name,
    sender_role,
    trim_name,
    unverified_claims,
    with_jwt_prefix,
)

__all__ = [
    "REQUEST_STATUS",
    "AuthResult",
    "DeliveryLog",
    "DownloadedFile",
    "Event",
    "Message",
    "Project",
    "ProjectMembership",
    "Request",
    "RequestPage",
    "ResentDelivery",
    "Subscription",
    "UploadedFile",
    "User",
    "parse_time",
    "request_status_name",
]


class _Model:
    """Shared ``repr``: the fields marked for it, times in ISO form, secret fields redacted."""

    _secret_fields: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self._secret_fields:
                parts.append(f"{f.name}={redact(value) if value else None!r}")
            elif f.repr and isinstance(value, datetime):
                parts.append(f"{f.name}={value.isoformat(timespec='milliseconds')}")
            elif f.repr:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _id(data: Mapping[str, Any]) -> str:
    return _str(data.get("_id") or data.get("id")) or ""


def _ref_id(value: Any) -> str | None:
    """An id that may come populated (an object with ``_id``) or bare (a string)."""
    if isinstance(value, dict):
        return _id(value) or None
    return _str(value)


@dataclass(frozen=True, repr=False)
class User(_Model):
    """A Tiledesk user: an agent account, or an anonymous visitor (whose id is a UUID)."""

    id: str
    email: str | None = None
    firstname: str | None = None
    lastname: str | None = None
    full_name: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> User:
        """Build from a ``user`` object of sign-up/sign-in answers."""
        d = _dict(data)
        first, last = trim_name(d.get("firstname")), trim_name(d.get("lastname"))
        full = trim_name(d.get("fullName")) or " ".join(p for p in (first, last) if p) or None
        return cls(
            id=_id(d),
            email=_str(d.get("email")),
            firstname=first,
            lastname=last,
            full_name=full,
            raw=dict(d),
        )


@dataclass(frozen=True, repr=False)
class AuthResult(_Model):
    """What a sign-in returns: the token (``"JWT <jwt>"``, redacted in ``repr``) and the user.

    Tiledesk tokens carry no expiry: keep them. ``claims`` shows what is inside (not verified).
    """

    _secret_fields: ClassVar[tuple[str, ...]] = ("token",)

    token: str
    user: User
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> AuthResult:
        """Build from a sign-in answer; the token is normalised to ``JWT <jwt>``."""
        d = _dict(data)
        token = _str(d.get("token")) or ""
        return cls(
            token=with_jwt_prefix(token) if token else "",
            user=User.from_json(_dict(d.get("user"))),
            raw=dict(d),
        )

    @property
    def claims(self) -> dict[str, Any]:
        """The JWT's claims, decoded **without** verifying the signature (for reading only)."""
        return unverified_claims(self.token)

    @property
    def redacted_token(self) -> str:
        """The token as it may be shown: ``JWT eyJh…(N chars)``."""
        return redact(self.token)

    @property
    def is_visitor(self) -> bool:
        """True for an anonymous visitor's token (claim ``sub`` is ``"guest"``)."""
        return self.claims.get("sub") == SUBJECT_GUEST


@dataclass(frozen=True, repr=False)
class Project(_Model):
    """A Tiledesk project: its ``id`` is the PROJECT_ID of the tutorial (24 hex characters)."""

    id: str
    name: str | None = None
    status: int | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Project:
        """Build from a project object (``POST /projects``, ``GET /projects/:id``)."""
        d = _dict(data)
        return cls(
            id=_id(d),
            name=_str(d.get("name")),
            status=_int(d.get("status")),
            created_by=_ref_id(d.get("createdBy")),
            created_at=parse_time(d.get("createdAt")),
            raw=dict(d),
        )


@dataclass(frozen=True, repr=False)
class ProjectMembership(_Model):
    """One entry of ``GET /projects``: your role in a project, with the project itself.

    ``role`` is a *membership* role (``owner``, ``admin``, ``agent``, ``guest``...): what you may
    do in the project. A message's ``role`` is who *sent* it (``wire.SenderRole``).
    """

    id: str
    project: Project
    role: str | None = None
    user_id: str | None = None
    status: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ProjectMembership:
        """Build from a ``project_user`` object whose ``id_project`` is populated (or bare)."""
        d = _dict(data)
        ref = d.get("id_project")
        project = Project.from_json(ref) if isinstance(ref, dict) else Project(id=_str(ref) or "")
        return cls(
            id=_id(d),
            project=project,
            role=_str(d.get("role")),
            user_id=_ref_id(d.get("id_user")) or _str(d.get("uuid_user")),
            status=_str(d.get("status")),
            raw=dict(d),
        )


@dataclass(frozen=True, repr=False)
class Request(_Model):
    """A Tiledesk request: one support conversation, named by its ``request_id``.

    ``id`` is the database id; the API's paths use ``request_id`` (``support-group-...``).
    """

    request_id: str
    status: int | None = None
    status_name: str | None = None
    first_text: str | None = None
    lead_name: str | None = None
    participants: list[str] = field(default_factory=list)
    ticket_id: int | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    id: str = ""
    lead_id: str | None = None
    project_id: str | None = None
    department: str | None = None
    closed_by: str | None = None
    updated_at: datetime | None = None
    rating: int | None = None
    rating_message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Request:
        """Build from a request object (listing, get, close, or embedded in a message)."""
        d = _dict(data)
        lead = _dict(d.get("lead"))
        status = _int(d.get("status"))
        participants = d.get("participants")
        return cls(
            id=_id(d),
            request_id=_str(d.get("request_id")) or "",
            status=status,
            status_name=request_status_name(status),
            first_text=_str(d.get("first_text")),
            lead_id=_str(lead.get("lead_id")),
            lead_name=trim_name(lead.get("fullname")),
            participants=[str(p) for p in participants] if isinstance(participants, list) else [],
            ticket_id=_int(d.get("ticket_id")),
            project_id=_ref_id(d.get("id_project")),
            department=trim_name(_dict(d.get("department")).get("name")),
            created_at=parse_time(d.get("createdAt")),
            updated_at=parse_time(d.get("updatedAt")),
            closed_at=parse_time(d.get("closed_at")),
            closed_by=_ref_id(d.get("closed_by")),
            rating=_int(d.get("rating")),
            rating_message=_str(d.get("rating_message")),
            raw=dict(d),
        )

    @property
    def is_closed(self) -> bool:
        """True once the conversation is closed (status 1000)."""
        return self.status == STATUS_CLOSED


@dataclass(frozen=True, repr=False)
class Message(_Model):
    """One message of a conversation.

    ``request_id`` is the conversation (Tiledesk calls it ``recipient``); ``role`` says who wrote
    it: ``"visitor"``, ``"agent"``, ``"bot"`` or ``"system"``. A message returned by
    :meth:`~tiledesk_tutorial.client.TiledeskClient.send_message` embeds its ``request``.
    """

    text: str | None
    sender_fullname: str | None = None
    role: SenderRole = "visitor"
    request_id: str | None = None
    created_at: datetime | None = None
    id: str = ""
    sender: str | None = None
    type: str | None = None
    status: int | None = None
    project_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict, repr=False)
    metadata: dict[str, Any] | None = field(default=None, repr=False)
    request: Request | None = field(default=None, repr=False, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Message:
        """Build from a message object (REST answer, listing, or a webhook ``payload``)."""
        d = _dict(data)
        request = d.get("request")
        metadata = d.get("metadata")
        return cls(
            id=_id(d),
            text=_str(d.get("text")),
            sender=_str(d.get("sender")),
            sender_fullname=trim_name(d.get("senderFullname")),
            role=sender_role(d),
            request_id=_str(d.get("recipient")),
            type=_str(d.get("type")),
            status=_int(d.get("status")),
            project_id=_ref_id(d.get("id_project")),
            created_at=parse_time(d.get("createdAt")),
            attributes=dict(_dict(d.get("attributes"))),
            metadata=dict(metadata) if isinstance(metadata, dict) else None,
            request=Request.from_json(request) if isinstance(request, dict) else None,
            raw=dict(d),
        )


@dataclass(frozen=True, repr=False)
class RequestPage(_Model):
    """One page of a request listing: ``count`` matching in all, ``per_page`` per page.

    Iterating a page, or taking its ``len``, walks its ``requests``.
    """

    requests: list[Request]
    count: int | None = None
    per_page: int | None = None
    page: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, page: int = 0) -> RequestPage:
        """Build from a ``{perPage, count, requests}`` answer."""
        d = _dict(data)
        items = d.get("requests")
        requests = [Request.from_json(r) for r in items] if isinstance(items, list) else []
        return cls(
            requests=requests,
            count=_int(d.get("count")),
            per_page=_int(d.get("perPage")),
            page=page,
            raw=dict(d),
        )

    @property
    def has_more(self) -> bool:
        """True when later pages hold more requests."""
        if self.count is None or not self.per_page:
            return len(self.requests) > 0 and len(self.requests) == self.per_page
        return (self.page + 1) * self.per_page < self.count

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    def __len__(self) -> int:
        return len(self.requests)


@dataclass(frozen=True, repr=False)
class Subscription(_Model):
    """A webhook subscription: Tiledesk POSTs each ``event`` to ``target``.

    ``secret`` is given only by :meth:`~tiledesk_tutorial.client.TiledeskClient.create_subscription`
    (never by listings): keep it to check the ``x-hook-secret`` header of each delivery.
    """

    _secret_fields: ClassVar[tuple[str, ...]] = ("secret",)

    id: str
    event: str | None = None
    target: str | None = None
    project_id: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None
    secret: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any] | None, secret_header: str | None = None
    ) -> Subscription:
        """Build from a subscription object; ``secret_header`` is the ``x-hook-secret`` header."""
        d = _dict(data)
        return cls(
            id=_id(d),
            event=_str(d.get("event")),
            target=_str(d.get("target")),
            project_id=_ref_id(d.get("id_project")),
            created_at=parse_time(d.get("createdAt")),
            created_by=_ref_id(d.get("createdBy")),
            secret=_str(d.get("secret")) or secret_header or None,
            raw=dict(d),
        )


@dataclass(frozen=True, repr=False)
class DeliveryLog(_Model):
    """One recorded webhook delivery (``GET /:project_id/subscriptions/history``).

    Tiledesk records deliveries only when the server runs with ``SUBSCRIPTION_LOG_ENABLED=true``;
    otherwise the history is empty. ``status_code`` is the target's answer, if there was one.
    """

    event: str | None
    target: str | None = None
    status_code: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    id: str = ""
    request_body: Any = field(default=None, repr=False)
    response_body: Any = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DeliveryLog:
        """Build from a SubscriptionLog entry; its JSON-in-a-string fields are decoded."""
        d = _dict(data)
        response = _maybe_json(d.get("response"))
        status_code = None
        if isinstance(response, dict):
            status_code = _int(response.get("statusCode") or response.get("status"))
        err = d.get("err")
        return cls(
            id=_id(d),
            event=_str(d.get("event")),
            target=_str(d.get("target")),
            status_code=status_code if status_code is not None else _int(d.get("status_code")),
            error=None if err in (None, "", {}) else (err if isinstance(err, str) else str(err)),
            created_at=parse_time(d.get("createdAt")),
            request_body=_maybe_json(d.get("jsonRequest")),
            response_body=_maybe_json(d.get("body")),
            raw=dict(d),
        )

    @property
    def ok(self) -> bool:
        """True when the target answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, repr=False)
class ResentDelivery(_Model):
    """A recorded delivery the sandbox has queued to send again (a sandbox extension:
    ``POST /:project_id/subscriptions/history/:id/resend``).

    ``resent`` is the history entry it repeats; the new attempt shows in the history once made.
    """

    resent: str
    event: str | None = None
    target: str | None = None
    subscription_id: str | None = None
    outcome: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ResentDelivery:
        """Build from the resend route's answer."""
        d = _dict(data)
        return cls(
            resent=_str(d.get("resent")) or "",
            event=_str(d.get("event")),
            target=_str(d.get("target")),
            subscription_id=_str(d.get("id_subscription")),
            outcome=_str(d.get("outcome")),
            raw=dict(d),
        )


@dataclass(frozen=True, repr=False)
class UploadedFile(_Model):
    """A chat file stored by ``POST /:project_id/files/chat``.

    ``filename`` is the server's path of the file (``uploads/users/<id>/files/<uuid>/<name>``):
    give it to :meth:`~tiledesk_tutorial.client.TiledeskClient.download_file`, and ``src`` (its
    download URL) to an ``image`` or ``file`` message.
    """

    filename: str
    name: str
    content_type: str
    size: int
    src: str
    message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, repr=False)
class DownloadedFile(_Model):
    """A file read back with ``GET /:project_id/files?path=<filename>``."""

    filename: str
    content_type: str | None
    content: bytes = field(repr=False)

    @property
    def size(self) -> int:
        """The number of bytes."""
        return len(self.content)


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


EventSourceKind = Literal["webhook", "realtime"]
#: The event names: a webhook's ``hook.event``; the realtime feed names its frames the same way.
MESSAGE_CREATE = "message.create"
REQUEST_CREATE = "request.create"
REQUEST_UPDATE = "request.update"
REQUEST_CLOSE = "request.close"


@dataclass(frozen=True, eq=False, repr=False)
class Event:
    """One thing that happened in a project, received live: a new message, or a conversation that
    was created, changed or closed.

    The same class whichever way it came, by webhook (the listener: Tiledesk posts to you) or by
    the Realtime API (the feed: you subscribe), so that a view or a callback works with either.

    Attributes:
        event: ``"message.create"``, ``"request.create"``, ``"request.update"`` or
            ``"request.close"`` (a webhook's ``hook.event``; the feed names frames the same way).
        payload: the message or request object exactly as the server sent it.
        source: ``"webhook"`` or ``"realtime"``.
        received_at: when this process received it (UTC).
        raw: everything that came: the delivery's whole body, or the whole realtime frame.
        headers: the delivery headers worth keeping (never the secret); ``{}`` for realtime.
        hook: the delivering subscription (``hook`` of a webhook body); ``{}`` for realtime.
        timestamp: the webhook's send time (epoch ms), or ``None``.
        topic: the realtime topic the frame came on, or ``None``.
    """

    event: str
    payload: dict[str, Any]
    source: EventSourceKind = "webhook"
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    raw: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    hook: dict[str, Any] = field(default_factory=dict)
    timestamp: int | None = None
    topic: str | None = None

    @property
    def is_message(self) -> bool:
        """True for ``message.create`` events (including the channel-specific variants)."""
        return self.event == MESSAGE_CREATE or self.event.startswith(MESSAGE_CREATE + ".")

    @property
    def message(self) -> Message | None:
        """The message, for message events (``None`` for request events)."""
        return Message.from_json(self.payload) if self.is_message else None

    @property
    def request(self) -> Request | None:
        """The conversation: the payload for request events, the embedded ``request`` for
        messages (``None`` when the message carries none)."""
        if not self.is_message:
            return Request.from_json(self.payload)
        embedded = self.payload.get("request")
        return Request.from_json(embedded) if isinstance(embedded, dict) else None

    @property
    def text(self) -> str | None:
        """The payload's ``text``: the message text (``None`` when there is none, as in request
        events and in some messages)."""
        value = self.payload.get("text")
        return value if isinstance(value, str) else None

    @property
    def sender(self) -> str | None:
        """The sender's id: a visitor's UUID, an agent's ObjectId, ``bot_...`` or ``system``."""
        value = self.payload.get("sender")
        return value if isinstance(value, str) else None

    @property
    def sender_fullname(self) -> str | None:
        """The sender's display name, trimmed (Tiledesk stores ``"John "`` for a visitor with no
        last name; ``payload`` keeps it as sent)."""
        value = self.payload.get("senderFullname")
        return trim_name(value) if isinstance(value, str) else None

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
        value = _ref_id(self.payload.get("id_project")) or self.hook.get("id_project")
        return value if isinstance(value, str) else None

    @property
    def lead_name(self) -> str | None:
        """The visitor's name (the request's lead), trimmed, when the event carries it."""
        request = self.payload.get("request") if self.is_message else self.payload
        lead = request.get("lead") if isinstance(request, dict) else None
        return trim_name(lead.get("fullname")) if isinstance(lead, dict) else None

    @property
    def status(self) -> int | None:
        """The request's status for request events (``1000`` once closed), else ``None``."""
        return None if self.is_message else _int(self.payload.get("status"))

    @property
    def subscription_id(self) -> str | None:
        """The id of the subscription that delivered this event (``hook._id``), for webhooks."""
        value = self.hook.get("_id")
        return value if isinstance(value, str) else None

    @property
    def created_at(self) -> datetime | None:
        """``payload.createdAt`` as an aware datetime, or ``None`` if absent or unreadable."""
        return parse_time(self.payload.get("createdAt"))

    @property
    def updated_at(self) -> datetime | None:
        """``payload.updatedAt`` as an aware datetime, or ``None``."""
        return parse_time(self.payload.get("updatedAt"))

    @property
    def sent_at(self) -> datetime | None:
        """The webhook's ``timestamp`` as an aware UTC datetime, or ``None``."""
        return parse_time(self.timestamp) if self.timestamp is not None else None

    @property
    def dedupe_key(self) -> tuple[Any, ...] | None:
        """What makes two arrivals the same event, so that a repeat is kept once.

        A message is created once, so every ``message.create`` for one message ``_id`` is a repeat
        (a retried delivery, the same message through two subscriptions, or again in the snapshot
        a realtime feed gets when it re-subscribes): the key is ``(event, _id)``, whatever the
        source. Request events are different: one request legitimately changes several times and
        may be closed twice with the request unchanged, all with the same ``_id``. A retried
        delivery repeats the whole body, ``timestamp`` included; so the key for other events is
        ``(event, _id, timestamp, updatedAt)``. Without an ``_id`` there is no key and every arrival
        is kept.
        """
        payload_id = self.payload.get("_id")
        if not isinstance(payload_id, str | int) or isinstance(payload_id, bool):
            return None
        if self.is_message:
            return (MESSAGE_CREATE, payload_id)
        return (self.event, payload_id, self.timestamp, _hashable(self.payload.get("updatedAt")))

    def redacted_raw(self) -> dict[str, Any]:
        """Everything that came, to show: a webhook's whole body (``timestamp``, ``payload``,
        ``hook``, ``token``) or the whole realtime frame, with every secret hidden (the token
        shortened, as :func:`~tiledesk_tutorial.redact.redact` shows any secret)."""
        shown = redact_secrets(self.raw)
        return shown if isinstance(shown, dict) else {}

    def summary(self) -> str:
        """One line for a log or a notebook: event, role, sender and text."""
        if self.is_message:
            who = self.sender_fullname or self.sender or "?"
            text = self.text if self.text is not None else "<no text>"
            return f"{self.event} [{self.role}] {who}: {text}"
        return f"{self.event} {self.request_id or self.message_id or ''}".rstrip()

    def __repr__(self) -> str:
        received = self.received_at.strftime("%H:%M:%S.%f")[:-3]
        if self.is_message:
            text = self.text if self.text is None or len(self.text) <= 60 else self.text[:59] + "…"
            who = self.sender_fullname or self.sender or "?"
            return (
                f"<Event {self.event} {self.role} {who!r}: {text!r} request={self.request_id} "
                f"via {self.source} received={received}>"
            )
        return (
            f"<Event {self.event} {self.request_id or self.message_id} via {self.source} "
            f"received={received}>"
        )


def _hashable(value: Any) -> Any:
    """``value`` if it can be part of a dict key, else its JSON text (a list, an object)."""
    if value is None or isinstance(value, str | int | float):
        return value
    return json.dumps(value, sort_keys=True, default=str)
