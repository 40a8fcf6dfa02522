"""Relay live events to your own webhook receiver, in Tiledesk's webhook format, with no tunnel.

    forwarder = WebhookForwarder("http://127.0.0.1:5000/webhook", project_id=pid).start()
    feed.on_event(forwarder.submit)      # each message the realtime feed receives is POSTed
    print(forwarder.secret)              # what your receiver checks in x-hook-secret

What ``tiledesk-tutorial listen --forward-to URL`` runs, like the Stripe CLI's ``stripe listen
--forward-to``: you develop a receiver (Flask, FastAPI...) on your laptop against a real Tiledesk,
which could never reach ``localhost`` itself. Each POST is what Tiledesk would have sent:

- body ``{"timestamp": <epoch ms>, "payload": <the message or request>, "hook": <subscription>,
  "token": <JWT>}``; the ``hook`` stands for one subscription per event kind, made when the
  forwarder starts (the same ``_id`` for every delivery, as with a real subscription);
- headers ``Content-Type``, ``x-hook-secret`` (the secret), ``User-Agent: tiledesk-webhooks``,
  ``Origin`` (the Tiledesk server), ``accept``;
- ``token`` signed with the secret exactly as Tiledesk signs it (HS256, the hook's fields plus
  ``iat``, ``aud`` = ``https://tiledesk.com/subscriptions/<hook _id>``, ``iss``, ``sub``), so the
  receiver's verification code is the one it will run in production.

The secret is made at start (a UUID, like Tiledesk's) and shown once, or given
(``TILEDESK_FORWARD_SECRET``) and then never shown. Each event is posted once, in order, from one
thread over a kept-alive connection. A receiver that is down, or answers 5xx or 429, gets the same
delivery again with backoff (1, 2, 4... up to 30 s, with jitter; ``Retry-After`` honoured) until it
accepts it; another 4xx answer is the receiver's verdict and is reported, not repeated. Nothing is
dropped silently: every failure is reported, and what is still pending at :meth:`stop` is listed.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from tiledesk_tutorial.models import MESSAGE_CREATE, Event
from tiledesk_tutorial.redact import redact
from tiledesk_tutorial.webhooks import make_hook, sign_delivery
from tiledesk_tutorial.wire import (
    epoch_ms,
    now,
    retry_after_seconds,
    webhook_headers,
)

__all__ = ["ForwardResult", "WebhookForwarder"]

logger = logging.getLogger("tiledesk_tutorial.forwarder")

#: The pause after the first failed attempt, and the longest one, in seconds.
FIRST_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 30.0
#: Events waiting to be forwarded, at most; beyond that the oldest is dropped, and reported.
MAX_PENDING = 10_000


@dataclass(frozen=True)
class ForwardResult:
    """What happened to one attempt at forwarding an event.

    Attributes:
        event: the event forwarded.
        outcome: ``"forwarded"`` (2xx), ``"retrying"`` (network error, 5xx, 429), ``"refused"``
            (another answer: not repeated) or ``"dropped"`` (the queue was full).
        status: the receiver's HTTP status, or ``None`` when none came.
        error: the network error, or the answer's first characters, or ``None``.
        attempt: which attempt this was (1 for the first).
        retry_in: seconds until the next attempt, when retrying.
        elapsed_ms: how long the attempt took.
    """

    event: Event
    outcome: str
    status: int | None = None
    error: str | None = None
    attempt: int = 1
    retry_in: float | None = None
    elapsed_ms: float = 0.0

    def summary(self, target: str) -> str:
        """One line for a terminal: ``[200] POST http://... message.create 6b10...``."""
        what = f"{self.event.event} {self.event.message_id or ''}".rstrip()
        code = f"[{self.status}]" if self.status is not None else "[no answer]"
        if self.outcome == "forwarded":
            return f"{code} POST {target} {what} ({self.elapsed_ms:.0f} ms)"
        if self.outcome == "retrying":
            why = f": {self.error}" if self.error else ""
            return (
                f"{code} POST {target} {what}{why}; attempt {self.attempt} failed, trying again "
                f"in {self.retry_in:.1f} s"
            )
        if self.outcome == "refused":
            why = f": {self.error}" if self.error else ""
            return f"{code} POST {target} {what} refused by the receiver{why} (not repeated)"
        return f"{self.outcome}: {what} was not forwarded to {target}"


