"""Room mode: one sandbox for a workshop, and a page where the presenter sees every learner.

``tiledesk-sandbox --room`` serves the whole room from the presenter's laptop. Beside the API it
serves a **room view** at ``/room``: one row per learner (their account, their project, its
conversations and messages, whether their realtime feed is connected, and each webhook
subscription's delivery health: last answer, failing since when, next retry). The page follows the
room live over a presenter-only topic of the sandbox's Realtime API (a WebSocket at
``/room/live``, speaking the Realtime API's frames: a ``CREATE`` with the whole room on
subscribing, then an ``UPDATE`` with the whole room whenever it changed).

Who may look: whoever holds the **presenter token**, random for each start and printed once, in
the ``Room view:`` line. The page and its socket answer ``401`` without it. The token may come in
the query string (``?token=``) or in the cookie the page sets on its first load, so that the page
can take the token out of its address bar (it is projected on a wall) and still survive a reload.
The socket also checks the ``Origin``: another site open in the presenter's browser cannot read
the room. The room view shows no secret (no token, no webhook secret, no password) and no message
text: a presenter needs to know that a learner sent messages, not what they wrote.

Everything here runs on the sandbox's event loop. Counts of conversations and messages come from
the changes the sandbox publishes (read from the database once, at start: an update never scans
the messages or the conversations); delivery health from the attempts the delivery worker records
(and, at start, from the delivery history). ``make bench`` measures an update for 100 learners
(``room_snapshot_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tiledesk_tutorial.redact import redact, redact_jwts
from tiledesk_tutorial.sandbox.asgi import Request, Response, text_response
from tiledesk_tutorial.sandbox.changes import Changes
from tiledesk_tutorial.sandbox.console import content_security_policy, page_headers
from tiledesk_tutorial.sandbox.store import Store
from tiledesk_tutorial.wire import (
    HEARTBEAT_PING,
    HEARTBEAT_PONG,
    STATUS_CLOSED,
    frame_heartbeat,
    frame_publish,
    iso,
    sender_role,
    trim_name,
)

log = logging.getLogger("tiledesk_tutorial.sandbox.room")

ROOM_PATHS = ("/room", "/room/")
#: The presenter-only socket; its one topic is :data:`ROOM_TOPIC`.
ROOM_SOCKET_PATH = "/room/live"
ROOM_TOPIC = "/room"
#: The cookie that carries the presenter token after the page's first load.
COOKIE_NAME = "tiledesk_room"
#: A subscription whose oldest undelivered webhook waits longer than this shows as "waiting"
#: before its first attempt even fails (a sleeping laptop takes the whole timeout to fail).
WAITING_AFTER_S = 5.0
#: Attempts of the delivery history read at start to know each subscription's health.
_HISTORY_AT_START = 10_000
_PAGE = "room.html"

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def new_presenter_token() -> str:
    """A random presenter token (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


# ----------------------------------------------------------------------------- delivery health


@dataclass
class Health:
    """What the room knows of one subscription's deliveries, from its recorded attempts."""

    delivered: int = 0
    failed_attempts: int = 0
    last_outcome: str | None = None  # delivered | retrying | failed | rejected
    last_status: int | None = None
    last_problem: str | None = None
    last_at: str | None = None
    failing_since: str | None = None
    next_retry_at: str | None = None

    def record(self, attempt: dict[str, Any]) -> None:
        """Take one attempt, in the shape of a ``/subscriptions/history`` entry."""
        outcome = attempt.get("outcome")
        self.last_outcome = outcome
        self.last_status = attempt.get("statusCode")
        self.last_at = attempt.get("createdAt")
        if outcome == "delivered":
            self.delivered += 1
            self.last_problem = None
            self.failing_since = None
            self.next_retry_at = None
            return
        self.failed_attempts += 1
        self.last_problem = describe_problem(self.last_status, attempt.get("err"))
        if self.failing_since is None:
            self.failing_since = self.last_at
        self.next_retry_at = attempt.get("next_attempt_at") if outcome == "retrying" else None


def describe_problem(status: int | None, error: str | None) -> str:
    """A failed attempt in a few words, with nothing of the target's answer or of a token."""
    if status is not None:
        return f"HTTP {status}"
    text = error or "failed"
    if text.startswith("TimeoutError"):
        return "no answer (timed out)"
    if "Connect" in text or "refused" in text.lower():
        return "cannot connect"
    if text.startswith("invalid target"):
        return "invalid target URL"
    return redact_jwts(text)[:80]


@functools.lru_cache(maxsize=4096)  # a room has a few hundred targets, shown several times a second
def public_target(target: str) -> str:
    """A webhook target without what could be a secret: no user info, query or fragment."""
    try:
        parts = urlsplit(target)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


# ----------------------------------------------------------------------------- the presenter socket


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Presenter:
    """One open room socket. Only the newest room waits for it: a slow page skips states."""

    latest: str | None = None
    pong: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, text: str) -> None:
        """Send ``text`` (the room) next, instead of any older room not sent yet."""
        self.latest = text
        self.ready.set()

    def answer_ping(self) -> None:
        """Send a heartbeat ``pong`` next."""
        self.pong = True
        self.ready.set()

    async def write_loop(self, send: Send) -> None:
        """Send what is due, in order: a pong, then the newest room."""
        try:
            while True:
                await self.ready.wait()
                self.ready.clear()
                if self.pong:
                    self.pong = False
                    await send({"type": "websocket.send", "text": frame_heartbeat(HEARTBEAT_PONG)})
                text, self.latest = self.latest, None
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
        finally:
            self.finished.set()


