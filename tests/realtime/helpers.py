"""Helpers for the realtime tests: a webhook receiver that records what it gets."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response


@dataclass
class Received:
    """One POST the receiver got: its headers (lower-case names) and its JSON body."""

    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A local webhook receiver (a real HTTP server on a free port).

    ``answers`` is a list of statuses to answer in turn (then 200), e.g. ``[503, 503]``;
    ``retry_after`` adds that header to 429/503 answers.
    """

    url: str = ""
    answers: list[int] = field(default_factory=list)
    retry_after: str | None = None
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        body = json.loads(request.get_data() or b"null")
        with self._cond:
            self.attempts += 1
            status = self.answers.pop(0) if self.answers else 200
            if status == 200:
                headers = {k.lower(): v for k, v in request.headers.items()}
                self.received.append(Received(headers, body))
            self._cond.notify_all()
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return Response("ok" if status == 200 else "try later", status, headers)(
            environ, start_response
        )

    def wait(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The deliveries accepted, once there are ``count`` of them (fails after ``timeout``)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.received) >= count, timeout)
            assert ok, f"the receiver got {len(self.received)} of {count} deliveries"
            return list(self.received)

    def wait_attempts(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` POSTs came in, accepted or not."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.attempts >= count, timeout), self.attempts


class Quiet(WSGIRequestHandler):
    """werkzeug's handler without the access log."""

    def log_request(self, *args: Any) -> None:
        pass