class WebhookForwarder:
    """Posts events to ``target`` exactly as Tiledesk's webhooks would, from a background thread.

    Args:
        target: the receiver's URL, e.g. ``http://127.0.0.1:5000/webhook``.
        project_id: the project the events belong to (it is in each ``hook``).
        secret: the subscription secret to send and sign with; default: a new one (a UUID),
            readable once in :attr:`secret` and flagged by :attr:`secret_generated`.
        origin: the ``Origin`` header: the Tiledesk server's origin (``http://host:port``).
        created_by: the ``createdBy`` of the hook (the agent's user id), if known.
        events: the event kinds to forward (default: ``message.create`` only).
        report: called with a :class:`ForwardResult` after each attempt (on the forwarder's
            thread); default: logged.
        timeout: seconds to connect and to wait for the answer.
        first_retry_delay, max_retry_delay: the backoff between attempts.
        max_pending: events kept waiting at most (the oldest is dropped, and reported, beyond).
    """

    def __init__(
        self,
        target: str,
        *,
        project_id: str,
        secret: str | None = None,
        origin: str = "http://localhost:3000",
        created_by: str | None = None,
        events: Iterable[str] = (MESSAGE_CREATE,),
        report: Callable[[ForwardResult], Any] | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        first_retry_delay: float = FIRST_RETRY_DELAY,
        max_retry_delay: float = MAX_RETRY_DELAY,
        max_pending: int = MAX_PENDING,
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"--forward-to needs a full http:// or https:// URL, such as "
                f"http://127.0.0.1:5000/webhook, not {target!r}"
            )
        if secret is not None and not secret.strip():
            raise ValueError("the forwarding secret is empty: leave it unset to get a new one")
        self.target = target
        self.project_id = project_id
        self.secret_generated = secret is None
        self._secret = secret.strip() if secret is not None else str(uuid.uuid4())
        self.origin = origin
        self.events = tuple(events)
        self.timeout = timeout
        self.first_retry_delay = first_retry_delay
        self.max_retry_delay = max(max_retry_delay, first_retry_delay)
        self.max_pending = max_pending
        self._report = report or (lambda result: logger.info("%s", result.summary(self.target)))
        # One subscription per kind of event, as Tiledesk has (its _id is the token's audience).
        self.hooks: dict[str, dict[str, Any]] = {
            kind: make_hook(kind, target=target, project_id=project_id, created_by=created_by)
            for kind in self.events
        }
        self._tokens = {
            kind: sign_delivery(hook, self._secret) for kind, hook in self.hooks.items()
        }
        self._pending: deque[Event] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._session: requests.Session | None = None
        self.forwarded = 0
        self.refused = 0
        self.failed_attempts = 0
        self.dropped = 0

    @property
    def secret(self) -> str:
        """The ``x-hook-secret`` every delivery carries (keep it private)."""
        return self._secret

    @property
    def pending(self) -> int:
        """Events waiting to be forwarded (including the one being tried)."""
        with self._cond:
            return len(self._pending)

    @property
    def running(self) -> bool:
        """Whether the forwarder's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, event: Event) -> bool:
        """Queue ``event`` for forwarding if its kind is forwarded; return whether it was queued.

        Usable as an ``on_event`` callback. Never blocks.
        """
        if event.event not in self.hooks:
            return False
        dropped = None
        with self._cond:
            if len(self._pending) >= self.max_pending:
                dropped = self._pending.popleft() if len(self._pending) > 1 else None
            self._pending.append(event)
            if dropped is not None:
                self.dropped += 1
            self._cond.notify_all()
        if dropped is not None:
            self._report(ForwardResult(dropped, "dropped", error="the forward queue was full"))
        return True

    def delivery(self, event: Event) -> tuple[bytes, dict[str, str]]:
        """The body and headers that forwarding ``event`` posts (what Tiledesk would send)."""
        body = {
            "timestamp": epoch_ms(now()),
            "payload": event.payload,
            "hook": self.hooks[event.event],
            "token": self._tokens[event.event],
        }
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return data, webhook_headers(self._secret, self.origin)

    def start(self) -> WebhookForwarder:
        """Start the forwarding thread (idempotent); return the forwarder."""
        with self._cond:
            if self.running:
                return self
            self._stopping = False
            self._session = requests.Session()
            self._thread = threading.Thread(
                target=self._run, name="tiledesk-forwarder", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> list[Event]:
        """Stop after at most ``timeout`` seconds more of trying; return the events that were
        never forwarded (the caller reports them: nothing is dropped silently)."""
        with self._cond:
            deadline = time.monotonic() + timeout
            while self._pending and self.running and time.monotonic() < deadline:
                self._cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(self.timeout[0] + self.timeout[1] + 1)
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
        if self._session is not None:
            self._session.close()
        return left

    def __repr__(self) -> str:
        return (
            f"<WebhookForwarder to {self.target} secret={redact(self._secret)} "
            f"forwarded={self.forwarded} pending={self.pending}>"
        )

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        delay = self.first_retry_delay
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                event = self._pending[0]
            attempt += 1
            result = self._attempt(event, attempt, delay)
            with self._cond:
                if result.outcome != "retrying":
                    if self._pending and self._pending[0] is event:
                        self._pending.popleft()
                    attempt, delay = 0, self.first_retry_delay
                    if result.outcome == "forwarded":
                        self.forwarded += 1
                    else:
                        self.refused += 1
                else:
                    self.failed_attempts += 1
                    delay = min(delay * 2, self.max_retry_delay)
                self._cond.notify_all()
            self._report(result)
            if result.outcome == "retrying":
                with self._cond:
                    end = time.monotonic() + (result.retry_in or 0)
                    while not self._stopping and time.monotonic() < end:
                        self._cond.wait(end - time.monotonic())
                    if self._stopping:
                        return

    def _attempt(self, event: Event, attempt: int, delay: float) -> ForwardResult:
        data, headers = self.delivery(event)
        started = time.perf_counter()
        assert self._session is not None
        try:
            answer = self._session.post(
                self.target,
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            elapsed = (time.perf_counter() - started) * 1000
            return ForwardResult(
                event,
                "retrying",
                error=_network_error(exc),
                attempt=attempt,
                retry_in=_jittered(delay),
                elapsed_ms=elapsed,
            )
        elapsed = (time.perf_counter() - started) * 1000
        status = answer.status_code
        if 200 <= status < 300:
            return ForwardResult(
                event, "forwarded", status=status, attempt=attempt, elapsed_ms=elapsed
            )
        text = answer.text.strip().replace("\n", " ")[:120] or None
        if status == 429 or status >= 500:
            wait = retry_after_seconds(answer.headers) if status == 429 else None
            wait = min(wait, self.max_retry_delay) if wait is not None else _jittered(delay)
            return ForwardResult(
                event,
                "retrying",
                status=status,
                error=text,
                attempt=attempt,
                retry_in=wait,
                elapsed_ms=elapsed,
            )
        return ForwardResult(
            event, "refused", status=status, error=text, attempt=attempt, elapsed_ms=elapsed
        )


def _jittered(delay: float) -> float:
    return delay + random.uniform(0, delay * 0.1)  # noqa: S311 (jitter, not security)


def _network_error(exc: requests.RequestException) -> str:
    text = str(exc)
    if isinstance(exc, requests.ConnectionError) and "refused" in text.lower():
        return "connection refused (is your receiver running?)"
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    return f"{type(exc).__name__}: {text[:120]}"
