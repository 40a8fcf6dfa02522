"""Events in a JSON Lines file: one line per kept event, appended and flushed; read back later.

A listener with ``store_file=`` appends every event it keeps, so that nothing acknowledged is lost
when the kernel stops; :func:`read_jsonl` reads the file back into
:class:`~tiledesk_tutorial.models.Event` objects. One line is::

    {"received_at": "...", "headers": {...}, "body": {<the delivery as Tiledesk sent it>}}

and, for an event from the Realtime API, also ``"source": "realtime"``, ``"event"``, ``"topic"``
and ``"payload"`` (``body`` is then the whole frame).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from tiledesk_tutorial.models import Event
from tiledesk_tutorial.webhooks import parse_delivery
from tiledesk_tutorial.wire import now, parse_time

__all__ = ["JsonlWriter", "event_from_record", "event_to_record", "iter_jsonl", "read_jsonl"]

logger = logging.getLogger("tiledesk_tutorial.jsonl")


def event_to_record(event: Event) -> dict[str, Any]:
    """A JSON-ready dict for one line: what came (``body``) and when it came in."""
    record: dict[str, Any] = {
        "received_at": event.received_at.isoformat(),
        "headers": dict(event.headers),
        "body": event.raw,
    }
    if event.source != "webhook":
        record.update(
            source=event.source, event=event.event, topic=event.topic, payload=event.payload
        )
    return record


def event_from_record(record: Mapping[str, Any]) -> Event:
    """Rebuild an event from :func:`event_to_record` output.

    Raises:
        ValueError: the record is not one (a webhook body that is no delivery, say).
    """
    received_at = parse_time(record.get("received_at")) or now()
    headers = record.get("headers") if isinstance(record.get("headers"), dict) else {}
    if record.get("source", "webhook") == "webhook":
        return parse_delivery(record.get("body"), headers=headers, received_at=received_at)
    payload = record.get("payload")
    if not isinstance(payload, dict) or not isinstance(record.get("event"), str):
        raise ValueError("a realtime record needs an 'event' and a 'payload' object")
    body = record.get("body")
    return Event(
        event=record["event"],
        payload=payload,
        source="realtime",
        received_at=received_at,
        raw=body if isinstance(body, dict) else {},
        topic=record.get("topic") if isinstance(record.get("topic"), str) else None,
    )


class JsonlWriter:
    """Appends one JSON line per event and flushes it, so that a crash loses nothing kept.

    Args:
        path: the file (created with its folders; an existing file is appended to).
        fsync: also ask the operating system to write it to disk at once (slower; survives a
            power cut, not only a crash of the process).

    Raises:
        OSError: the file cannot be opened for appending.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = self.path.open("a", encoding="utf-8")

    def write(self, event: Event) -> None:
        """Append ``event`` as one line and flush it.

        Raises:
            OSError: the disk refused it; ValueError: the writer was closed.
        """
        record = event_to_record(event)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        try:
            self._handle.write(line + "\n")
        except UnicodeEncodeError:
            # An unpaired surrogate ("\\ud800" in the body: JavaScript strings allow them) has no
            # UTF-8 form; written as an escape, the line is ASCII and reads back the same.
            self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._handle.close()


def read_jsonl(path: str | os.PathLike[str]) -> list[Event]:
    """Read back the events a listener appended to a JSON Lines file (``store_file``).

    Lines that cannot be read (a line cut short when the machine stopped mid-write) are skipped and
    counted in one warning; a missing file gives an empty list.
    """
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[Event]:
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
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                yield event_from_record(record)
            except (ValueError, AttributeError):
                bad.append(number)
    if bad:
        logger.warning("%s: skipped %d unreadable line(s): %s", path, len(bad), bad[:10])
