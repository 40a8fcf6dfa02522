"""Receive live with no public URL: Tiledesk's Realtime API (a WebSocket) as a feed of events.

    feed = RealtimeFeed(agent).start()        # re-running the cell replaces the earlier feed
    feed.on_event(lambda event: print(event.summary()))
    feed.wait_for(lambda e: e.text == "hello", timeout=10)
    feed.stop()

Webhooks need Tiledesk to reach you (a public URL, a tunnel). Here the notebook connects *out* to
the server, as Tiledesk's own dashboard does, and subscribes to topics (like Slack's Socket Mode):

1. connect to ``ws(s)://<server>/?token=JWT <agent token>`` (the server checks the token in the
   handshake; a visitor's token is refused here before connecting: the real server never answers);
2. subscribe to ``/<project>/requests``: the server answers with the open conversations (a
   *snapshot*), then sends each conversation created (``CREATE``) or changed (``UPDATE``);
3. subscribe to ``/<project>/requests/<request_id>/messages`` for each of them (and for each one
   created later): a snapshot of its messages, then each new message, whoever sent it;
4. send a heartbeat every 15 s and answer the server's (it drops a client silent for 30 s); no
   answer within 10 s means the connection is dead;
5. after a drop or a server restart, reconnect with backoff and jitter and subscribe again. The
   Realtime API has no replay: the snapshots are the only way to catch up, so the feed re-subscribes
   to every conversation it follows and keeps only what it has not seen, by message ``_id``
   (:class:`~tiledesk_tutorial.event_hub.EventHub`): nothing is repeated, nothing is lost.

How frames become :class:`~tiledesk_tutorial.models.Event` objects (``source="realtime"``), named
like webhook events so that the same code handles both:

=========================================================  ===================================
frame                                                      ``Event.event``
=========================================================  ===================================
a message on ``.../messages`` (live or in a snapshot)      ``message.create``
a conversation the feed did not know (``CREATE``, or new
in a snapshot after a reconnect)                           ``request.create``
``UPDATE`` of a conversation, now closed (status 1000)     ``request.close``
any other change (``UPDATE``; a snapshot entry whose
``updatedAt`` moved while disconnected)                    ``request.update``
=========================================================  ===================================

Tiledesk sends no separate "closed" frame: a close is an ``UPDATE`` with status 1000 (followed by
a "Chat closed" system message). By default what was already there when the feed started (the
first snapshots) is not delivered, only what happens next, like a webhook; ``include_history=True``
delivers it too.

The feed runs on one background thread with ``websockets.sync.client`` (the threading client of
the ``websockets`` library); callbacks run on the hub's one worker thread, never on the thread that
reads the socket. The reconnection loop is written here rather than taken from
``websockets.sync.client.reconnect`` because the feed must re-subscribe and catch up after each
connection, report its state while it retries, tell a refused token from a network drop, and stop
at once when asked (that loop sleeps uninterruptibly between attempts).
"""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)
from websockets.sync.client import ClientConnection, connect

from tiledesk_tutorial.config import Config, get_default
from tiledesk_tutorial.errors import InvalidInputError, TiledeskTutorialError
from tiledesk_tutorial.event_hub import BatchCallback, EventCallback, EventHub, EventPredicate
from tiledesk_tutorial.models import (
    MESSAGE_CREATE,
    REQUEST_CLOSE,
    REQUEST_CREATE,
    REQUEST_UPDATE,
    Event,
)
from tiledesk_tutorial.redact import redact, redact_jwts
from tiledesk_tutorial.wire import (
    HEARTBEAT_PING,
    HEARTBEAT_PONG,
    STATUS_CLOSED,
    SUBJECT_GUEST,
    bare_token,
    frame_heartbeat,
    frame_subscribe,
    frame_unsubscribe,
    is_object_id,
    parse_time,
    parse_topic,
    topic_messages,
    topic_request,
    topic_requests,
    unverified_claims,
    with_jwt_prefix,
)

if TYPE_CHECKING:  # pragma: no cover
    from tiledesk_tutorial.client import TiledeskClient

__all__ = [
    "FeedState",
    "RealtimeAuthError",
    "RealtimeEndpointError",
    "RealtimeError",
    "RealtimeFeed",
    "RealtimeTimeout",
    "RealtimeUnreachableError",
    "running_feeds",
    "stop_all_feeds",
]

logger = logging.getLogger("tiledesk_tutorial.realtime")

#: How often the feed sends its own heartbeat, and how long it waits for the answer, in seconds
#: (what Tiledesk's dashboard does). The server drops a client that sent nothing for 30 s.
HEARTBEAT_INTERVAL = 15.0
HEARTBEAT_TIMEOUT = 10.0
#: The first pause before reconnecting and the longest one, in seconds (each pause doubles, with
#: jitter, so that thirty laptops do not all come back in the same millisecond).
RECONNECT_DELAY = 0.5
MAX_RECONNECT_DELAY = 30.0
#: A closed conversation's messages are followed this long more (the "Chat closed" system
#: message comes after the close, and a visitor may rate it), then the feed unsubscribes.
CLOSED_GRACE = 60.0
#: The largest frame accepted: a snapshot holds up to 100 conversations or 300 messages, each a few
#: kilobytes (the library's default of 1 MiB would cut a big snapshot and loop on reconnecting).
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Conversations remembered (a few hundred bytes each), so that one reopened later is not new.
MAX_CONVERSATIONS = 10_000

