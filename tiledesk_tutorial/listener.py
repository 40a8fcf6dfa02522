"""Receive Tiledesk webhooks in a notebook: a small HTTP server in a background thread.

    listener = WebhookListener(port=8099).start()   # re-running the cell replaces it
    listener.add_secret(subscription["secret"])     # from POST /<project>/subscriptions
    listener.on_event(lambda event: print(event.summary()))
    listener.wait_for(lambda e: e.text == "hello", timeout=10)

The request thread does only what a delivery needs (check the secret, parse, drop retries, keep,
append to the JSON Lines file, queue for callbacks) and answers at once; callbacks run on one
long-lived worker thread, never on a request thread (a thread per request that touches widgets
exhausts the kernel's sockets under a burst; see docs/webhooks.md).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import (
    LISTEN_QUEUE,
    BaseWSGIServer,
    WSGIRequestHandler,
    get_sockaddr,
    make_server,
    select_address_family,
)

from tiledesk_tutorial.webhooks import (
    KEPT_HEADERS,
    SECRET_HEADER,
    InvalidDelivery,
    InvalidSignature,
    WebhookEvent,
    match_secret,
    parse_delivery,
    verify_token,
)

logger = logging.getLogger("tiledesk_tutorial.listener")

MAX_BODY_BYTES = 1024 * 1024
EventCallback = Callable[[WebhookEvent], Any]
EventPredicate = Callable[[WebhookEvent], bool]


class ListenerError(RuntimeError):
    """The webhook listener could not do what was asked; the message says what to do next."""


class PortInUseError(ListenerError):
    """The port is held by another program (not by a listener of this Python process)."""


class WebhookTimeout(ListenerError, TimeoutError):
    """``wait_for`` did not see the events it waited for in time. ``events`` holds what matched."""

    def __init__(self, message: str, events: list[WebhookEvent]) -> None:
        super().__init__(message)
        self.events = events


# -- the store ---------------------------------------------------------------------------------
class EventStore:
    """A bounded, thread-safe, in-memory list of events that keeps each retried delivery once.

    ``add`` wakes every ``wait`` at once (a :class:`threading.Condition`, no polling).
    """

    def __init__(self, max_events: int = 1000) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self._events: deque[tuple[int, WebhookEvent]] = deque(maxlen=max_events)
        # Retries come within seconds; remembering many more keys than events costs little.
        self._keys: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._max_keys = max(10_000, 10 * max_events)
        self._seq = 0
        self._cond = threading.Condition()
        self.duplicates = 0
        self.evicted = 0

    def add(
        self, event: WebhookEvent, persist: Callable[[WebhookEvent], None] | None = None
    ) -> bool:
        """Keep ``event`` unless it repeats one already kept; return whether it was kept.

        ``persist`` (e.g. a file append) runs first, under the store's lock: if it raises, nothing
        is kept, so a retry of the same delivery can succeed later.
        """
        key = event.dedupe_key
        with self._cond:
            if key is not None and key in self._keys:
                self.duplicates += 1
                return False
            if persist is not None:
                persist(event)
            if key is not None:
                self._keys[key] = None
                if len(self._keys) > self._max_keys:
                    self._keys.popitem(last=False)
            if len(self._events) == self.max_events:
                self.evicted += 1
            self._seq += 1
            self._events.append((self._seq, event))
            self._cond.notify_all()
        return True

    def snapshot(self) -> list[WebhookEvent]:
        """A copy of the kept events, oldest first."""
        with self._cond:
            return [event for _, event in self._events]

    def __len__(self) -> int:
        with self._cond:
            return len(self._events)

    def last(self) -> WebhookEvent | None:
        """The most recently kept event, or ``None``."""
        with self._cond:
            return self._events[-1][1] if self._events else None

    def clear(self) -> None:
        """Forget the kept events (retries of them are still recognised)."""
        with self._cond:
            self._events.clear()

    def wait(
        self, predicate: EventPredicate | None, count: int, timeout: float
    ) -> list[WebhookEvent]:
        """Return the kept events matching ``predicate`` as soon as there are ``count`` of them.

        Events already kept count. Returns what matched so far (fewer than ``count``) when
        ``timeout`` seconds pass. The predicate runs on the calling thread, outside the lock.
        """
        deadline = time.monotonic() + timeout
        matches: list[WebhookEvent] = []
        seen = 0
        while True:
            with self._cond:
                while self._seq == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return matches
                    self._cond.wait(remaining)
                fresh = self._since(seen)
                seen = self._seq
            matches.extend(e for e in fresh if predicate is None or predicate(e))
            if len(matches) >= count:
                return matches

    def _since(self, seq: int) -> list[WebhookEvent]:
        fresh = []
        for number, event in reversed(self._events):
            if number <= seq:
                break
            fresh.append(event)
        fresh.reverse()
        return fresh


class _JsonlWriter:
    """Appends one JSON line per event and flushes it, so that a crash loses nothing kept."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = path.open("a", encoding="utf-8")

    def write(self, event: WebhookEvent) -> None:
        record = event.to_record()
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
        self._handle.close()


