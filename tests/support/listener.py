"""Helpers for the listener, events and tunnel tests: recorded deliveries, posting, threads."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

DATA = Path(__file__).resolve().parents[1] / "transcripts"
# Every webhook delivery of the tutorial flow, recorded from a real Tiledesk 2.19.16.
TRANSCRIPT = DATA / "15-webhook-deliveries.txt"
# Hop-by-hop and length headers are the transport's business, not the delivery's.
_TRANSPORT_HEADERS = {"host", "content-length", "connection"}


@dataclass(frozen=True)
class RecordedDelivery:
    """One delivery from the transcript: the headers the server sent and the body it POSTed."""

    headers: dict[str, str]
    body: dict[str, Any]

    def data(self) -> bytes:
        return json.dumps(self.body).encode()

    @property
    def secret(self) -> str:
        return self.headers["x-hook-secret"]


def recorded_deliveries() -> list[RecordedDelivery]:
    """Parse transcript 15 into deliveries (in the order the server sent them)."""
    deliveries = []
    for block in TRANSCRIPT.read_text(encoding="utf-8").split("\n=== ")[0:]:
        block = block.removeprefix("=== ")
        head, _, body = block.partition("\n\n")
        lines = head.splitlines()[1:]  # the first line is "<time> POST /hook HTTP/1.1"
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            if name.lower() not in _TRANSPORT_HEADERS:
                headers[name] = value.strip()
        deliveries.append(RecordedDelivery(headers=headers, body=json.loads(body)))
    return deliveries


def post(
    url: str,
    data: bytes | str,
    headers: dict[str, str] | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST like the Tiledesk server does, with a timeout so that a hung server fails the test."""
    sender = session or requests
    return sender.post(url, data=data, headers=headers or {}, timeout=10)


def listener_threads() -> list[threading.Thread]:
    """The threads a listener starts (server and callback worker), still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("tiledesk-listener")]