FeedStatus = Literal["stopped", "connecting", "connected", "reconnecting", "failed"]


# -- errors ----------------------------------------------------------------------------------------
class RealtimeError(TiledeskTutorialError):
    """The realtime feed could not connect, or was refused; the message says what to do.

    Attributes:
        url: the Realtime API's address, without the token.
        status: the HTTP status of a refused handshake, or ``None``.
        retryable: whether trying again later may work (a network drop, a server restarting),
            as opposed to a refused token or a wrong address. A feed that was connected retries
            the first kind by itself; ``start()`` reports either at once.
    """

    def __init__(
        self,
        summary: str,
        *,
        url: str = "",
        status: int | None = None,
        hint: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.url = url
        self.status = status
        self.retryable = retryable
        super().__init__(summary, hint=hint)


class RealtimeAuthError(RealtimeError):
    """The token cannot open the Realtime API: a visitor's, expired, or refused (401)."""


class RealtimeEndpointError(RealtimeError):
    """The address is not a Realtime API: wrong path (400, 404), wrong host, not a WebSocket."""


class RealtimeUnreachableError(RealtimeError):
    """Nothing answered: the server is down, the port is wrong, or the network is."""

    def __init__(
        self,
        summary: str,
        *,
        url: str = "",
        status: int | None = None,
        hint: str | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(summary, url=url, status=status, hint=hint, retryable=retryable)


class RealtimeTimeout(RealtimeError, TimeoutError):
    """``wait_for`` did not see the events it waited for in time. ``events`` holds what matched."""

    def __init__(self, summary: str, events: list[Event], *, url: str = "") -> None:
        self.events = events
        super().__init__(summary, url=url)


# -- the state a learner reads ---------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class FeedState:
    """Where the feed stands, at one moment.

    Attributes:
        status: ``"stopped"``, ``"connecting"`` (first attempt), ``"connected"``,
            ``"reconnecting"`` (the connection was lost; retrying) or ``"failed"`` (refused: see
            ``last_error``; the feed stopped).
        since: when that status began (UTC).
        url: the Realtime API's address (never the token).
        project_id: the project followed.
        conversations: how many conversations the feed follows now.
        reconnects: how many times it connected again after losing the connection.
        attempts: failed attempts since the connection was lost (0 while connected).
        last_error: the last failure, in one sentence, or ``None``.
    """

    status: FeedStatus
    since: datetime | None
    url: str
    project_id: str
    conversations: int = 0
    reconnects: int = 0
    attempts: int = 0
    last_error: str | None = None

    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self.status == "connected"

    def __repr__(self) -> str:
        return f"<FeedState: {self}>"

    def __str__(self) -> str:
        when = self.since.astimezone().strftime("%H:%M:%S") if self.since else "?"
        if self.status == "connected":
            text = (
                f"connected to {self.url} since {when}, following {self.conversations} "
                f"conversation(s) of project {self.project_id}"
            )
            if self.reconnects:
                text += f" ({self.reconnects} reconnection(s))"
            return text
        if self.status == "reconnecting":
            text = f"reconnecting to {self.url} since {when} ({self.attempts} attempt(s) failed)"
        elif self.status == "connecting":
            text = f"connecting to {self.url} since {when}"
        elif self.status == "failed":
            text = f"failed at {when}: not connected to {self.url}"
        else:
            text = f"stopped (not connected to {self.url})"
        if self.last_error and self.status != "stopped":
            text += f"; last error: {self.last_error}"
        return text


@dataclass
class _Conversation:
    """What the feed knows of one conversation (request)."""

    request_id: str
    status: int | None = None
    updated_at: Any = None
    # The first snapshot's view of the conversation when the feed started: its messages created
    # up to then are history (not delivered unless include_history).
    history_until: datetime | None = None
    closed_at: float | None = None  # monotonic time it was seen closed
    followed: bool = False  # subscribed to its messages on the current connection

    @property
    def closed(self) -> bool:
        return self.status == STATUS_CLOSED


class _Stop(Exception):
    """The feed was asked to stop (raised inside the feed's thread only)."""


class _Dead(Exception):
    """The connection stopped answering heartbeats."""


_RUNNING: dict[tuple[str, str], RealtimeFeed] = {}
_RUNNING_LOCK = threading.RLock()


class RealtimeFeed:
    """Every conversation of a project, live, over Tiledesk's Realtime API: no public URL needed.

    Args:
        client: a signed-in agent's :class:`~tiledesk_tutorial.client.TiledeskClient` (an owner,
            admin or agent of the project); its token, API URL and project are used. Or give
            ``token`` and ``api_url`` instead.
        project_id: the project to follow (default: the client's ``project_id``, else
            ``TILEDESK_PROJECT_ID``).
        token: an agent's token (``"JWT eyJ..."`` or the bare JWT), when no client is given.
        api_url: the API's base URL, when no client is given; the Realtime API's address is
            derived from it.
        url: the Realtime API's address, e.g. ``wss://eu.rtmv3.tiledesk.com/api/``. Default:
            ``TILEDESK_REALTIME_URL``, else derived from the API URL (same host and port, path
            ``/``; Tiledesk cloud's documented endpoint for ``api.tiledesk.com``).
        include_history: also deliver what was there when the feed started (the open
            conversations and their messages); by default only what happens after ``start()``.
        max_events: how many of the newest events to keep in :attr:`events`.
        heartbeat_interval, heartbeat_timeout: seconds between heartbeats, and to wait for each
            answer before the connection counts as dead.
        reconnect_delay, max_reconnect_delay: the first and the longest pause between attempts.
        open_timeout: seconds to wait for the handshake, and then for the first snapshot.
        config: the configuration to read ``TILEDESK_REALTIME_URL`` and ``TILEDESK_PROJECT_ID``
            from (default: :func:`~tiledesk_tutorial.config.get_default`).

    Raises:
        RealtimeAuthError: no token, or a visitor's, or an expired one (checked before connecting).
        ValueError: no project id, or no way to know the address.
    """

    def __init__(
        self,
        client: TiledeskClient | None = None,
        *,
        project_id: str | None = None,
        token: str | None = None,
        api_url: str | None = None,
        url: str | None = None,
        include_history: bool = False,
        max_events: int = 1000,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        reconnect_delay: float = RECONNECT_DELAY,
        max_reconnect_delay: float = MAX_RECONNECT_DELAY,
        open_timeout: float = 10.0,
        config: Config | None = None,
    ) -> None:
        config = config if config is not None else get_default()
        if client is not None:
            token = token or client.token
            api_url = api_url or client.base_url
            project_id = project_id or client.project_id
        project_id = project_id or config.project_id
        if not project_id or not is_object_id(project_id):
            raise ValueError(
                f"the feed needs the id of the project to follow (24 hexadecimal characters), "
                f"got {project_id!r}: pass project_id=, or a client with project_id set."
            )
        self.project_id = project_id
        self._token = _checked_token(token)
        base = url or config.realtime_url_for(api_url)
        self.url = _without_query_token(base)
        self._connect_url = _with_token(base, self._token)
        # The bare JWT is in every form the token takes (prefixed, URL-encoded: base64url needs
        # no escaping), so hiding it hides them all.
        self._secrets = (self._token,)
        self.include_history = include_history
        for name, value in (
            ("heartbeat_interval", heartbeat_interval),
            ("heartbeat_timeout", heartbeat_timeout),
            ("reconnect_delay", reconnect_delay),
            ("max_reconnect_delay", max_reconnect_delay),
            ("open_timeout", open_timeout),
        ):
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")
        self.heartbeat_interval = float(heartbeat_interval)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.reconnect_delay = float(reconnect_delay)
        self.max_reconnect_delay = max(float(max_reconnect_delay), self.reconnect_delay)
        self.open_timeout = float(open_timeout)
        self._hub = EventHub(max_events, name=f"tiledesk-realtime-{project_id[-6:]}-callbacks")
        self._wire_log = _RedactingLog(
            logging.getLogger("tiledesk_tutorial.realtime.wire"), self._secrets
        )

        self._lifecycle = threading.RLock()
        self._lock = threading.Lock()  # guards the state and the counters below
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._ws: ClientConnection | None = None
        self._fatal: RealtimeError | None = None
        self._status: FeedStatus = "stopped"
        self._since: datetime | None = None
        self._last_error: str | None = None
        self._attempts = 0
        self._reconnects = 0
        # The first snapshot was read (what came before start() is history from then on), and
        # this run of start() got connected (failures before that are reported by start()).
        self._history_done = False
        self._up_this_run = False
        self._caught_up = False
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._follow_asked: set[str] = set()  # conversations to follow again (follow_conversation)
        self._counters = {
            "frames": 0,
            "bad_frames": 0,
            "history_skipped": 0,
            "heartbeats_sent": 0,
            "heartbeats_answered": 0,
            "server_pings": 0,
            "subscriptions": 0,
        }
        # Per connection, touched by the feed's thread only:
        self._topics: set[str] = set()
        self._probing: set[str] = set()
        self._last_sent = 0.0
        self._ping_sent_at: float | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the feed is receiving or trying to (connected, connecting or reconnecting)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping.is_set()

    @property
    def state(self) -> FeedState:
        """The feed's state now: connected, reconnecting since when, the last error..."""
        with self._lock:
            followed = sum(1 for c in self._conversations.values() if c.followed)
            return FeedState(
                status=self._status,
                since=self._since,
                url=self.url,
                project_id=self.project_id,
                conversations=followed,
                reconnects=self._reconnects,
                attempts=self._attempts,
                last_error=self._last_error,
            )

    def start(self, *, wait: bool = True) -> RealtimeFeed:
        """Connect and subscribe in the background, and return the feed (idempotent).

        A feed of this process already following the same project on the same server is stopped
        first, so re-running a notebook cell replaces it. With ``wait`` (the default), returns
        once connected and subscribed, so that everything that happens afterwards is delivered;
        a failure then raises at once, in one sentence, and the feed is stopped.

        Raises:
            RealtimeAuthError: the server refused the token (401).
            RealtimeEndpointError: the address is not the Realtime API (set
                ``TILEDESK_REALTIME_URL``).
            RealtimeUnreachableError: nothing answered, or no snapshot came (the project id is
                wrong, or the account is not an agent of it: Tiledesk answers nothing then).
        """
        with self._lifecycle:
            if self.running:
                return self
            key = (self.url, self.project_id)
            with _RUNNING_LOCK:
                earlier = _RUNNING.get(key)
            if earlier is not None and earlier is not self:
                logger.info("stopping the earlier feed of project %s to replace it", key[1])
                earlier.stop()
            previous = self._thread  # a feed that failed: its thread is ending, let it finish
            if previous is not None and previous is not threading.current_thread():
                previous.join(self.open_timeout + 5)
            self._stopping.clear()
            self._ready.clear()
            self._fatal = None
            self._up_this_run = False
            self._set_status("connecting", error=None)
            self._hub.start()
            self._thread = threading.Thread(
                target=self._run, name=f"tiledesk-realtime-{self.project_id[-6:]}", daemon=True
            )
            self._thread.start()
            with _RUNNING_LOCK:
                _RUNNING[key] = self
        if wait:
            try:
                self._wait_ready()
            except BaseException:  # a refusal, or Ctrl-C while waiting: nothing left running
                self.stop()
                raise
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Close the connection, stop the thread, run the callbacks still due (idempotent).

        ``timeout``: seconds to wait for the thread (default: the handshake's timeout and a
        little more, since a handshake in progress cannot be interrupted).
        """
        timeout = self.open_timeout + 5 if timeout is None else timeout
        with self._lifecycle:
            thread, self._thread = self._thread, None
            self._stopping.set()
            ws = self._ws
            if ws is not None:
                ws.close()  # wakes the feed's thread from recv()
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
                if thread.is_alive():
                    logger.warning("the realtime feed's thread still runs after %.0f s", timeout)
            self._hub.stop(timeout)
            with self._lock:
                if self._status != "failed":
                    self._status, self._since = "stopped", _now()
            with _RUNNING_LOCK:
                key = (self.url, self.project_id)
                if _RUNNING.get(key) is self:
                    del _RUNNING[key]

    def __enter__(self) -> RealtimeFeed:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- events (the EventSource protocol) -------------------------------------------------
    @property
    def events(self) -> list[Event]:
        """A snapshot (a new list) of the kept events, oldest first."""
        return self._hub.snapshot()

    @property
    def last_event(self) -> Event | None:
        """The most recently kept event, or ``None``."""
        return self._hub.last()

    def clear(self) -> None:
        """Forget the kept events, e.g. before waiting only for new ones (repeats still drop)."""
        self._hub.clear()

    def on_event(self, callback: EventCallback, *, key: Hashable | None = None) -> EventCallback:
        """Call ``callback(event)`` for each new event, on the feed's worker thread, in order.

        A named function registered again replaces the first (a re-run cell does not double
        it); ``key`` names it explicitly. Usable as a decorator. Exceptions are counted in
        :attr:`stats` and logged, never raised into the feed.
        """
        return self._hub.on_event(callback, key=key)

    def on_events(
        self, callback: BatchCallback, *, key: Hashable, min_interval: float = 0.0
    ) -> BatchCallback:
        """Call ``callback(events)`` with every event kept since its last call (a burst at once),
        at most once every ``min_interval`` seconds; ``key`` replaces an earlier callback."""
        return self._hub.on_events(callback, key=key, min_interval=min_interval)

    def remove_callback(self, callback_or_key: Any) -> None:
        """Stop calling a callback (given itself, or its key)."""
        self._hub.remove_callback(callback_or_key)

    def wait_for(
        self, predicate: EventPredicate | None = None, count: int = 1, timeout: float = 10
    ) -> list[Event]:
        """Wait until ``count`` kept events match ``predicate`` (any event when ``None``).

        Events kept before the call count too (:meth:`clear` first to wait only for new ones).
        Raises :class:`RealtimeTimeout` after ``timeout`` seconds, saying what the feed did see
        and where it stands (reconnecting, refused...).
        """
        matches = self._hub.wait(predicate, count, timeout)
        if len(matches) >= count:
            return matches
        what = "matching event" if count == 1 else "matching events"
        raise RealtimeTimeout(
            f"waited {timeout:g} s for {count} {what} of project {self.project_id}, got "
            f"{len(matches)}; the feed kept {len(self._hub)} event(s) in all. Feed: "
            f"{self.state}.",
            matches,
            url=self.url,
        )

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every kept event has been through the callbacks; False after ``timeout``."""
        return self._hub.wait_idle(timeout)

    @property
    def websocat(self) -> str:
        """What the feed does, by hand: the connection as a ``websocat`` command (a WebSocket
        command-line client; the token redacted) and the first frame it sends."""
        shown = _scrub(self._connect_url, self._secrets)
        return (
            f"websocat '{shown}'\n"
            f"{frame_subscribe(topic_requests(self.project_id))}\n"
            "# then, for each conversation in the answer and each one created later:\n"
            f"{frame_subscribe(topic_messages(self.project_id, '<request_id>'))}"
        )

    def follow_conversation(self, request_id: str) -> None:
        """Follow ``request_id``'s messages again, for another grace period, even if closed.

        The feed stops following a conversation a while after it closed (``CLOSED_GRACE``); a
        message written into it later (a reply from the view's box after *Run All*) would then
        never arrive. The view calls this before it sends; the feed subscribes within a second,
        and the subscription's snapshot brings what was written meanwhile.
        """
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInputError(f"request_id must be a conversation's id: {request_id!r}")
        with self._lock:
            self._follow_asked.add(request_id)

    @property
    def conversations(self) -> list[str]:
        """The request ids of the conversations followed now (subscribed to their messages)."""
        with self._lock:
            return [c.request_id for c in self._conversations.values() if c.followed]

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: frames, events kept, duplicates dropped, heartbeats, reconnections..."""
        with self._lock:
            stats: dict[str, Any] = dict(self._counters)
            stats["reconnects"] = self._reconnects
        stats["events_kept"] = len(self._hub)
        stats["duplicates"] = self._hub.duplicates
        stats["evicted"] = self._hub.evicted
        stats["pending_callbacks"] = self._hub.queued  # as the webhook listener counts them
        stats["callback_errors"] = self._hub.callback_errors
        stats["last_callback_error"] = self._hub.last_callback_error
        return stats

    def __repr__(self) -> str:
        state = self.state
        return (
            f"<RealtimeFeed {self.url} project={self.project_id} {state.status}, "
            f"{state.conversations} conversation(s), {len(self._hub)} event(s)>"
        )

    # -- the feed's thread -----------------------------------------------------------------
    def _run(self) -> None:
        delays: Iterator[float] | None = None
        try:
            while not self._stopping.is_set():
                self._caught_up = False
                try:
                    self._connect_and_follow()
                    error = RealtimeUnreachableError("the connection ended", url=self.url)
                except _Stop:
                    return
                except RealtimeError as exc:
                    error = exc
                if self._stopping.is_set():
                    return
                if not error.retryable or not self._up_this_run:
                    self._fail(error)
                    return
                if self._caught_up:
                    delays = None  # it was connected and caught up: a new outage starts afresh
                if delays is None:
                    delays = self._delays()
                delay = next(delays)
                with self._lock:
                    if self._status == "connected":
                        self._status, self._since = "reconnecting", _now()
                    else:
                        self._attempts += 1
                    self._last_error = error.summary
                logger.info("realtime: %s; reconnecting in %.1f s", error.summary, delay)
                if self._stopping.wait(delay):
                    return
        except Exception as exc:  # a bug must not end the feed silently
            logger.exception("the realtime feed stopped on an unexpected error")
            self._fail(RealtimeError(f"the feed stopped on an unexpected error: {exc!r}"))
        finally:
            self._ws = None

    def _delays(self) -> Iterator[float]:
        """Exponential backoff with "equal jitter": each pause is half fixed, half random."""
        delay = self.reconnect_delay
        while True:
            yield delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 (jitter, not security)
            delay = min(delay * 2, self.max_reconnect_delay)

    def _connect_and_follow(self) -> None:
        with self._open() as ws:  # closed on the way out, whatever happens
            self._ws = ws
            try:
                if self._stopping.is_set():
                    raise _Stop
                self._topics.clear()
                self._probing.clear()
                self._ping_sent_at = None
                self._last_sent = time.monotonic()
                self._send(ws, frame_subscribe(topic_requests(self.project_id)))
                with self._lock:
                    conversations = list(self._conversations.values())
                    for conversation in conversations:
                        conversation.followed = False
                # Catch up on every conversation followed before the drop: its snapshot repeats
                # what was seen (dropped by _id) and holds what was missed. The requests
                # snapshot that comes next lists the open ones; those closed meanwhile are
                # probed in _on_requests.
                for conversation in conversations:
                    if not conversation.closed or self._within_grace(conversation):
                        self._follow(ws, conversation)
                self._receive(ws)
            finally:
                self._ws = None

    def _open(self) -> ClientConnection:
        try:
            # Heartbeats are the application's (below): Tiledesk counts only frames from the
            # client, not WebSocket pongs, so the library's own pings are switched off.
            return connect(
                self._connect_url,
                open_timeout=self.open_timeout,
                ping_interval=None,
                close_timeout=2,
                max_size=MAX_FRAME_BYTES,
                logger=self._wire_log,
                user_agent_header="tiledesk-tutorial (websockets)",
            )
        except Exception as exc:
            raise _explain(exc, self.url, self._secrets, self.open_timeout) from None

    def _receive(self, ws: ClientConnection) -> None:
        snapshot_deadline = time.monotonic() + self.open_timeout
        while True:
            if self._stopping.is_set():
                raise _Stop
            now = time.monotonic()
            if self._ping_sent_at is not None and now - self._ping_sent_at > self.heartbeat_timeout:
                raise RealtimeUnreachableError(
                    f"no answer to the heartbeat in {self.heartbeat_timeout:g} s: the connection "
                    "is dead",
                    url=self.url,
                )
            if not self._ready.is_set() and now > snapshot_deadline:
                raise RealtimeUnreachableError(
                    f"connected to {self.url}, but no conversations came back in "
                    f"{self.open_timeout:g} s for project {self.project_id}",
                    url=self.url,
                    hint=(
                        "check the project id, and that this account is an owner, admin or agent "
                        "of the project: Tiledesk's Realtime API answers nothing when it refuses "
                        "a subscription."
                    ),
                )
            if self._ping_sent_at is None and now - self._last_sent >= self.heartbeat_interval:
                self._send(ws, frame_heartbeat(HEARTBEAT_PING))
                self._ping_sent_at = now
                with self._lock:
                    self._counters["heartbeats_sent"] += 1
            self._drop_closed_conversations(ws)
            self._follow_asked_conversations(ws)
            wait = self._next_wake(now, snapshot_deadline)
            try:
                text = ws.recv(timeout=wait)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                if self._stopping.is_set():
                    raise _Stop from None
                raise RealtimeUnreachableError(_closed_reason(exc), url=self.url) from None
            self._handle(ws, text)

    def _next_wake(self, now: float, snapshot_deadline: float) -> float:
        moments = [self._last_sent + self.heartbeat_interval, now + 1.0]
        if self._ping_sent_at is not None:
            moments.append(self._ping_sent_at + self.heartbeat_timeout)
        if not self._ready.is_set():
            moments.append(snapshot_deadline)
        return max(0.01, min(moments) - now)

    def _send(self, ws: ClientConnection, text: str) -> None:
        try:
            ws.send(text)
        except ConnectionClosed as exc:
            if self._stopping.is_set():
                raise _Stop from None
            raise RealtimeUnreachableError(_closed_reason(exc), url=self.url) from None
        self._last_sent = time.monotonic()

    # -- frames ----------------------------------------------------------------------------
    def _handle(self, ws: ClientConnection, text: str | bytes) -> None:
        with self._lock:
            self._counters["frames"] += 1
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            frame = None
        if not isinstance(frame, dict):
            with self._lock:
                self._counters["bad_frames"] += 1
            logger.debug("realtime: ignored a frame that is not a JSON object")
            return
        payload = frame.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        action = frame.get("action")
        if action == "heartbeat":
            message = payload.get("message")
            said = message.get("text") if isinstance(message, dict) else None
            if said == HEARTBEAT_PING:  # the server's own ping: answering keeps us connected
                self._send(ws, frame_heartbeat(HEARTBEAT_PONG))
                with self._lock:
                    self._counters["server_pings"] += 1
            elif said == HEARTBEAT_PONG:
                self._ping_sent_at = None
                with self._lock:
                    self._counters["heartbeats_answered"] += 1
            return
        if action != "publish":
            return
        topic = parse_topic(payload.get("topic"))
        if topic is None or topic.project_id != self.project_id:
            return
        method, message = payload.get("method"), payload.get("message")
        if topic.kind == "requests":
            self._on_requests(ws, method, message, frame)
        elif topic.kind == "messages" and topic.request_id is not None:
            self._on_messages(topic.request_id, message, frame)
        elif topic.kind == "request" and topic.request_id is not None:
            self._on_probe(ws, topic.request_id, message, frame)

    def _on_requests(self, ws: ClientConnection, method: Any, message: Any, frame: dict) -> None:
        if isinstance(message, list):  # the snapshot: the open conversations, newest first
            catching_up = self._history_done
            history = not catching_up and not self.include_history
            listed = set()
            for request in reversed(message):  # oldest first, as they happened
                if isinstance(request, dict):
                    rid = self._on_request(ws, request, frame, snapshot=True, history=history)
                    if rid:
                        listed.add(rid)
            if catching_up:
                # Open before the drop, not open now: closed meanwhile. Ask for its state.
                with self._lock:
                    missing = [
                        c.request_id
                        for c in self._conversations.values()
                        if not c.closed and c.request_id not in listed
                    ]
                for rid in missing:
                    topic = topic_request(self.project_id, rid)
                    self._probing.add(topic)
                    self._send(ws, frame_subscribe(topic))
            self._connected()
        elif isinstance(message, dict):
            self._on_request(ws, message, frame, snapshot=False, method=method)

    def _on_request(
        self,
        ws: ClientConnection,
        request: dict,
        frame: dict,
        *,
        snapshot: bool,
        history: bool = False,
        method: Any = None,
    ) -> str | None:
        rid = request.get("request_id")
        if not isinstance(rid, str) or not rid:
            return None
        status = request.get("status") if isinstance(request.get("status"), int) else None
        updated = request.get("updatedAt")
        with self._lock:
            known = self._conversations.get(rid)
            conversation = known or _Conversation(rid)
            changed = known is None or (known.updated_at, known.status) != (updated, status)
            was_closed = conversation.closed
            conversation.status, conversation.updated_at = status, updated
            if conversation.closed:
                conversation.closed_at = conversation.closed_at or time.monotonic()
            else:
                conversation.closed_at = None
            if history:
                conversation.history_until = parse_time(updated)
            self._remember(conversation)
        if changed and not history:
            if known is None and (snapshot or method == "CREATE"):
                name = REQUEST_CREATE
            elif conversation.closed and not was_closed:
                name = REQUEST_CLOSE
            else:
                name = REQUEST_UPDATE
            self._keep(name, request, frame, topic_requests(self.project_id))
        elif history:
            with self._lock:
                self._counters["history_skipped"] += 1
        if not conversation.followed and (
            not conversation.closed or self._within_grace(conversation)
        ):
            self._follow(ws, conversation)
        return rid

    def _on_probe(self, ws: ClientConnection, rid: str, message: Any, frame: dict) -> None:
        """The state of a conversation that closed while the feed was disconnected."""
        topic = topic_request(self.project_id, rid)
        if topic not in self._probing:
            return
        self._probing.discard(topic)
        self._send(ws, frame_unsubscribe(topic))
        self._topics.discard(topic)
        if isinstance(message, dict):
            self._on_request(ws, message, frame, snapshot=False, method="UPDATE")

    def _on_messages(self, rid: str, message: Any, frame: dict) -> None:
        topic = topic_messages(self.project_id, rid)
        with self._lock:
            conversation = self._conversations.get(rid)
            until = conversation.history_until if conversation is not None else None
        if isinstance(message, list):  # the snapshot: the conversation so far, oldest first
            for item in message:
                if not isinstance(item, dict):
                    continue
                created = parse_time(item.get("createdAt"))
                if until is not None and created is not None and created <= until:
                    with self._lock:
                        self._counters["history_skipped"] += 1
                    continue
                self._keep(MESSAGE_CREATE, item, frame, topic)
        elif isinstance(message, dict):
            self._keep(MESSAGE_CREATE, message, frame, topic)

    def _keep(self, name: str, obj: dict, frame: dict, topic: str) -> None:
        payload = frame.get("payload") if isinstance(frame.get("payload"), dict) else {}
        raw = {
            "action": frame.get("action"),
            "payload": {"topic": topic, "method": payload.get("method"), "message": obj},
        }
        self._hub.add(Event(event=name, payload=obj, source="realtime", raw=raw, topic=topic))

    # -- conversations followed ------------------------------------------------------------
    def _follow(self, ws: ClientConnection, conversation: _Conversation) -> None:
        topic = topic_messages(self.project_id, conversation.request_id)
        with self._lock:
            conversation.followed = True
            self._counters["subscriptions"] += 1
        if topic not in self._topics:
            self._topics.add(topic)
            self._send(ws, frame_subscribe(topic))

    def _within_grace(self, conversation: _Conversation | None) -> bool:
        if conversation is None or conversation.closed_at is None:
            return True
        return time.monotonic() - conversation.closed_at < CLOSED_GRACE

    def _drop_closed_conversations(self, ws: ClientConnection) -> None:
        with self._lock:
            done = [
                c
                for c in self._conversations.values()
                if c.followed and c.closed and not self._within_grace(c)
            ]
            for conversation in done:
                conversation.followed = False
        for conversation in done:
            topic = topic_messages(self.project_id, conversation.request_id)
            self._topics.discard(topic)
            self._send(ws, frame_unsubscribe(topic))

    def _follow_asked_conversations(self, ws: ClientConnection) -> None:
        if not self._ready.is_set():
            return  # the first snapshot first: it says which conversations are open
        with self._lock:
            asked, self._follow_asked = self._follow_asked, set()
            conversations = []
            for rid in asked:
                conversation = self._conversations.get(rid)
                if conversation is None:
                    conversation = _Conversation(request_id=rid)
                    self._remember(conversation)
                if conversation.closed:
                    conversation.closed_at = time.monotonic()  # a new grace period from now
                conversations.append(conversation)
        for conversation in conversations:
            if not conversation.followed:
                self._follow(ws, conversation)

    def _remember(self, conversation: _Conversation) -> None:
        """Keep ``conversation`` (caller holds the lock), forgetting the oldest closed ones."""
        self._conversations[conversation.request_id] = conversation
        self._conversations.move_to_end(conversation.request_id)
        if len(self._conversations) > MAX_CONVERSATIONS:
            for rid, old in list(self._conversations.items()):
                if not old.followed:
                    del self._conversations[rid]
                    if len(self._conversations) <= MAX_CONVERSATIONS:
                        break

    # -- state -----------------------------------------------------------------------------
    def _connected(self) -> None:
        with self._lock:
            if self._up_this_run and self._status != "connected":
                self._reconnects += 1
            self._history_done = self._up_this_run = self._caught_up = True
            if self._status != "connected":
                self._status, self._since = "connected", _now()
            self._attempts = 0
        self._ready.set()

    def _set_status(self, status: FeedStatus, *, error: str | None) -> None:
        with self._lock:
            self._status, self._since, self._last_error = status, _now(), error
            self._attempts = 0

    def _fail(self, error: RealtimeError) -> None:
        self._fatal = error
        with self._lock:
            self._status, self._since = "failed", _now()
            self._last_error = error.summary
        logger.warning("realtime feed stopped: %s", error.summary)
        self._stopping.set()
        self._ready.set()  # wakes start(wait=True), which raises the error

    def _wait_ready(self) -> None:
        # Handshake, then the snapshot: each has open_timeout; a little more for the thread.
        if not self._ready.wait(2 * self.open_timeout + 5):
            raise RealtimeUnreachableError(
                f"could not connect to {self.url} in {2 * self.open_timeout + 5:g} s",
                url=self.url,
            )
        if self._fatal is not None:
            raise self._fatal


# -- helpers ---------------------------------------------------------------------------------------
_RETRY_STATUS = frozenset({500, 502, 503, 504})


def _now() -> datetime:
    return datetime.now(UTC)


def _checked_token(token: str | None) -> str:
    """The agent's token, refused here when it cannot work (the real server would hang on a
    visitor's, and say only "401" for an expired one)."""
    if not token or not isinstance(token, str) or not bare_token(token):
        raise RealtimeAuthError(
            "the Realtime API needs an agent's token, and none was given",
            hint="sign in first (agent.sign_in(email, password)) and pass that client, or token=.",
        )
    claims = unverified_claims(token)
    if not claims:
        raise RealtimeAuthError(
            "the token given to the feed is not a JWT",
            hint="use the token from POST /auth/signin (agent.token), 'JWT eyJ...'.",
        )
    if claims.get("sub") == SUBJECT_GUEST:
        raise RealtimeAuthError(
            "the Realtime API needs an agent's token: this one is an anonymous visitor's "
            "(its 'sub' is 'guest')",
            hint=(
                "pass the agent's client (signed in with email and password), not the visitor's; "
                "visitors receive their conversation through Tiledesk's chat widget, not here."
            ),
        )
    expiry = claims.get("exp")
    if isinstance(expiry, int | float) and expiry < time.time():
        when = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%d %H:%M UTC")
        raise RealtimeAuthError(
            f"the agent's token expired on {when}",
            hint="sign in again (agent.sign_in()) and start the feed with the new token.",
        )
    return bare_token(token)


def _with_token(base: str, token: str) -> str:
    """The address with ``?token=JWT%20<jwt>`` (what the dashboard sends; other query kept)."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", with_jwt_prefix(token)))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _without_query_token(base: str) -> str:
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, redact(secret))
    return redact_jwts(text)


class _RedactingLog(logging.LoggerAdapter):
    """The WebSocket library's log, with the token redacted: its debug lines print the request
    line (``GET /?token=...``), and an error may quote the address."""

    def __init__(self, target: logging.Logger, secrets: tuple[str, ...]) -> None:
        super().__init__(target, {})
        self._secrets = secrets

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            elif isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            text += "\n" + logging.Formatter().formatException(exc_info)
        kwargs.pop("stack_info", None)
        self.logger.log(level, "%s", _scrub(text, self._secrets), **kwargs)


def _closed_reason(exc: ConnectionClosed) -> str:
    received = exc.rcvd
    if received is None:
        return "the connection was lost (no close frame)"
    reason = f": {received.reason}" if received.reason else ""
    return f"the server closed the connection (code {received.code}{reason})"


def _explain(exc: Exception, url: str, secrets: tuple[str, ...], timeout: float) -> RealtimeError:
    """One sentence (and a hint) for a failed handshake; never the token."""
    where = url
    host = urlsplit(url).hostname or url
    set_url = (
        "set TILEDESK_REALTIME_URL to your server's Realtime API (Tiledesk cloud: "
        "wss://eu.rtmv3.tiledesk.com/api/; self-hosted behind a proxy: often wss://<host>/ws/; "
        "the sandbox and a plain tiledesk-server: ws://<host>:<port>/)."
    )
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 401:
            return RealtimeAuthError(
                f"{where} refused the token (401 Unauthorized)",
                url=url,
                status=status,
                hint=(
                    "sign in again (tokens expire), with an owner, admin or agent account of "
                    "this server; a token from another Tiledesk is not valid here."
                ),
            )
        if status in _RETRY_STATUS:
            return RealtimeEndpointError(
                f"{where} answered the WebSocket handshake with HTTP {status}: the server (or a "
                "proxy in front of it) is not ready",
                url=url,
                status=status,
                retryable=True,
            )
        return RealtimeEndpointError(
            f"{where} answered the WebSocket handshake with HTTP {status}: this is not the "
            "Realtime API's address",
            url=url,
            status=status,
            hint=set_url,
        )
    if isinstance(exc, InvalidURI):
        return RealtimeEndpointError(
            f"{_scrub(str(exc), secrets)} is not a WebSocket address", url=url, hint=set_url
        )
    if isinstance(exc, ConnectionClosed):
        return RealtimeUnreachableError(
            f"{where} closed the connection during the WebSocket handshake", url=url
        )
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        return RealtimeUnreachableError(
            f"{where} closed the connection during the WebSocket handshake", url=url
        )
    if isinstance(exc, InvalidHandshake):
        return RealtimeEndpointError(
            f"{where} does not speak WebSocket ({_scrub(str(exc), secrets)})",
            url=url,
            hint=set_url,
        )
    if isinstance(exc, socket.gaierror):
        return RealtimeEndpointError(
            f"the host {host!r} of {where} is not known (no DNS answer)",
            url=url,
            hint=(
                "check TILEDESK_API_URL and TILEDESK_REALTIME_URL for a typo, and that this "
                "machine is online; or " + set_url
            ),
            retryable=True,  # once connected, a lost Wi-Fi looks like this: keep trying
        )
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return RealtimeEndpointError(
            f"the TLS handshake with {where} failed ({_scrub(str(exc), secrets)})",
            url=url,
            hint="use wss:// only for servers with a certificate; a local server is ws://.",
        )
    if isinstance(exc, ConnectionRefusedError):
        return RealtimeUnreachableError(
            f"nothing listens at {where} (connection refused)",
            url=url,
            hint=(
                "is the server running? The sandbox: `make sandbox`, or tutorial.start() in a "
                "notebook. Otherwise check the port, or " + set_url
            ),
        )
    if isinstance(exc, TimeoutError):
        return RealtimeUnreachableError(
            f"{where} did not complete the WebSocket handshake in {timeout:g} s",
            url=url,
            hint=(
                "check the address and any proxy or firewall; or " + set_url + " (Tiledesk's "
                "server never answers a visitor's token: the feed needs an agent's.)"
            ),
        )
    if isinstance(exc, OSError):
        return RealtimeUnreachableError(
            f"cannot reach {where}: {_scrub(exc.strerror or str(exc), secrets)}", url=url
        )
    return RealtimeError(
        f"cannot connect to {where}: {type(exc).__name__}: {_scrub(str(exc), secrets)}", url=url
    )


def running_feeds() -> list[RealtimeFeed]:
    """The feeds of this process that are running now."""
    with _RUNNING_LOCK:
        return [feed for feed in _RUNNING.values() if feed.running]


def stop_all_feeds() -> int:
    """Stop every feed of this process; return how many were running."""
    feeds = running_feeds()
    for feed in feeds:
        feed.stop()
    return len(feeds)
