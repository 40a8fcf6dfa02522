"""Identifiers and timestamps in the formats the real Tiledesk server uses."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
import uuid
from datetime import UTC, datetime

_OBJECT_ID_RE = re.compile(r"^[0-9a-fA-F]{24}$")
_PROCESS_RANDOM = os.urandom(5)
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_counter_lock = threading.Lock()


def new_object_id() -> str:
    """Return a new MongoDB-style ObjectId: 4 bytes of time, 5 random bytes, a 3-byte counter."""
    with _counter_lock:
        count = next(_counter) & 0xFFFFFF
    return (int(time.time()).to_bytes(4, "big") + _PROCESS_RANDOM + count.to_bytes(3, "big")).hex()


def is_object_id(value: object) -> bool:
    """True when ``value`` is a string of exactly 24 hexadecimal characters."""
    return isinstance(value, str) and bool(_OBJECT_ID_RE.match(value))


def new_uuid() -> str:
    """A random UUIDv4 with dashes, as Tiledesk uses for anonymous users and secrets."""
    return str(uuid.uuid4())


def now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Format a time as the server does: ``2026-11-25T07:39:56.340Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_iso(text: str) -> datetime:
    """Parse a timestamp written by :func:`iso`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as in a webhook's ``timestamp``."""
    return int(moment.timestamp() * 1000)
