"""Tiledesk's Realtime API: the WebSocket an agent keeps open to follow conversations live.

What the real server does (Tiledesk 2.19.16, recorded in ``tests/transcripts/ws/``), on the API's
own port: the socket at ``/`` (and ``/ws/``, where self-hosted deployments put it) takes an agent's
token in the ``token`` query parameter (``JWT ...`` or bare), refuses anything else in the
handshake (``401 Unauthorized`` or ``400 Bad Request``, as text/html), and then speaks JSON frames:
``me``, ``heartbeat``, ``subscribe``/``unsubscribe`` to the three request topics, each subscription
answered by a snapshot and followed by live ``CREATE``/``UPDATE`` frames (see
:mod:`tiledesk_tutorial.wire` for the topics and frames).

Where it holds more than the real server (the README's "Where the sandbox differs"): a visitor's
token is refused at once (the real server never answers), live frames of ``/<pid>/requests`` reach
only the agents allowed to see that request, and a client that stops reading is disconnected once
``queue_bytes`` of frames wait for it, so memory stays bounded.

Everything here runs on the sandbox's event loop; the database reads of a snapshot are short SQLite
queries, made on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from tiledesk_tutorial.sandbox import documents as docs
from tiledesk_tutorial.sandbox.access import ROLE_RANK, Authenticator, Principal
from tiledesk_tutorial.sandbox.changes import Changes, Publication
from tiledesk_tutorial.sandbox.conversations import SEES_EVERY_REQUEST
from tiledesk_tutorial.sandbox.errors import ApiError
from tiledesk_tutorial.sandbox.store import Store
from tiledesk_tutorial.wire import (
    HEARTBEAT_PING,
    HEARTBEAT_PONG,
    SERVER_PING_INTERVAL,
    SNAPSHOT_MESSAGES_LIMIT,
    SNAPSHOT_REQUESTS_LIMIT,
    STATUS_CLOSED,
    Topic,
    frame,
    frame_heartbeat,
    frame_publish,
    is_open_status,
    new_uuid,
    parse_topic,
    topic_messages,
    topic_request,
    topic_requests,
)

log = logging.getLogger("tiledesk_tutorial.sandbox.realtime")

#: The paths of the socket: Tiledesk's default ``/``, and ``/ws/`` as self-hosted proxies serve it.
SOCKET_PATHS = frozenset({"/", "/ws", "/ws/"})
#: Frames waiting for one client before it is disconnected (a client that does not read).
DEFAULT_QUEUE_BYTES = 1024 * 1024
#: The scope key that asks :class:`~tiledesk_tutorial.sandbox.protocols.SandboxWebSocketProtocol`
#: to drop the connection at once (``ws.terminate()`` on the real server) instead of closing it.
TERMINATE = "tiledesk_tutorial.terminate"

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class Connection:
    """One open socket: who it is, what it follows, and the frames waiting to be sent to it."""

    def __init__(self, user: Principal, queue_bytes: int) -> None:
        self.id = new_uuid()
        self.user = user
        #: topic -> the member's role in the topic's project, checked when subscribing
        self.topics: dict[str, str] = {}
        self.heard = True  # a frame came in since the last ping
        self.finished = asyncio.Event()
        self.terminated = False
        self._queue: deque[str] = deque()
        self._queued = 0
        self._limit = queue_bytes
        self._ready = asyncio.Event()

    def offer(self, text: str) -> bool:
        """Queue a frame; False (and the connection is terminated) when too much is waiting."""
        if self.finished.is_set():
            return False
        if self._queued + len(text) > self._limit:
            log.info("realtime client %s does not read its frames: disconnected", self.id)
            self.terminate()
            return False
        self._queue.append(text)
        self._queued += len(text)
        self._ready.set()
        return True

    def terminate(self) -> None:
        """Drop the connection now, without a closing handshake (a dead or stuck client)."""
        self.terminated = True
        self.finished.set()

    async def write_loop(self, send: Send) -> None:
        """Send queued frames in order; waits (holding memory bounded) while the client is slow."""
        try:
            while True:
                await self._ready.wait()
                while self._queue:
                    text = self._queue.popleft()
                    self._queued -= len(text)
                    await send({"type": "websocket.send", "text": text})
                self._ready.clear()
        finally:
            self.finished.set()


class Realtime:
    """The Realtime API of one sandbox: its open connections, their topics, and the publisher."""

    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        *,
        ping_interval: float = SERVER_PING_INTERVAL,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
    ) -> None:
        self.store = store
        self.auth = auth
        self.ping_interval = ping_interval
        self.queue_bytes = queue_bytes
        self.connections: set[Connection] = set()
        self._subscribers: dict[str, set[Connection]] = {}
        self._ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------- the socket

    async def serve(
        self, scope: dict[str, Any], receive: Receive, send: Send, *, path: str | None = None
    ) -> None:
        """Serve one WebSocket from its handshake to its end (the ASGI ``websocket`` scope).

        ``path`` is the scope's path without the API prefix.
        """
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        if (path or scope["path"]) not in SOCKET_PATHS:
            await _refuse(send, 400, b"Bad Request")
            return
        user = self._agent(scope.get("query_string", b""))
        if user is None:
            await _refuse(send, 401, b"Unauthorized")
            return
        await send({"type": "websocket.accept"})
        connection = Connection(user, self.queue_bytes)
        self.connections.add(connection)
        self._start_ticker()
        tasks = [
            asyncio.ensure_future(self._read_loop(connection, receive)),
            asyncio.ensure_future(connection.write_loop(send)),
        ]
        try:
            await connection.finished.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._forget(connection)
        if connection.terminated:
            scope[TERMINATE] = True

    def _agent(self, query_string: bytes) -> Principal | None:
        values = parse_qs(query_string.decode("latin-1")).get("token")
        return self.auth.agent_from_token(values[0]) if values else None

    async def _read_loop(self, connection: Connection, receive: Receive) -> None:
        try:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                connection.heard = True
                text = event.get("text")
                if text is not None:
                    self._handle(connection, text)
        finally:
            connection.finished.set()

    def _handle(self, connection: Connection, text: str) -> None:
        """One frame from the client. Malformed or refused frames get no answer, as on Tiledesk."""
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        action = message.get("action")
        payload = message.get("payload") if isinstance(message.get("payload"), dict) else {}
        if action == "heartbeat":
            body = payload.get("message")
            if isinstance(body, dict) and body.get("text") == HEARTBEAT_PING:
                connection.offer(frame_heartbeat(HEARTBEAT_PONG))
        elif action == "me":
            connection.offer(frame("me", {"id": connection.id, "userId": None}))
        elif action == "subscribe":
            self._subscribe(connection, payload.get("topic"))
        elif action == "unsubscribe":
            topic = payload.get("topic")
            if isinstance(topic, str) and connection.topics.pop(topic, None) is not None:
                self._subscribers.get(topic, set()).discard(connection)
        # "publish" and "broadcast" would relay anything to anyone: ignored (see the module doc).

    def _forget(self, connection: Connection) -> None:
        self.connections.discard(connection)
        for topic in connection.topics:
            subscribers = self._subscribers.get(topic)
            if subscribers is not None:
                subscribers.discard(connection)
                if not subscribers:
                    del self._subscribers[topic]

    # ------------------------------------------------------------------------- subscribing

    def _subscribe(self, connection: Connection, name: Any) -> None:
        topic = parse_topic(name)
        if topic is None:
            return
        try:
            role = self.auth.membership(connection.user, topic.project_id).role
        except ApiError:
            return
        if ROLE_RANK.get(role, -1) < ROLE_RANK["agent"]:
            return
        snapshot = self._snapshot(topic, connection.user, role)
        if snapshot is None:
            return
        key = str(topic)
        connection.topics[key] = role
        self._subscribers.setdefault(key, set()).add(connection)
        connection.offer(frame_publish(key, "CREATE", snapshot))

    def _snapshot(self, topic: Topic, user: Principal, role: str) -> Any:
        """The first frame's message, or None when the topic is refused (no answer at all)."""
        if topic.kind == "requests":
            return self._open_requests(topic.project_id, user, role)
        assert topic.request_id is not None
        request = self.store.doc(
            "SELECT doc FROM requests WHERE id_project = ? AND request_id = ?",
            (topic.project_id, topic.request_id),
        )
        if request is None or not _may_see(role, user, request):
            return None
        if topic.kind == "request":
            return docs.render_request(request)
        # The newest messages, oldest first (Tiledesk sends the oldest ones: see the module doc).
        rows = self.store.docs(
            "SELECT doc FROM (SELECT seq, doc FROM messages WHERE id_project = ? AND recipient = ? "
            "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (topic.project_id, topic.request_id, SNAPSHOT_MESSAGES_LIMIT),
        )
        return rows

    def _open_requests(self, project_id: str, user: Principal, role: str) -> list[dict[str, Any]]:
        """Open requests the member may see, most recently updated first, at most 100."""
        sql = "SELECT doc FROM requests WHERE id_project = ? AND status > 50 AND status < ?"
        params: list[Any] = [project_id, STATUS_CLOSED]
        if role not in SEES_EVERY_REQUEST:
            sql += " AND (' ' || participants || ' ') LIKE ?"
            params.append(f"% {user.id} %")
        requests = [
            request
            for request in self.store.docs(sql, tuple(params))
            if is_open_status(request["status"])
            and not request.get("preflight")
            and not request.get("draft")
        ]
        requests.sort(key=lambda request: request["updatedAt"], reverse=True)
        return [docs.render_request(r) for r in requests[:SNAPSHOT_REQUESTS_LIMIT]]

    # ------------------------------------------------------------------------- publishing

    def publish(self, changes: Changes) -> None:
        """Send the frames of a committed transaction to every subscriber allowed to see them."""
        for publication in changes.publications:
            for topic, method, message in _frames_of(publication):
                subscribers = self._subscribers.get(topic)
                if not subscribers:
                    continue
                text = frame_publish(topic, method, message)
                for connection in list(subscribers):
                    if topic == topic_requests(publication.project_id) and not _may_see(
                        connection.topics.get(topic, ""), connection.user, publication.request
                    ):
                        continue
                    connection.offer(text)

    # ------------------------------------------------------------------------- heartbeats

    def _start_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick_loop())

    async def _tick_loop(self) -> None:
        """Every ``ping_interval``: drop the clients silent since the last ping, ping the others."""
        while self.connections:
            await asyncio.sleep(self.ping_interval)
            for connection in list(self.connections):
                if not connection.heard:
                    log.info("realtime client %s silent for %gs: dropped", connection.id,
                             self.ping_interval)  # fmt: skip
                    connection.terminate()
                    continue
                connection.heard = False
                connection.offer(frame_heartbeat(HEARTBEAT_PING))

    async def close(self) -> None:
        """Drop every connection (the sandbox is stopping) and stop the heartbeats."""
        for connection in list(self.connections):
            connection.terminate()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker


def _may_see(role: str, user: Principal, request: dict[str, Any]) -> bool:
    """Owners and admins see every request; other agents those they take part in."""
    return role in SEES_EVERY_REQUEST or user.id in (request.get("participants") or [])


def _frames_of(publication: Publication) -> Iterable[tuple[str, str, Any]]:
    """(topic, method, message) of each frame a change publishes, as the real server does."""
    project_id = publication.project_id
    request = publication.request
    request_id = request["request_id"]
    if publication.event == "request.create":
        created = docs.render_request(request)
        created["snapshot"]["agents"] = []
        yield topic_requests(project_id), "CREATE", created
    elif publication.event == "request.update":
        updated = docs.render_request_update(request)
        yield topic_requests(project_id), "UPDATE", updated
        yield topic_request(project_id, request_id), "UPDATE", updated
    elif publication.event == "message.create":
        yield topic_messages(project_id, request_id), "CREATE", publication.payload
    # "request.close" is a webhook only: the close itself was published as an UPDATE.


async def _refuse(send: Send, status: int, body: bytes) -> None:
    """Refuse the handshake with a plain HTTP answer, as the real server's ``ws`` library does."""
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"connection", b"close"), (b"content-type", b"text/html")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
