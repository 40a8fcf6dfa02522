"""A small local HTTP server that answers with recorded Tiledesk responses, for the client's tests.

The recordings in ``tests/transcripts/`` come from a real Tiledesk 2.19.16 (a throw-away local run;
copied from the project's shared transcripts so that the tests run on a clean clone). Each file
holds one ``### REQUEST`` and one ``### RESPONSE`` in HTTP/1.1 text form.

``ReplayServer`` runs werkzeug on 127.0.0.1 with a free port in a daemon thread. Tests register
answers per ``(method, path)``; several answers for one route are given in order and the last one
repeats. Every request received is recorded, so tests can check what the client really sent (or
that it sent nothing). An unregistered route gets Express's HTML "Cannot GET /x" 404 page, which
is what a Tiledesk server (or the gateway in front of it) answers to an unknown route.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "transcripts"

# Headers that describe the recorded connection rather than the answer; werkzeug sets its own.
_CONNECTION_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "date"}


@dataclass(frozen=True)
class Reply:
    """One answer: status, headers and body bytes; ``delay`` seconds before answering."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay: float = 0.0
    reason: str = ""

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
        """A JSON answer, with the Content-Type Express sends."""
        hdrs = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, tuple(hdrs.items()), json.dumps(data).encode())

    @classmethod
    def text(cls, status: int, text: str, content_type: str | None = "text/html") -> Reply:
        """A text answer; ``content_type=None`` sends no Content-Type at all."""
        hdrs = (("Content-Type", content_type),) if content_type else ()
        return cls(status, hdrs, text.encode())


def express_404(method: str, path: str) -> Reply:
    """The page Express sends for a route it does not know (docs/wire-format.md, errors)."""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
        f"</head>\n<body>\n<pre>Cannot {method} {path}</pre>\n</body>\n</html>\n"
    )
    return Reply.text(404, page, "text/html; charset=utf-8")


@dataclass(frozen=True)
class Transcript:
    """One recorded exchange with the real server."""

    name: str
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: str
    reply: Reply

    @property
    def response_json(self) -> Any:
        """The recorded answer's body, parsed."""
        return json.loads(self.reply.body)


def load_transcript(name: str) -> Transcript:
    """Parse ``tests/transcripts/<name>.txt``; the name may be a unique prefix, without ``.txt``."""
    matches = sorted(TRANSCRIPTS.glob(f"{name}*.txt"))
    if len(matches) != 1:
        raise FileNotFoundError(f"expected one transcript for {name!r}, found {matches}")
    text = matches[0].read_text(encoding="utf-8")
    request_part, response_part = text.split("### RESPONSE", 1)
    request_part = request_part.split("### REQUEST", 1)[1]
    req_head, req_body = _split_message(request_part)
    resp_head, resp_body = _split_message(response_part)
    method, path, _ = req_head[0].split(" ", 2)
    status_line = resp_head[0].split(" ", 2)
    reply_headers = tuple(
        (k, v) for k, v in _headers(resp_head[1:]).items() if k.lower() not in _CONNECTION_HEADERS
    )
    return Transcript(
        name=matches[0].stem,
        method=method,
        path=path,
        request_headers=_headers(req_head[1:]),
        request_body=req_body,
        reply=Reply(
            int(status_line[1]),
            reply_headers,
            resp_body.encode(),
            reason=status_line[2] if len(status_line) > 2 else "",
        ),
    )


def _split_message(part: str) -> tuple[list[str], str]:
    lines = part.strip("\n").split("\n")
    blank = lines.index("") if "" in lines else len(lines)
    return lines[:blank], "\n".join(lines[blank + 1 :]).strip("\n")


def _headers(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        out[name.strip()] = value.strip()
    return out


@dataclass
class Received:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body, parsed as JSON."""
        return json.loads(self.body) if self.body else None


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


@dataclass
class ReplayServer:
    """Answer registered replies over real HTTP on 127.0.0.1 (see the module docstring)."""

    routes: dict[tuple[str, str], deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def add(self, method: str, path: str, *replies: Reply) -> None:
        """Answer ``method path`` with ``replies`` in order; the last one then repeats."""
        with self._lock:
            self.routes[(method.upper(), path)].extend(replies)

    def replay(self, name: str, *, path: str | None = None) -> Transcript:
        """Register a transcript's answer for its own request line (or for ``path``)."""
        transcript = load_transcript(name)
        self.add(transcript.method, path or transcript.path, transcript.reply)
        return transcript

    def requests_to(self, method: str, path: str) -> list[Received]:
        """The requests received for one route."""
        return [r for r in self.received if r.method == method.upper() and r.path == path]

    def stop(self) -> None:
        """Stop serving (cutting short any delayed reply) and wait for the thread to end."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        with self._lock:
            self.received.append(
                Received(
                    request.method,
                    request.path,
                    dict(request.args),
                    dict(request.headers),
                    body,
                )
            )
            queue = self.routes.get((request.method, request.path))
            if queue:
                reply = queue.popleft() if len(queue) > 1 else queue[0]
            else:
                reply = express_404(request.method, request.path)
        if reply.delay:
            self._stopping.wait(reply.delay)
        status = f"{reply.status} {reply.reason}" if reply.reason else reply.status
        response = Response(reply.body, status=status)
        response.headers.clear()
        for name, value in reply.headers:
            response.headers.add(name, value)
        return response(environ, start_response)
