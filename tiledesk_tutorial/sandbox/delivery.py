"""Webhook delivery: a background worker that empties the outbox, with retries and a history.

Better than the real server, which retries twice and then forgets: every delivery is in the
database before the API call that caused it answers, failed attempts are retried with exponential
backoff (network errors, 429 honouring ``Retry-After``, and 5xx; never other 4xx), every attempt
is recorded for ``/subscriptions/history``, and deliveries still pending when the sandbox stops are
made after it starts again. Delivery is at least once: a receiver may see a retried delivery
twice, which the tutorial's listener recognises by the event and the payload ``_id``.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tiledesk_tutorial.redact import redact, redact_jwts
from tiledesk_tutorial.sandbox.activity import Activity
from tiledesk_tutorial.sandbox.ids import iso, new_object_id
from tiledesk_tutorial.sandbox.sender import DeliveryError, InvalidTarget, Sender
from tiledesk_tutorial.sandbox.service import Delivery
from tiledesk_tutorial.sandbox.store import Store, dumps

log = logging.getLogger("tiledesk_tutorial.sandbox.delivery")

_RESPONSE_BODY_LIMIT = 2048
_HISTORY_LIMIT = 100_000  # delivery_log rows kept; the oldest are pruned beyond this


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed delivery is tried again.

    With the defaults, a delivery is tried 9 times over about two minutes (1, 2, 4, 8, 16, 30,
    30, 30 seconds apart, plus up to 10% jitter), long enough to ride out a laptop's Wi-Fi drop.
    """

    retries: int = 8
    backoff: float = 1.0
    max_backoff: float = 30.0
    connect_timeout: float = 5.0
    read_timeout: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return base + random.uniform(0, base * 0.1)  # noqa: S311 - jitter, not security


@dataclass(frozen=True)
class _Outcome:
    delivery: Delivery
    attempt: int
    status: int | None
    response_headers: dict[str, str]
    response_body: str
    error: str | None
    state: str  # delivered | retrying | failed | rejected
    next_attempt_at: float | None
    at: datetime