# -- the HTTP side ---------------------------------------------------------------------------
class _QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without the access log: every request would print into the notebook."""

    # A client that stops sending mid-request is dropped after this many seconds.
    timeout = 10

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        logger.debug("http: " + message, *args)


_STOP = object()
_RUNNING: dict[int, WebhookListener] = {}
_RUNNING_LOCK = threading.RLock()


class WebhookListener:
    """A webhook receiver for Tiledesk deliveries, served from a background thread.

    ``secret`` (one or several subscription secrets; more with :meth:`add_secret`) makes the
    listener refuse, with 401, any delivery whose ``x-hook-secret`` header is missing or wrong.
    ``verify_token=True`` also requires the body's ``token`` to be a JWT from that subscription.
    With no secret, every well-formed delivery is accepted.

    Kept events are in :attr:`events` (the last ``max_events``); with ``store_file`` each one is
    also appended to a JSON Lines file (read it back with
    :func:`tiledesk_tutorial.webhooks.read_jsonl`). A retried delivery is kept once
    (:attr:`WebhookEvent.dedupe_key`). Callbacks registered with :meth:`on_event` run on one
    worker thread, in arrival order.

    Starting a listener on a port that an earlier listener of this process holds stops that one
    first, so re-running a notebook cell replaces the server instead of failing. Use a fixed
    ``port`` in notebooks for that reason: with ``port=0`` every run gets a new free port.
    """

    def __init__(
        self,
        secret: str | Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/webhook",
        *,
        verify_token: bool = False,
        max_events: int = 1000,
        store_file: str | os.PathLike[str] | None = None,
        fsync: bool = False,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                f"port must be an integer from 0 to 65535 (0: any free port), got {port!r}"
            )
        self.host = host
        self.path = "/" + path.lstrip("/")
        self.verify_token = verify_token
        self.max_body_bytes = max_body_bytes
        self.store_file = Path(store_file) if store_file is not None else None
        self.fsync = fsync
        self._requested_port = port
        self._port: int | None = None
        self._secrets: list[str] = []
        for value in [secret] if isinstance(secret, str) or secret is None else secret:
            if value is not None:
                self.add_secret(value)
        self._store = EventStore(max_events)
        self._callbacks: list[EventCallback] = []
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "received": 0,
            "kept": 0,
            "rejected": 0,
            "last_rejection": None,
            "callback_errors": 0,
            "last_callback_error": None,
        }
        self._lifecycle = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer: _JsonlWriter | None = None
        self._app = self._build_app()

    # -- configuration ---------------------------------------------------------------------
    def add_secret(self, secret: str) -> WebhookListener:
        """Accept deliveries carrying this subscription secret (from the subscribe response)."""
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty string: the 'secret' of a subscription")
        if secret not in self._secrets:
            self._secrets = [*self._secrets, secret]
        return self

    @property
    def secrets_configured(self) -> int:
        """How many subscription secrets the listener checks deliveries against."""
        return len(self._secrets)

    def on_event(self, callback: EventCallback) -> EventCallback:
        """Call ``callback(event)`` for each kept event, on the listener's worker thread.

        Returns ``callback``, so it can be used as a decorator. A function with the same name as
        one already registered replaces it, so re-running the notebook cell that defines and
        registers it does not call it twice (lambdas are always added). Exceptions are counted in
        :attr:`stats` and logged (the first as a warning, later ones at debug level); they never
        reach Tiledesk, which has already had its 200.
        """
        if not callable(callback):
            raise TypeError(f"on_event needs a function taking one event, got {callback!r}")
        key = _callback_key(callback)
        kept = [fn for fn in self._callbacks if key is None or _callback_key(fn) != key]
        self._callbacks = [*kept, callback]
        return callback

    def remove_callback(self, callback: EventCallback) -> None:
        """Stop calling ``callback``; unknown callbacks are ignored."""
        self._callbacks = [fn for fn in self._callbacks if fn is not callback]

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        thread = self._server_thread
        return thread is not None and thread.is_alive()

    @property
    def port(self) -> int:
        """The port the listener is bound to (known once started)."""
        if self._port is None:
            raise ListenerError("the listener has not been started yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """The full local URL of the webhook endpoint, e.g. ``http://127.0.0.1:8099/webhook``."""
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.path}"

    def start(self) -> WebhookListener:
        """Start serving (if not already) and return the listener.

        An earlier listener of this process on the same port is stopped first. A port held by
        another program raises :class:`PortInUseError`.
        """
        with self._lifecycle:
            if self.running:
                return self
            # A restarted port-0 listener tries to get its previous port back, so that a
            # subscription pointing at it keeps working; it never evicts another listener for it.
            port = self._requested_port or self._port or 0
            if self._requested_port:
                with _RUNNING_LOCK:
                    earlier = _RUNNING.get(port)
                if earlier is not None and earlier is not self:
                    logger.info("stopping the earlier listener on port %d to replace it", port)
                    earlier.stop()
            try:
                sock = self._bind(port)
            except PortInUseError:
                if self._requested_port or not self._port:
                    raise
                sock = self._bind(0)  # the previous free port was taken meanwhile: take another
            try:
                server = self._make_server(sock)
            finally:
                sock.close()
            self._server = server
            self._port = server.port
            if self.store_file is not None:
                try:
                    self._writer = _JsonlWriter(self.store_file, self.fsync)
                except OSError as exc:
                    server.server_close()
                    raise ListenerError(
                        f"cannot append events to {self.store_file}: {exc.strerror or exc}"
                    ) from None
            self._queue = queue.Queue()
            self._worker = threading.Thread(
                target=self._run_callbacks,
                args=(self._queue,),
                name=f"tiledesk-listener-{self._port}-callbacks",
                daemon=True,
            )
            self._worker.start()
            self._server_thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"tiledesk-listener-{self._port}",
                daemon=True,
            )
            self._server_thread.start()
            with _RUNNING_LOCK:
                _RUNNING[self._port] = self
            logger.info("webhook listener serving on %s", self.url)
            return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, free the port, finish pending callbacks; safe to call twice."""
        with self._lifecycle:
            server, thread, worker = self._server, self._server_thread, self._worker
            self._server = self._server_thread = self._worker = None
            if server is not None:
                if thread is not None and thread.is_alive():
                    server.shutdown()  # returns once serve_forever has left its loop
                    thread.join(timeout)  # serve_forever closes the socket, joins request threads
                else:
                    server.server_close()
            if worker is not None:
                self._queue.put(_STOP)
                if worker is not threading.current_thread():  # a callback may call stop()
                    worker.join(timeout)
                    if worker.is_alive():
                        logger.warning("a webhook callback still runs after %.0f s", timeout)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            with _RUNNING_LOCK:
                if self._port is not None and _RUNNING.get(self._port) is self:
                    del _RUNNING[self._port]

    def __enter__(self) -> WebhookListener:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- reading events --------------------------------------------------------------------
    @property
    def events(self) -> list[WebhookEvent]:
        """A snapshot (a new list) of the kept events, oldest first."""
        return self._store.snapshot()

    @property
    def last_event(self) -> WebhookEvent | None:
        """The most recently kept event, or ``None``."""
        return self._store.last()

    def clear(self) -> None:
        """Forget the kept events, e.g. before waiting only for new ones."""
        self._store.clear()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: received, kept, duplicates, rejected (with the last reason), callbacks."""
        with self._stats_lock:
            stats = dict(self._stats)
        stats["duplicates"] = self._store.duplicates
        stats["evicted"] = self._store.evicted
        stats["events_kept"] = len(self._store)
        stats["pending_callbacks"] = self._queue.qsize()
        return stats

    def wait_for(
        self, predicate: EventPredicate | None = None, count: int = 1, timeout: float = 10
    ) -> list[WebhookEvent]:
        """Wait until ``count`` kept events match ``predicate`` (any event when ``None``).

        Events kept before the call count too (call :meth:`clear` first to wait only for new
        ones). Returns the matching events; raises :class:`WebhookTimeout` after ``timeout``
        seconds, saying what the listener did receive.
        """
        matches = self._store.wait(predicate, count, timeout)
        if len(matches) >= count:
            return matches
        raise WebhookTimeout(self._timeout_message(len(matches), count, timeout), matches)

    def _timeout_message(self, got: int, count: int, timeout: float) -> str:
        stats = self.stats
        what = "matching webhook event" if count == 1 else "matching webhook events"
        parts = [
            f"waited {timeout:g} s for {count} {what} at {self.url if self._port else '?'}, "
            f"got {got}; the listener kept {stats['events_kept']} event(s) in all"
        ]
        if stats["rejected"]:
            parts.append(
                f"and refused {stats['rejected']} request(s), the last because: "
                f"{stats['last_rejection']}"
            )
        if not self.running:
            parts.append("(the listener is not running: call start())")
        elif not stats["received"] and not stats["rejected"]:
            parts.append(
                "(nothing reached it: is the subscription's target this URL, or a tunnel to it, "
                "and does the server send webhooks?)"
            )
        return " ".join(parts) + "."

    def __repr__(self) -> str:
        where = self.url if self._port is not None else f"{self.host}:{self._requested_port}"
        state = "running" if self.running else "stopped"
        return (
            f"<WebhookListener {where} {state}, {len(self._store)} event(s), "
            f"{len(self._secrets)} secret(s)>"
        )

    # -- internals ------------------------------------------------------------------------
    def _bind(self, port: int) -> socket.socket:
        """Bind the listening socket ourselves: werkzeug calls sys.exit() when the port is taken."""
        family = select_address_family(self.host, port)
        try:
            address = get_sockaddr(self.host, port, family)
        except OSError as exc:
            raise ListenerError(f"cannot listen on host {self.host!r}: {exc}") from None
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(LISTEN_QUEUE)
        except OSError as exc:
            sock.close()
            raise self._bind_error(port, exc) from None
        return sock

    def _bind_error(self, port: int, exc: OSError) -> ListenerError:
        if exc.errno == errno.EADDRINUSE:
            return PortInUseError(
                f"port {port} on {self.host} is in use by another program; stop that program, "
                f"or choose another port (port=0 picks a free one)"
            )
        if exc.errno == errno.EACCES:
            return ListenerError(
                f"not allowed to listen on port {port}: ports below 1024 need administrator "
                "rights; choose a port from 1024 up (port=0 picks a free one)"
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return ListenerError(
                f"{self.host!r} is not an address of this machine; use '127.0.0.1' (this machine "
                "only) or '0.0.0.0' (every interface)"
            )
        return ListenerError(f"cannot listen on {self.host}:{port}: {exc.strerror or exc}")

    def _make_server(self, sock: socket.socket) -> BaseWSGIServer:
        port = sock.getsockname()[1]
        try:
            server = make_server(
                self.host,
                port,
                self._app,
                threaded=True,
                request_handler=_QuietRequestHandler,
                fd=sock.fileno(),
            )
        except (SystemExit, OSError) as exc:  # werkzeug exits on bind errors; we pass a bound fd
            raise ListenerError(f"cannot serve on {self.host}:{port}: {exc}") from None
        # Errors from a request (a client hanging up) go to our logger, not the notebook.
        server.log = lambda type, message, *args: logger.debug(  # type: ignore[method-assign]
            "http %s: " + message, type, *args
        )
        server.handle_error = lambda req, addr: logger.debug(  # type: ignore[method-assign]
            "error while serving %s", addr, exc_info=True
        )
        return server

    def _build_app(self) -> Flask:
        app = Flask("tiledesk_tutorial.listener")
        app.config["MAX_CONTENT_LENGTH"] = self.max_body_bytes
        app.add_url_rule(
            self.path,
            "webhook",
            self._handle,
            methods=["GET", "POST"],
            provide_automatic_options=False,
        )
        app.register_error_handler(HTTPException, self._http_error)
        app.register_error_handler(Exception, self._unexpected_error)
        return app

    def _handle(self) -> Response | tuple[dict[str, Any], int]:
        if request.method != "POST":
            return self._status(), 200
        with self._stats_lock:
            self._stats["received"] += 1
        secret = None
        if self._secrets:
            given = request.headers.get(SECRET_HEADER)
            secret = match_secret(given, self._secrets)
            if secret is None:
                if given:
                    reason = "wrong x-hook-secret: it is not the secret of a known subscription"
                else:
                    reason = "missing x-hook-secret header"
                return self._reject(401, reason)
        body = request.get_data(cache=False)  # raises 413 above max_body_bytes
        try:
            headers = {name: request.headers.get(name, "") for name in KEPT_HEADERS}
            event = parse_delivery(body, headers=headers, received_at=datetime.now(UTC))
        except InvalidDelivery as exc:
            return self._reject(400, exc.reason)
        if self.verify_token:
            if secret is None:
                return self._reject(
                    401, "token not checked: the listener knows no subscription secret yet"
                )
            try:
                verify_token(event.raw.get("token"), secret, event.subscription_id)
            except InvalidSignature as exc:
                return self._reject(401, exc.reason)
        writer = self._writer
        try:
            kept = self._store.add(event, persist=writer.write if writer is not None else None)
        except (OSError, ValueError) as exc:  # ValueError: the file was closed by stop()
            logger.warning("could not append a webhook event to %s: %s", self.store_file, exc)
            return self._reject(500, f"could not store the event: {exc}")
        if kept:
            with self._stats_lock:
                self._stats["kept"] += 1
            self._queue.put(event)
        answer = json.dumps({"ok": True, "kept": kept, "event": event.event})
        return Response(answer, 200, mimetype="application/json")  # cheaper than jsonify

    def _status(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "ok": True,
            "service": "tiledesk_tutorial webhook listener",
            "path": self.path,
            "events_kept": stats["events_kept"],
            "received": stats["received"],
            "rejected": stats["rejected"],
            "secrets_configured": len(self._secrets),
            "verify_token": self.verify_token,
            "hint": "Tiledesk delivers webhooks here with POST; this page is for checking.",
        }

    def _reject(self, status: int, reason: str) -> tuple[dict[str, Any], int]:
        with self._stats_lock:
            self._stats["rejected"] += 1
            self._stats["last_rejection"] = f"{status} {reason}"
        logger.debug("refused a request to %s: %d %s", request.path, status, reason)
        return {"ok": False, "error": reason}, status

    def _http_error(self, exc: HTTPException) -> tuple[dict[str, Any], int, dict[str, str]]:
        status = exc.code or 500
        if status == 405:
            reason = f"method {request.method} not allowed: send webhooks with POST to {self.path}"
        elif status == 404:
            reason = f"no endpoint at {request.path}: the webhook path is {self.path}"
        elif status == 413:
            reason = f"body larger than {self.max_body_bytes} bytes"
        else:
            reason = exc.description or exc.name
        headers = {}
        if status == 405:
            headers["Allow"] = "GET, HEAD, POST"
        body, status = self._reject(status, reason)
        return body, status, headers

    def _unexpected_error(self, exc: Exception) -> tuple[dict[str, Any], int]:
        logger.warning("webhook listener error: %s: %s", type(exc).__name__, exc)
        return self._reject(500, f"listener error: {type(exc).__name__}")

    def _run_callbacks(self, inbox: queue.Queue[Any]) -> None:
        while True:
            item = inbox.get()
            if item is _STOP:
                return
            for callback in self._callbacks:
                try:
                    callback(item)
                except Exception as exc:
                    self._callback_failed(callback, exc)

    def _callback_failed(self, callback: EventCallback, exc: Exception) -> None:
        name = getattr(callback, "__qualname__", repr(callback))
        with self._stats_lock:
            self._stats["callback_errors"] += 1
            first = self._stats["callback_errors"] == 1
            self._stats["last_callback_error"] = f"{name}: {type(exc).__name__}: {exc}"
        if first:
            logger.warning(
                "webhook callback %s failed: %s: %s (further failures are counted in "
                "listener.stats)",
                name,
                type(exc).__name__,
                exc,
            )
        else:
            logger.debug("webhook callback %s failed", name, exc_info=True)


def _callback_key(callback: EventCallback) -> tuple[str, str] | None:
    """A named function's identity across notebook re-runs; ``None`` for lambdas and others."""
    name = getattr(callback, "__qualname__", None)
    if not isinstance(name, str) or "<lambda>" in name or not hasattr(callback, "__code__"):
        return None
    return (getattr(callback, "__module__", "") or "", name)


def running_listeners() -> list[WebhookListener]:
    """The listeners of this process that are serving now."""
    with _RUNNING_LOCK:
        return [listener for listener in _RUNNING.values() if listener.running]


def stop_all_listeners() -> int:
    """Stop every listener of this process; return how many were running."""
    listeners = running_listeners()
    for listener in listeners:
        listener.stop()
    return len(listeners)
