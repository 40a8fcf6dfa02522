"""The few ASGI pieces the sandbox's HTTP layer needs: a request, a response, bodies within a limit.

Plain ASGI rather than Starlette: on this machine Starlette's request and routing layer adds about
0.05 ms to a call (0.30 against 0.25 ms for a do-nothing POST round trip over uvicorn and
httptools), a fifth of the floor the benchmarks measure, for nothing the sandbox uses.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from tiledesk_tutorial.sandbox.errors import ApiError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Tiledesk's JSON_BODY_LIMIT default, "500KB"; it holds for chunked bodies too.
BODY_LIMIT = 500 * 1024


class Request:
    """One HTTP request: method, path (without the API prefix), headers, query, and its body."""

    def __init__(self, scope: Scope, receive: Receive, path: str | None = None) -> None:
        self.method: str = scope["method"]
        self.path: str = path if path is not None else scope["path"]
        #: The caller's IP address (None when the server does not know it).
        self.client: str | None = (scope.get("client") or (None,))[0]
        self.headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            # The first of repeated headers wins, as werkzeug's ``headers.get`` (and Express) do.
            self.headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        self._query_string: bytes = scope.get("query_string", b"")
        self._receive = receive
        self._body: bytes | None = None

    @property
    def query(self) -> dict[str, str]:
        """The query parameters; the first value of a repeated one."""
        result: dict[str, str] = {}
        pairs = parse_qsl(self._query_string.decode("latin-1"), keep_blank_values=True)
        for name, value in pairs:
            result.setdefault(name, value)
        return result

    @property
    def mimetype(self) -> str:
        """The body's media type, lower case, without parameters (``""`` when none)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def body(self, limit: int = BODY_LIMIT) -> bytes:
        """The whole body, read once; 413 as soon as it is known to exceed ``limit``.

        A ``Content-Length`` above the limit is refused before reading anything; a chunked body
        is counted as it arrives and refused once past the limit (the connection is then closed,
        so the rest of it is never read).
        """
        if self._body is not None:
            return self._body
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        self._body = b"".join(chunks)
        return self._body


def too_large(limit: int) -> ApiError:
    """Express's answer to a body over the limit; the connection is closed after it."""
    return ApiError(
        413, {"err": "Request entity too large", "limit": limit}, headers={"Connection": "close"}
    )


@dataclass
class Response:
    """An HTTP answer: status, body and headers (names as written, in order)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, send: Send) -> None:
        """Write the answer through ASGI."""
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers.items()
        ]
        headers.append((b"content-length", str(len(self.body)).encode("ascii")))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(status: int, body: Any) -> Response:
    """A JSON answer, as Express's ``res.json`` writes it."""
    return Response(
        status,
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        {"Content-Type": "application/json; charset=utf-8"},
    )


def text_response(status: int, text: str, content_type: str | None = "text/plain") -> Response:
    """A text answer (``content_type=None``: no Content-Type at all, as passport's 401)."""
    headers = {"Content-Type": f"{content_type}; charset=utf-8"} if content_type else {}
    return Response(status, text.encode("utf-8"), headers)
