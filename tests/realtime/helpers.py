"""Helpers for the realtime tests: a webhook receiver that records what it gets, and a TCP
proxy that breaks the network on purpose."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response


@dataclass
class Received:
    """One POST the receiver got: its headers (lower-case names), its JSON body and its bytes."""

    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes = b""


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
        raw = request.get_data()
        body = json.loads(raw or b"null")
        with self._cond:
            self.attempts += 1
            status = self.answers.pop(0) if self.answers else 200
            if status == 200:
                headers = {k.lower(): v for k, v in request.headers.items()}
                self.received.append(Received(headers, body, raw))
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


class Proxy:
    """A loopback TCP proxy in front of a server, to break the network on purpose.

    ``cut()`` drops every connection at once (a lost Wi-Fi: no close frame); ``refuse = True``
    turns new connections away until set back; ``freeze()`` keeps the open connections open but
    stops passing their bytes (a laptop asleep, a dead NAT entry: only heartbeats can tell), while
    new connections work. ``close()`` ends everything, threads included.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self.refuse = False
        self.connections = 0
        self._frozen: set[socket.socket] = set()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._start(self._accept)

    def url(self, path: str = "/") -> str:
        """The proxy's ws:// address."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def cut(self) -> None:
        """Drop every open connection, without a close frame."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def freeze(self) -> None:
        """Stop passing bytes on the connections open now (they stay open)."""
        with self._lock:
            self._frozen.update(self._sockets)

    def close(self) -> None:
        """Stop accepting, drop everything, and wait for the proxy's threads."""
        self._closed = True
        _close(self._listener)
        self.cut()
        for thread in self._threads:
            thread.join(10)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="test-proxy")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            self._start(self._pipe, client, upstream)
            self._start(self._pipe, upstream, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if source in self._frozen:
                    continue  # swallowed: the other side never hears of it
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
