"""Every request that reached the webhook listener, kept for the inspector: bounded, secrets hidden.

Like ngrok's inspector or the Stripe CLI's event log, the listener remembers each request it was
sent, whatever it answered: a delivery it kept, a retry it recognised as a duplicate, or a request
it refused (and why). The :class:`~tiledesk_tutorial.inspector.DeliveryInspector` widget shows
them, newest first, and replays the accepted ones.

    record = listener.deliveries[0]        # the newest request
    record.verdict, record.status, record.reason
    print(record.body_text())              # the body, pretty-printed, tokens hidden
    listener.replay(record)                # run the on_event callbacks again
    listener.replay_to(record, "http://127.0.0.1:5000/webhook")   # POST it to your own handler

Memory is bounded twice: at most ``max_records`` requests, and at most ``max_bytes`` of bodies in
all (the oldest records go first). A refused request keeps only the first 64 KiB of its body: it
can be read, never replayed. Secrets never show: the ``x-hook-secret`` header (and any
``Authorization`` or cookie) is redacted in :attr:`DeliveryRecord.headers`, JWTs are redacted in
:meth:`DeliveryRecord.body_text`, and the record's ``repr`` leaves the body out. An accepted
delivery keeps its secret (one the listener was given already) apart, so that a replay to your own
handler carries the ``x-hook-secret`` it checks.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from tiledesk_tutorial.errors import InvalidInputError
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.redact import redact, redact_jwts
from tiledesk_tutorial.wire import SECRET_HEADER

__all__ = [
    "MAX_RECORDS",
    "MAX_RECORD_BYTES",
    "DeliveryLog",
    "DeliveryRecord",
    "Verdict",
]

#: What the listener did with a request: kept a new event, dropped a repeat, refused it, or
#: answered the status page (a ``GET``).
Verdict = Literal["kept", "duplicate", "refused", "status"]

#: How many requests a listener remembers by default, and how many bytes of bodies in all.
MAX_RECORDS = 200
MAX_RECORD_BYTES = 16 * 1024 * 1024
#: A refused request keeps this much of its body (enough to see what was wrong).
REFUSED_BODY_BYTES = 64 * 1024

#: Header values that are secrets: shown redacted, never in full.
SECRET_HEADERS = frozenset({SECRET_HEADER, "authorization", "proxy-authorization", "cookie"})
#: Headers a replay does not copy: the transport sets them for the new request.
_TRANSPORT_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


@dataclass(frozen=True, eq=False)
class DeliveryRecord:
    """One request that reached the listener, and what the listener did with it.

    Attributes:
        number: its place in the listener's log (1 for the first request since it was made).
        received_at: when it arrived (UTC).
        method, path, remote: the request line's method and path, and the sender's address.
        headers: the request's headers as ``(name, value)`` pairs, secrets redacted.
        body: the body as received (a refused request: its first 64 KiB); not in the ``repr``.
        body_size: how many bytes the body had.
        status: what the listener answered (200, 401, 404...).
        verdict: ``"kept"``, ``"duplicate"``, ``"refused"`` or ``"status"`` (a ``GET``).
        reason: why it was refused (the listener's ``{"error": ...}``), else ``None``.
        event: the delivery as an :class:`~tiledesk_tutorial.models.Event`, for an accepted one.
    """

    number: int
    received_at: datetime
    method: str
    path: str
    remote: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)
    body_size: int
    status: int
    verdict: Verdict
    reason: str | None = None
    event: Event | None = field(default=None, repr=False)
    #: The accepted delivery's x-hook-secret, for a replay to a handler that checks it.
    replay_secret: str | None = field(default=None, repr=False)

    @property
    def replayable(self) -> bool:
        """Whether it can be replayed: a verified delivery (kept, or recognised as a repeat)."""
        return self.verdict in ("kept", "duplicate") and self.event is not None

    @property
    def body_truncated(self) -> bool:
        """Whether only the start of the body was kept (a refused request's long body)."""
        return len(self.body) < self.body_size

    def header(self, name: str) -> str | None:
        """One header's (redacted) value, by case-insensitive name, or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def body_text(self, *, indent: int = 2) -> str:
        """The body to read: JSON pretty-printed, anything else as text; JWTs redacted."""
        text = self.body.decode("utf-8", "replace")
        with contextlib.suppress(ValueError, RecursionError):
            text = json.dumps(json.loads(text), indent=indent, ensure_ascii=False)
        if self.body_truncated:
            text += f"\n… ({self.body_size} bytes in all; the first {len(self.body)} are kept)"
        return redact_jwts(text)

    def replay_headers(self) -> dict[str, str]:
        """The headers to POST it again with: as received, the real secret put back."""
        headers = {k: v for k, v in self.headers if k.lower() not in _TRANSPORT_HEADERS}
        for name in list(headers):
            if name.lower() in SECRET_HEADERS:
                del headers[name]
        if self.replay_secret is not None:
            headers[SECRET_HEADER] = self.replay_secret
        headers.setdefault("Content-Type", "application/json")
        return headers

    def summary(self) -> str:
        """One line: number, local time, verdict, status, event and what it carried."""
        clock = self.received_at.astimezone().strftime("%H:%M:%S")
        parts = [f"#{self.number}", clock, self.verdict, str(self.status)]
        if self.event is not None:
            parts.append(self.event.summary())
        elif self.reason:
            parts.append(f"{self.method} {self.path}: {self.reason}")
        else:
            parts.append(f"{self.method} {self.path}")
        return " ".join(parts)


def hide_secrets(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``(name, value)`` pairs with every secret header's value redacted."""
    return tuple(
        (name, redact(value) if name.lower() in SECRET_HEADERS else value)
        for name, value in headers
    )


class DeliveryLog:
    """The listener's bounded, thread-safe log of :class:`DeliveryRecord`, newest first.

    Args:
        max_records: how many of the newest requests to keep (at least 1).
        max_bytes: how many bytes of bodies to keep in all; the oldest records go first (the
            newest one is always kept).
    """

    def __init__(self, max_records: int = MAX_RECORDS, max_bytes: int = MAX_RECORD_BYTES) -> None:
        for name, value in (("max_records", max_records), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a whole number of 1 or more: {value!r}")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._records: deque[DeliveryRecord] = deque()
        self._bytes = 0
        self._number = 0
        self._changes = 0
        self._cond = threading.Condition()
        self.dropped = 0

    def record(
        self,
        *,
        received_at: datetime,
        method: str,
        path: str,
        remote: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        status: int,
        verdict: Verdict,
        reason: str | None = None,
        event: Event | None = None,
    ) -> DeliveryRecord:
        """Keep one request (its secret headers redacted) and return its record."""
        raw_headers = tuple(headers)
        secret = None
        if verdict in ("kept", "duplicate"):
            secret = next((v for k, v in raw_headers if k.lower() == SECRET_HEADER), None)
        size = len(body)
        if verdict not in ("kept", "duplicate"):
            body = body[:REFUSED_BODY_BYTES]
        with self._cond:
            self._number += 1
            entry = DeliveryRecord(
                number=self._number,
                received_at=received_at,
                method=method,
                path=path,
                remote=remote,
                headers=hide_secrets(raw_headers),
                body=bytes(body),
                body_size=size,
                status=status,
                verdict=verdict,
                reason=reason,
                event=event,
                replay_secret=secret,
            )
            self._records.append(entry)
            self._bytes += len(entry.body)
            while len(self._records) > 1 and (
                len(self._records) > self.max_records or self._bytes > self.max_bytes
            ):
                self._bytes -= len(self._records.popleft().body)
                self.dropped += 1
            self._changes += 1
            self._cond.notify_all()
        return entry

    def records(self) -> list[DeliveryRecord]:
        """The kept records, newest first (a new list)."""
        with self._cond:
            return list(reversed(self._records))

    def get(self, number: int) -> DeliveryRecord:
        """The record with this number; a clear error when it is unknown or no longer kept."""
        with self._cond:
            for entry in self._records:
                if entry.number == number:
                    return entry
            newest = self._number
            oldest = self._records[0].number if self._records else None
        if isinstance(number, int) and oldest is not None and 0 < number < oldest:
            raise InvalidInputError(
                f"request #{number} is no longer kept: the listener keeps the last "
                f"{self.max_records} requests (#{oldest} to #{newest} now)."
            )
        raise InvalidInputError(
            f"no request #{number!r}: the listener has received {newest} request(s)."
        )

    def counts(self) -> dict[str, int]:
        """How many kept records have each verdict."""
        counts = {"kept": 0, "duplicate": 0, "refused": 0, "status": 0}
        with self._cond:
            for entry in self._records:
                counts[entry.verdict] += 1
        return counts

    @property
    def bytes(self) -> int:
        """Bytes of bodies kept now."""
        with self._cond:
            return self._bytes

    @property
    def received(self) -> int:
        """How many requests were recorded since the log was made (kept or not)."""
        with self._cond:
            return self._number

    @property
    def version(self) -> int:
        """A counter that grows with each change (a request recorded, the log cleared)."""
        with self._cond:
            return self._changes

    def wait_newer(self, version: int, timeout: float) -> int:
        """Wait until a record newer than ``version`` comes, or ``timeout`` seconds pass; return
        the current :attr:`version` (a view redraws when it changed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._changes == version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._changes

    def wait_for(
        self, predicate: Callable[[DeliveryRecord], bool] | None, timeout: float
    ) -> DeliveryRecord | None:
        """The newest record matching ``predicate`` (any when ``None``), as soon as there is one;
        ``None`` after ``timeout`` seconds. The predicate runs under the log's lock."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for entry in reversed(self._records):
                    if predicate is None or predicate(entry):
                        return entry
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def clear(self) -> None:
        """Forget every record (the numbering goes on)."""
        with self._cond:
            self._records.clear()
            self._bytes = 0
            self._changes += 1
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._records)

    def __repr__(self) -> str:
        return f"<DeliveryLog {len(self)} of the last {self.max_records} request(s)>"
