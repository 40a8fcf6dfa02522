"""uvicorn's HTTP and WebSocket protocols with the limits a workshop network needs.

uvicorn lets a server pass its own protocol classes (``Config(http=..., ws=...)``); these two add
what it lacks:

- a request head (request line and headers) larger than :data:`HEADER_LIMIT` is answered
  ``431`` as soon as it crosses the limit, never read whole (Node, under Tiledesk, does the same at
  16 KB);
- a connection must send a whole request head within ``head_timeout`` seconds of opening (or of
  starting its next request), otherwise it is closed (``408`` if it had started one): a room of
  idle or slow half-open connections costs a few file descriptors for a few seconds, and never
  stops the sandbox answering anyone else, since there is no pool of workers to exhaust;
- a WebSocket the Realtime API gives up on (a client that does not read, or stays silent) is
  dropped at once, without waiting to flush frames the client will never read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tiledesk_tutorial.sandbox.realtime import TERMINATE

#: Bytes of a request's line and headers at most: Node's default ``--max-http-header-size``.
HEADER_LIMIT = 16 * 1024
#: Seconds a client has to send a whole request head.
HEAD_TIMEOUT = 10.0


def _plain_answer(status: int, reason: str) -> bytes:
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class SandboxHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a bounded request head and a deadline to send it."""

    head_timeout: float = HEAD_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._head_parsed = 0
        self._head_started = False
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._reading_head and not self._refused and self.parser is not None:
            # Counted after parsing, so that a chunk that ends one head and starts a body does not
            # count its body; llhttp keeps at most one chunk (<= 256 KB) beyond the limit.
            self._head_bytes += len(data)
            if self._head_bytes > HEADER_LIMIT:
                self._refuse(431, "Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_started = True
        self._head_bytes = 0
        self._head_parsed = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_parsed += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_started = False
        self._cancel_head_timer()
        if self._head_parsed > HEADER_LIMIT:  # a whole head that came in one piece
            self._refuse(431, "Request Header Fields Too Large")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._reading_head = True
        self._head_bytes = 0

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self._head_started:
            self._refuse(408, "Request Timeout")
        elif self.cycle is None or self.cycle.response_complete:
            # Never started a request: close quietly. (Between two requests of a kept-alive
            # connection, uvicorn's own keep-alive timeout closes it first.)
            self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        self._refused = True
        self._cancel_head_timer()
        self.transport.write(_plain_answer(status, reason))
        self.transport.close()


class SandboxWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol; drops the connection at once when the application asks."""

    async def run_asgi(self) -> None:
        await super().run_asgi()
        scope = getattr(self, "scope", None)
        if scope is not None and scope.get(TERMINATE):
            self.transport.abort()
