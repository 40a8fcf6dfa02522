"""The webhook listener's HTTP server: waitress, with keep-alive, a bounded pool and bounded
connections.

The listener's Flask app is served by waitress (a production WSGI server, pure Python) rather
than werkzeug's development server, which spends about 1 ms of CPU and a new connection on every
delivery and gives each connection a thread of its own. Chosen by measurement against werkzeug and
cheroot (``make bench``, the ``listener`` part; the figures are in docs/webhooks.md):

- **Keep-alive**: a sender's connection is kept between deliveries (werkzeug closes it each time).
- **A bounded pool**: ``threads`` workers run the app. One event-loop thread reads requests
  whole before any worker sees them, so a client that sends its request slowly (a byte every few
  seconds) costs an open socket, never a worker: cheroot, measured too, gives each connection a
  worker while it reads, so a handful of slow clients stop it answering.
- **Bounded connections**: at most ``max_connections`` open at once, and never more than the
  process's open-files limit leaves room for. When the limit is reached and a new delivery
  connects, the connection that has been dribbling a request for longest (else the one idle
  longest) is closed to make room, so slow or idle connections can never stop the listener
  accepting deliveries. Idle connections are closed after ``IDLE_TIMEOUT`` seconds anyway.
- **Limits**: request headers over ``MAX_HEADER_BYTES`` are answered 431. A body over the
  listener's limit is answered 413 by the app, with its JSON reason (``Content-Length`` or
  chunked alike); one over twice that limit is answered 413 by waitress before it is read.

waitress's own log lines (a queue warning under a burst) go to the ``waitress`` logger, kept out of
the notebook unless you configure logging.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEADER_BYTES",
    "THREADS",
    "ListenerServer",
    "connection_budget",
]

logger = logging.getLogger("tiledesk_tutorial.listener")
# Without a handler, Python prints warnings of a library's logger on stderr: into the notebook.
logging.getLogger("waitress").addHandler(logging.NullHandler())

#: Workers running the Flask app (the request path is short: verify, keep, answer).
THREADS = 4
#: Open connections at most (fewer when the open-files limit is low).
MAX_CONNECTIONS = 100
#: Request line and headers at most; Tiledesk's deliveries send about 300 bytes.
MAX_HEADER_BYTES = 32 * 1024
#: Seconds a connection may stay idle between requests before it is closed.
IDLE_TIMEOUT = 30
#: File descriptors left free for everything else the process opens (files, client sockets).
_FD_RESERVE = 32
#: Seconds ``stop()`` lets requests in progress finish sending their answers.
_GRACE = 2.0


def connection_budget(wanted: int) -> int:
    """How many connections the listener may hold: ``wanted``, or fewer when the process's
    open-files limit (``ulimit -n``) leaves less room than that (at least 4)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # Windows has no such limit
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 64  # a guess where /proc is missing (macOS)
    return max(4, min(wanted, soft - open_now - _FD_RESERVE))


class _BoundedServer(TcpWSGIServer):
    """waitress's TCP server, making room for a new connection instead of refusing it."""

    max_open = MAX_CONNECTIONS

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        # Accept while there is room, or a connection that can be closed to make some: the kernel
        # holds the newcomer in the listen backlog meanwhile.
        return len(self.active_channels) < self.max_open or self._victim() is not None

    def handle_accept(self) -> None:
        if len(self.active_channels) >= self.max_open:
            victim = self._victim()
            if victim is None:
                return
            logger.debug(
                "listener at its %d connections: closing %s to accept a new one",
                self.max_open,
                victim.addr,
            )
            victim.handle_close()
        super().handle_accept()

    def _victim(self) -> Any:
        """The connection to close first: none being served or sending an answer; of the others,
        the one sending a request for longest, else the one idle longest."""
        best, best_key = None, None
        for channel in self.active_channels.values():
            if channel.requests or channel.total_outbufs_len or not channel.connected:
                continue  # being served, or an answer still going out
            key = (channel.request is None, channel.creation_time if channel.request else 0.0)
            key = (*key, channel.last_activity)
            if best_key is None or key < best_key:
                best, best_key = channel, key
        return best


class ListenerServer:
    """Serves a WSGI app on an already bound socket, from one background thread.

    Args:
        app: the WSGI application (the listener's Flask app).
        sock: a bound, listening TCP socket; the server owns it from now on and closes it.
        max_body_bytes: the app's body limit; bodies over twice this are answered 413 before
            they are read (the app answers those in between, with its reason).
        threads: workers running the app.
        max_connections: open connections at most (see :func:`connection_budget`).
        name: the serving thread's name.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        sock: socket.socket,
        *,
        max_body_bytes: int,
        threads: int = THREADS,
        max_connections: int = MAX_CONNECTIONS,
        name: str = "tiledesk-listener",
    ) -> None:
        adjustments = Adjustments(
            sockets=[sock],
            threads=threads,
            connection_limit=max_connections,
            channel_timeout=IDLE_TIMEOUT,
            cleanup_interval=min(IDLE_TIMEOUT, 5),
            max_request_header_size=MAX_HEADER_BYTES,
            max_request_body_size=2 * max_body_bytes,
            expose_tracebacks=False,
            ident="tiledesk-tutorial-listener",
            asyncore_use_poll=True,  # select() cannot watch a socket numbered above 1023
            clear_untrusted_proxy_headers=False,
        )
        self._map: dict[int, Any] = {}
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(threads)
        self._server = _BoundedServer(
            app,
            map=self._map,
            _sock=sock,
            dispatcher=self._dispatcher,
            adj=adjustments,
            bind_socket=False,
            sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
        )
        self._server.max_open = connection_budget(max_connections)
        self.port: int = sock.getsockname()[1]
        self._stopping = threading.Event()
        # Held while waking the serving thread and while it closes its sockets: a wake-up written
        # to a closed (and perhaps reused) file descriptor would land in another file.
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def max_connections(self) -> int:
        """The connections it holds at most (the open-files limit may make it fewer)."""
        return int(self._server.max_open)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._server.active_channels)

    @property
    def running(self) -> bool:
        """Whether the serving thread runs."""
        return self._thread.is_alive()

    def start(self) -> ListenerServer:
        """Start serving from the background thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let answers in progress go out, close every connection (idempotent)."""
        with self._closing:
            self._stopping.set()
            if not self._closed and self._thread.is_alive():
                self._server.pull_trigger()
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif not self._thread.ident:  # never started: close what it holds here
            self._close_all()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
            self._server.accepting = False
            self._server.del_channel()
            self._server.socket.close()
            deadline = time.monotonic() + _GRACE
            while time.monotonic() < deadline and self._busy():
                wasyncore.loop(timeout=0.05, map=self._map, use_poll=True, count=1)
        except Exception:  # never let the serving thread die with a traceback in the notebook
            logger.debug("the listener's server stopped on an error", exc_info=True)
        finally:
            self._close_all()

    def _busy(self) -> bool:
        return any(c.requests or c.total_outbufs_len for c in self._server.active_channels.values())

    def _close_all(self) -> None:
        self._dispatcher.shutdown(cancel_pending=True, timeout=_GRACE)
        with self._closing:
            self._closed = True
            wasyncore.close_all(self._map)