class Room:
    """The room of one sandbox: the presenter token, the learners' state, the view and its socket.

    ``connections`` is a callable giving the Realtime API's open connections (to show whose feed
    is connected); ``min_interval`` is the shortest time between two updates sent to the page
    (changes in between are sent together).
    """

    def __init__(
        self,
        store: Store,
        connections: Callable[[], Iterable[Any]] = tuple,
        *,
        token: str | None = None,
        min_interval: float = 0.25,
        idle_refresh: float = 2.0,
    ) -> None:
        self.store = store
        self._token = token or new_presenter_token()
        self._connections = connections
        self.min_interval = min_interval
        self.idle_refresh = idle_refresh
        #: Seconds after which a delivery sent and not answered makes its subscription "waiting".
        self.waiting_after = WAITING_AFTER_S
        self._health: dict[str, Health] = {}
        self._messages: dict[str, dict[str, int]] = {}  # project -> role -> count
        self._requests: dict[str, dict[str, bool]] = {}  # project -> request id -> closed
        self._last_message_at: dict[str, str] = {}
        self._presenters: set[_Presenter] = set()
        self._changed = asyncio.Event()
        self._pusher: asyncio.Task[None] | None = None
        self._last_sent: str | None = None
        self.updates_sent = 0
        self._load()

    @property
    def token(self) -> str:
        """The presenter token (print it once, in the ``Room view:`` line, and nowhere else)."""
        return self._token

    def view_url(self, base_url: str) -> str:
        """The address of the room view, with the presenter token."""
        return f"{base_url.rstrip('/')}/room?token={self._token}"

    def __repr__(self) -> str:
        return f"<Room presenter token {redact(self._token)}, {len(self._presenters)} viewer(s)>"

    # ------------------------------------------------------------------------ what it learns

    def _load(self) -> None:
        """Counts and health as the database has them when the sandbox starts."""
        rows = self.store.query_all(
            "SELECT id_project, json_extract(doc, '$.sender'), "
            "json_extract(doc, '$.attributes.subtype'), json_extract(doc, '$.createdAt') "
            "FROM messages ORDER BY seq"
        )
        for project_id, request_id, status in self.store.query_all(
            "SELECT id_project, request_id, status FROM requests"
        ):
            self._requests.setdefault(project_id, {})[request_id] = status == STATUS_CLOSED
        for project_id, sender, subtype, created_at in rows:
            message = {"sender": sender, "attributes": {"subtype": subtype}}
            self._count_message(project_id, sender_role(message), created_at)
        # Only the fields health needs: whole history documents (each with its request body) take
        # four times as long to read and decode.
        fields = ("id_subscription", "outcome", "statusCode", "err", "createdAt", "next_attempt_at")
        columns = ", ".join(f"json_extract(doc, '$.{name}')" for name in fields)
        history = self.store.query_all(
            f"SELECT {columns} FROM (SELECT seq, doc FROM delivery_log ORDER BY seq DESC "  # noqa: S608 - constant names
            "LIMIT ?) ORDER BY seq",
            (_HISTORY_AT_START,),
        )
        self.record_attempts(dict(zip(fields, row, strict=True)) for row in history)

    def _count_message(self, project_id: str, role: str, created_at: str | None) -> None:
        counts = self._messages.setdefault(project_id, {})
        counts[role] = counts.get(role, 0) + 1
        if created_at:
            self._last_message_at[project_id] = created_at

    def observe(self, changes: Changes) -> None:
        """A committed write's changes (on the event loop): count its conversations and messages."""
        for publication in changes.publications:
            request = publication.request
            self._requests.setdefault(publication.project_id, {})[request["request_id"]] = (
                request.get("status") == STATUS_CLOSED
            )
            if publication.event == "message.create" and publication.message is not None:
                self._count_message(
                    publication.project_id,
                    sender_role(publication.payload),
                    publication.message.get("createdAt"),
                )
        self.touch()

    def record_attempts(self, attempts: Iterable[dict[str, Any]]) -> None:
        """Delivery attempts just recorded, as ``/subscriptions/history`` entries."""
        for attempt in attempts:
            subscription_id = attempt.get("id_subscription")
            if isinstance(subscription_id, str):
                self._health.setdefault(subscription_id, Health()).record(attempt)
        self.touch()

    def touch(self) -> None:
        """Something may have changed: update the page soon."""
        self._changed.set()

    # ------------------------------------------------------------------------ the room's state

    def snapshot(self) -> dict[str, Any]:
        """The whole room, as the page shows it: every learner, oldest account first."""
        users = self.store.query_all(
            "SELECT id, json_extract(doc, '$.firstname'), json_extract(doc, '$.lastname'), "
            "email, json_extract(doc, '$.createdAt') FROM users ORDER BY rowid"
        )
        projects: dict[str, list[dict[str, Any]]] = {}
        by_id: dict[str, dict[str, Any]] = {}
        for project_id, owner, name, created_at in self.store.query_all(
            "SELECT id, json_extract(doc, '$.createdBy'), json_extract(doc, '$.name'), "
            "json_extract(doc, '$.createdAt') FROM projects ORDER BY rowid"
        ):
            counts = self._messages.get(project_id, {})
            requests = self._requests.get(project_id, {})
            project = {
                "id": project_id,
                "name": name,
                "created_at": created_at,
                "conversations": len(requests),
                "open_conversations": sum(not closed for closed in requests.values()),
                "messages": {
                    "visitor": counts.get("visitor", 0),
                    "agent": counts.get("agent", 0) + counts.get("bot", 0),
                },
                "last_message_at": self._last_message_at.get(project_id),
                "subscriptions": [],
            }
            projects.setdefault(owner, []).append(project)
            by_id[project_id] = project
        pending = {
            subscription_id: (count, oldest)
            for subscription_id, count, oldest in self.store.query_all(
                # A row not attempted yet has its creation time as next_attempt_at.
                "SELECT subscription_id, COUNT(*), "
                "MIN(CASE WHEN attempts = 0 THEN next_attempt_at END) FROM outbox "
                "WHERE state = 'pending' GROUP BY subscription_id"
            )
        }
        now = time.time()
        for subscription_id, project_id, event, target in self.store.query_all(
            "SELECT id, id_project, event, target FROM subscriptions ORDER BY seq"
        ):
            if project_id in by_id:
                by_id[project_id]["subscriptions"].append(
                    self._subscription(subscription_id, event, target, pending, now)
                )
        feeds: dict[str, int] = {}
        for connection in self._connections():
            user_id = getattr(getattr(connection, "user", None), "id", None)
            if user_id is not None:
                feeds[user_id] = feeds.get(user_id, 0) + 1
        learners = [
            {
                "id": user_id,
                "name": " ".join(p for p in (trim_name(firstname), trim_name(lastname)) if p),
                "email": email,
                "joined_at": created_at,
                "projects": projects.get(user_id, []),
                "realtime_connections": feeds.get(user_id, 0),
            }
            for user_id, firstname, lastname, email, created_at in users
        ]
        return {"now": iso(datetime.now(UTC)), "learners": learners}

    def _subscription(
        self,
        subscription_id: str,
        event: str,
        target: str,
        pending: dict[str, tuple[int, float]],
        now: float,
    ) -> dict[str, Any]:
        health = self._health.get(subscription_id, Health())
        waiting, oldest = pending.get(subscription_id, (0, None))
        state = "idle"
        if health.last_outcome == "delivered":
            state = "healthy"
        elif health.last_outcome == "retrying":
            state = "failing"
        elif health.last_outcome in ("failed", "rejected"):
            state = "failed"
        if (
            state in ("idle", "healthy")
            and oldest is not None
            and now - oldest > self.waiting_after
        ):
            state = "waiting"  # sent and not answered yet: a laptop asleep, or a slow handler
        return {
            "id": subscription_id,
            "event": event,
            "target": public_target(target),
            "state": state,
            "delivered": health.delivered,
            "failed_attempts": health.failed_attempts,
            "last_status": health.last_status,
            "last_problem": health.last_problem,
            "last_at": health.last_at,
            "failing_since": health.failing_since if state == "failing" else None,
            "next_retry_at": health.next_retry_at if state == "failing" else None,
            "pending": waiting,
            "waiting_since": iso(datetime.fromtimestamp(oldest, UTC))
            if oldest is not None
            else None,
        }

    # ------------------------------------------------------------------------ the page and socket

    def authorized(self, request_or_scope: Request | dict[str, Any]) -> bool:
        """True when the presenter token came in the query string or the room's cookie."""
        if isinstance(request_or_scope, Request):
            query = request_or_scope.query.get("token", "")
            cookies = request_or_scope.headers.get("cookie", "")
        else:
            raw_query = request_or_scope.get("query_string", b"").decode("latin-1")
            query = (parse_qs(raw_query).get("token") or [""])[0]
            cookies = _header(request_or_scope, "cookie")
        if query:
            return hmac.compare_digest(query.encode(), self._token.encode())
        cookie = _cookie(cookies)
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._token.encode())

    def page(self, request: Request) -> Response:
        """``GET /room``: the room view, or ``401`` without the presenter token."""
        if not self.authorized(request):
            return text_response(
                401,
                "Unauthorized: the room view needs the presenter token. Open the 'Room view:' "
                "address that tiledesk-sandbox --room printed when it started.",
            )
        page, policy = _page_and_policy()
        headers = page_headers(policy)
        if request.query.get("token"):
            headers["Set-Cookie"] = (
                f"{COOKIE_NAME}={self._token}; Path=/room; HttpOnly; SameSite=Strict"
            )
        return Response(200, page, headers)

    async def serve(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The presenter's socket: the whole room on connecting, then each change."""
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        if not self.authorized(scope):
            await _refuse(send, 401, b"Unauthorized")
            return
        if not _same_origin(scope):
            await _refuse(send, 403, b"Forbidden")
            return
        await send({"type": "websocket.accept"})
        presenter = _Presenter()
        self._presenters.add(presenter)
        presenter.offer(frame_publish(ROOM_TOPIC, "CREATE", self.snapshot()))
        self._start_pusher()
        tasks = [
            asyncio.ensure_future(self._read_loop(presenter, receive)),
            asyncio.ensure_future(presenter.write_loop(send)),
        ]
        try:
            await presenter.finished.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._presenters.discard(presenter)

    async def _read_loop(self, presenter: _Presenter, receive: Receive) -> None:
        """Answer heartbeats as the Realtime API does; nothing else a page sends matters."""
        try:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
                    body = json.loads(event.get("text") or "")
                    if body.get("action") == "heartbeat" and (
                        body["payload"]["message"]["text"] == HEARTBEAT_PING
                    ):
                        presenter.answer_ping()
        finally:
            presenter.finished.set()

    def _start_pusher(self) -> None:
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.ensure_future(self._push_loop())

    async def _push_loop(self) -> None:
        """While a page is open: at most every ``min_interval``, send the room if it changed.

        With no change, the room is still looked at every ``idle_refresh`` seconds: a feed that
        connected, or a delivery that has now waited too long, changes it without any write.
        """
        while self._presenters:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.idle_refresh)
            self._changed.clear()
            if not self._presenters:
                break
            room = self.snapshot()
            # "now" changes every time; the page needs a new frame only when the rest did.
            content = json.dumps(room["learners"], separators=(",", ":"))
            if content != self._last_sent:
                self._last_sent = content
                text = frame_publish(ROOM_TOPIC, "UPDATE", room)
                for presenter in list(self._presenters):
                    presenter.offer(text)
                self.updates_sent += 1
            await asyncio.sleep(self.min_interval)

    async def close(self) -> None:
        """Close every presenter's socket (the sandbox is stopping)."""
        for presenter in list(self._presenters):
            presenter.finished.set()
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher


def _header(scope: dict[str, Any], name: str) -> str:
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return ""


def _cookie(header: str) -> str:
    cookies: SimpleCookie = SimpleCookie()
    with contextlib.suppress(Exception):
        cookies.load(header)
    morsel = cookies.get(COOKIE_NAME)
    return morsel.value if morsel is not None else ""


def _same_origin(scope: dict[str, Any]) -> bool:
    """A browser's socket must come from this sandbox's own page; scripts send no Origin."""
    origin = _header(scope, "origin")
    if not origin:
        return True
    host = _header(scope, "host")
    return urlsplit(origin).netloc == host


async def _refuse(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"connection", b"close"), (b"content-type", b"text/plain")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


@functools.cache
def _page_and_policy() -> tuple[bytes, str]:
    page = resources.files("tiledesk_tutorial.sandbox").joinpath("static", _PAGE).read_text("utf-8")
    return page.encode("utf-8"), content_security_policy(page)