class DeliveryWorker:
    """Sends queued deliveries from a few long-lived threads over kept-alive connections.

    With an ``activity`` gauge, a delivery first waits (at most ``give_way`` seconds) for the API
    calls in progress to be answered, unless it is already ``max_lag`` seconds late: a burst of
    calls is answered first and its webhooks follow, and a sustained load shares the CPU.
    """

    def __init__(
        self,
        store: Store,
        *,
        policy: RetryPolicy | None = None,
        origin: str = "http://localhost:3000",
        threads: int = 4,
        activity: Activity | None = None,
        give_way: float = 0.05,
        max_lag: float = 5.0,
    ) -> None:
        self._store = store
        self.policy = policy or RetryPolicy()
        self.origin = origin
        self._activity = activity
        self._give_way = give_way
        self._max_lag = max_lag
        self._thread_count = threads
        self._ready: deque[Delivery] = deque()
        self._later: list[tuple[float, int, Delivery]] = []
        self._tiebreak = itertools.count()
        self._cond = threading.Condition()
        self._outcomes: queue.Queue[_Outcome | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._recorder: threading.Thread | None = None
        self._stopping = False
        self._in_flight = 0
        self._sender = Sender(
            self.policy.connect_timeout, self.policy.read_timeout, _RESPONSE_BODY_LIMIT
        )

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load what is still pending from the database and start the threads."""
        rows = self._store.query_all(
            "SELECT seq, subscription_id, id_project, event, target, secret, body, attempts, "
            "next_attempt_at FROM outbox WHERE state = 'pending' ORDER BY seq"
        )
        if rows:
            log.info("resuming %d pending webhook deliveries", len(rows))
        self.submit([Delivery(*row) for row in rows])
        self._recorder = threading.Thread(
            target=self._record_loop, name="sandbox-delivery-recorder", daemon=True
        )
        self._recorder.start()
        for index in range(self._thread_count):
            thread = threading.Thread(
                target=self._send_loop, name=f"sandbox-delivery-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending; what is not delivered yet stays in the outbox for the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._outcomes.put(None)
        if self._recorder is not None:
            self._recorder.join(max(0.1, deadline - time.monotonic()))

    def submit(self, deliveries: list[Delivery]) -> None:
        """Queue deliveries that were just committed to the outbox."""
        if not deliveries:
            return
        now = time.time()
        with self._cond:
            for delivery in deliveries:
                if delivery.next_attempt_at <= now:
                    self._ready.append(delivery)
                else:
                    self._schedule(delivery)
            self._cond.notify(len(deliveries))

    def pending_count(self) -> int:
        """Deliveries queued, waiting for a retry, or being sent now."""
        with self._cond:
            return len(self._ready) + len(self._later) + self._in_flight

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued or in flight (retries scheduled later count as queued)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending_count() == 0 and self._outcomes.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    # -------------------------------------------------------------------------------- sending

    def _schedule(self, delivery: Delivery) -> None:
        heapq.heappush(self._later, (delivery.next_attempt_at, next(self._tiebreak), delivery))

    def _next(self) -> Delivery | None:
        with self._cond:
            while not self._stopping:
                now = time.time()
                while self._later and self._later[0][0] <= now:
                    self._ready.append(heapq.heappop(self._later)[2])
                if self._ready:
                    self._in_flight += 1
                    return self._ready.popleft()
                wait = self._later[0][0] - now if self._later else None
                self._cond.wait(wait)
            return None

    def _send_loop(self) -> None:
        while (delivery := self._next()) is not None:
            if (
                self._activity is not None
                and time.time() - delivery.next_attempt_at < self._max_lag
            ):
                # A burst of calls is answered first: each delivery waits for a quiet moment (at
                # most ``give_way``), but never once it is ``max_lag`` late. Under a sustained
                # load, deliveries then share the CPU with the calls, so they cannot pile up.
                self._activity.wait_quiet(self._give_way)
            try:
                outcome = self._attempt(delivery)
            except Exception as exc:  # never let one delivery kill the worker
                log.exception("unexpected error delivering webhook %s", delivery.seq)
                outcome = self._failure(delivery, None, {}, "", f"internal error: {exc}", None)
            self._outcomes.put(outcome)
            with self._cond:
                self._in_flight -= 1
                if outcome.state == "retrying":
                    self._schedule(
                        replace(
                            delivery,
                            attempts=outcome.attempt,
                            next_attempt_at=outcome.next_attempt_at or time.time(),
                        )
                    )
                    self._cond.notify()
        self._sender.close()

    def _attempt(self, delivery: Delivery) -> _Outcome:
        headers = {
            "Content-Type": "application/json",
            "x-hook-secret": delivery.secret,
            "User-Agent": "tiledesk-webhooks",
            "Origin": self.origin,
            "accept": "application/json",
        }
        try:
            answer = self._sender.post(delivery.target, delivery.body.encode("utf-8"), headers)
        except DeliveryError as exc:
            return self._failure(delivery, None, {}, "", str(exc), None)
        except InvalidTarget as exc:
            return self._final(delivery, None, {}, "", f"invalid target: {exc}", "rejected")
        status = answer.status
        response_headers = answer.headers
        text = answer.body.decode("utf-8", "replace")
        if status == 429 or status >= 500:
            retry_after = _retry_after(response_headers) if status == 429 else None
            return self._failure(delivery, status, response_headers, text, None, retry_after)
        state = "delivered" if status < 400 else "rejected"
        return self._final(delivery, status, response_headers, text, None, state)

    def _failure(
        self,
        delivery: Delivery,
        status: int | None,
        headers: dict[str, str],
        text: str,
        error: str | None,
        retry_after: float | None,
    ) -> _Outcome:
        attempt = delivery.attempts + 1
        if attempt > self.policy.retries:
            return self._final(delivery, status, headers, text, error, "failed")
        next_at = time.time() + self.policy.delay(attempt, retry_after)
        return _Outcome(
            delivery, attempt, status, headers, text, error, "retrying", next_at, datetime.now(UTC)
        )

    def _final(
        self,
        delivery: Delivery,
        status: int | None,
        headers: dict[str, str],
        text: str,
        error: str | None,
        state: str,
    ) -> _Outcome:
        attempt = delivery.attempts + 1
        return _Outcome(
            delivery, attempt, status, headers, text, error, state, None, datetime.now(UTC)
        )

    # ------------------------------------------------------------------------------ recording

    def _record_loop(self) -> None:
        """Write outcomes to the database in small batches: one transaction for many attempts."""
        stop = False
        writes = 0
        while not stop:
            first = self._outcomes.get()
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._outcomes.get(timeout=0.005))
                except queue.Empty:
                    break
            stop = any(item is None for item in batch)
            outcomes = [item for item in batch if item is not None]
            try:
                if outcomes:
                    self._write(outcomes)
                    writes += len(outcomes)
                    if writes >= 5_000:
                        writes = 0
                        self._prune()
            except Exception:
                log.exception("could not record %d webhook delivery attempts", len(outcomes))
            finally:
                for _ in batch:
                    self._outcomes.task_done()

    def _write(self, outcomes: list[_Outcome]) -> None:
        with self._store.transaction() as conn:
            for outcome in outcomes:
                delivery = outcome.delivery
                if outcome.state == "delivered":
                    conn.execute("DELETE FROM outbox WHERE seq = ?", (delivery.seq,))
                else:
                    conn.execute(
                        "UPDATE outbox SET attempts = ?, next_attempt_at = ?, state = ? "
                        "WHERE seq = ?",
                        (
                            outcome.attempt,
                            outcome.next_attempt_at or 0,
                            "pending" if outcome.state == "retrying" else outcome.state,
                            delivery.seq,
                        ),
                    )
                conn.execute(
                    "INSERT INTO delivery_log (id_project, doc) VALUES (?, ?)",
                    (delivery.id_project, dumps(self._history_entry(outcome))),
                )

    def _history_entry(self, outcome: _Outcome) -> dict[str, Any]:
        delivery = outcome.delivery
        stamp = iso(outcome.at)
        request_headers = {
            "Content-Type": "application/json",
            "x-hook-secret": redact(delivery.secret),
            "User-Agent": "tiledesk-webhooks",
            "Origin": self.origin,
        }
        response = {
            "statusCode": outcome.status,
            "headers": outcome.response_headers,
            "request": {"uri": delivery.target, "method": "POST", "headers": request_headers},
        }
        return {
            "_id": new_object_id(),
            "event": delivery.event,
            "target": delivery.target,
            "response": json.dumps(response),
            "body": outcome.response_body,
            "jsonRequest": redact_jwts(delivery.body),
            "err": outcome.error,
            "id_project": delivery.id_project,
            "id_subscription": delivery.subscription_id,
            "attempt": outcome.attempt,
            "statusCode": outcome.status,
            "outcome": outcome.state,
            "next_attempt_at": (
                iso(datetime.fromtimestamp(outcome.next_attempt_at, UTC))
                if outcome.next_attempt_at
                else None
            ),
            "createdAt": stamp,
            "updatedAt": stamp,
            "__v": 0,
        }

    def _prune(self) -> None:
        with self._store.transaction() as conn:
            conn.execute(
                "DELETE FROM delivery_log WHERE seq <= (SELECT MAX(seq) FROM delivery_log) - ?",
                (_HISTORY_LIMIT,),
            )


def _retry_after(headers: dict[str, str]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
