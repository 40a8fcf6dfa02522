"""Receive Tiledesk webhooks in a notebook: a small HTTP server in a background thread.

The Flask app below is served by waitress (:mod:`tiledesk_tutorial.listener_server`): keep-alive,
four workers, and a bound on the connections it holds.

    listener = WebhookListener(port=8099).start()   # re-running the cell replaces it
    listener.add_secret(subscription["secret"])     # from POST /<project>/subscriptions
    listener.on_event(lambda event: print(event.summary()))
    listener.wait_for(lambda e: e.text == "hello", timeout=10)

The request thread does only what a delivery needs (verify it with
:func:`~tiledesk_tutorial.webhooks.verify_delivery`, then hand it to the listener's
:class:`~tiledesk_tutorial.event_hub.EventHub`, which drops retries, appends it to the JSON Lines
file and queues it for the callbacks in one step) and answers at once. Callbacks run on the hub's
one long-lived worker thread, never on a request thread (a thread per request that touches widgets
exhausts the kernel's sockets under a burst; see docs/webhooks.md).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import LISTEN_QUEUE, get_sockaddr, select_address_family

from tiledesk_tutorial.delivery_log import MAX_RECORDS, DeliveryLog, DeliveryRecord
from tiledesk_tutorial.errors import InvalidInputError, TiledeskTutorialError
from tiledesk_tutorial.event_hub import (
    BatchCallback,
    EventCallback,
    EventHub,
    EventPredicate,
    Rerun,
)
from tiledesk_tutorial.jsonl import JsonlWriter
from tiledesk_tutorial.listener_server import MAX_CONNECTIONS, ListenerServer
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.webhooks import WebhookVerificationError, verify_delivery
from tiledesk_tutorial.wire import now

__all__ = [
    "MAX_BODY_BYTES",
    "ListenerError",
    "PortInUseError",
    "ReplayError",
    "WebhookListener",
    "WebhookTimeout",
    "running_listeners",
    "stop_all_listeners",
]

logger = logging.getLogger("tiledesk_tutorial.listener")

MAX_BODY_BYTES = 1024 * 1024


class ListenerError(TiledeskTutorialError):
    """The webhook listener could not do what was asked; the hint says what to do next."""


class PortInUseError(ListenerError):
    """The port is held by another program (not by a listener of this Python process)."""


class ReplayError(ListenerError):
    """A delivery could not be replayed: it was refused, or the URL to re-POST it to failed."""


class WebhookTimeout(ListenerError, TimeoutError):
    """``wait_for`` did not see the events it waited for in time. ``events`` holds what matched."""

    def __init__(self, message: str, events: list[Event], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.events = events


_RUNNING: dict[int, WebhookListener] = {}
_RUNNING_LOCK = threading.RLock()


class WebhookListener:
    """A webhook receiver for Tiledesk deliveries, served from a background thread.

    ``secret`` (one or several subscription secrets; more with :meth:`add_secret`) makes the
    listener refuse, with 401, any delivery whose ``x-hook-secret`` header is missing or wrong.
    ``verify_token=True`` also requires the body's ``token`` to be a JWT from that subscription.
    With no secret, every well-formed delivery is accepted.

    Kept events are :class:`~tiledesk_tutorial.models.Event` objects in :attr:`events` (the last
    ``max_events``); with ``store_file`` each one is also appended to a JSON Lines file (read it
    back with :func:`tiledesk_tutorial.jsonl.read_jsonl`). A retried delivery is kept once
    (:attr:`Event.dedupe_key`). Callbacks registered with :meth:`on_event` (one event) or
    :meth:`on_events` (batches) run on one worker thread, in the order the events were kept. The
    listener is an :class:`~tiledesk_tutorial.event_hub.EventSource`: a
    :class:`~tiledesk_tutorial.widgets.ConversationView` follows it.

    Every request that reaches it, kept or refused, is also in :attr:`deliveries` (the last
    ``max_deliveries``, secrets hidden): what the
    :class:`~tiledesk_tutorial.inspector.DeliveryInspector` shows. An accepted delivery can be
    replayed: :meth:`replay` runs the ``on_event`` callbacks again, :meth:`replay_to` POSTs it to
    any URL (your own handler).

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
        max_deliveries: int = MAX_RECORDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidInputError(
                f"port must be an integer from 0 to 65535 (0: any free port), got {port!r}"
            )
        self.host = host
        self.path = "/" + path.lstrip("/")
        self.verify_token = verify_token
        self.max_body_bytes = max_body_bytes
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise InvalidInputError(f"max_connections must be a whole number: {max_connections!r}")
        if max_connections < 4:
            raise InvalidInputError(f"max_connections must be 4 or more: {max_connections!r}")
        self.max_connections = max_connections
        self.store_file = Path(store_file) if store_file is not None else None
        self.fsync = fsync
        self._requested_port = port
        self._port: int | None = None
        self._secrets: list[str] = []
        for value in [secret] if isinstance(secret, str) or secret is None else secret:
            if value is not None:
                self.add_secret(value)
        self._hub = EventHub(max_events, name="tiledesk-listener-callbacks", label="webhook")
        self._log = DeliveryLog(max_deliveries)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "received": 0,
            "kept": 0,
            "rejected": 0,
            "last_rejection": None,
        }
        self._lifecycle = threading.RLock()
        self._server: ListenerServer | None = None
        self._writer: JsonlWriter | None = None
        self._app = self._build_app()

    # -- configuration ---------------------------------------------------------------------
    def add_secret(self, secret: str) -> WebhookListener:
        """Accept deliveries carrying this subscription secret (from the subscribe response)."""
        if not isinstance(secret, str) or not secret:
            raise InvalidInputError(
                "secret must be a non-empty string: the 'secret' of a subscription"
            )
        if secret not in self._secrets:
            self._secrets = [*self._secrets, secret]
        return self

    @property
    def secrets_configured(self) -> int:
        """How many subscription secrets the listener checks deliveries against."""
        return len(self._secrets)

    def on_event(self, callback: EventCallback, *, key: Hashable | None = None) -> EventCallback:
        """Call ``callback(event)`` for each kept event, on the listener's worker thread.

        Returns ``callback``, so it can be used as a decorator. A function with the same name as
        one already registered (or the same ``key``) replaces it, so re-running the notebook cell
        that defines and registers it does not call it twice (lambdas are always added).
        Exceptions are counted in :attr:`stats` and logged (the first as a warning, later ones at
        debug level); they never reach Tiledesk, which has already had its 200.
        """
        return self._hub.on_event(callback, key=key)

    def on_events(
        self, callback: BatchCallback, *, key: Hashable, min_interval: float = 0.0
    ) -> BatchCallback:
        """Call ``callback(events)`` with the events kept since its last call, as one list, at
        most once every ``min_interval`` seconds (what a view uses to redraw once per burst).
        ``key`` replaces an earlier callback registered with it."""
        return self._hub.on_events(callback, key=key, min_interval=min_interval)

    def remove_callback(self, callback_or_key: Any) -> None:
        """Stop calling a callback (given itself or its key); unknown ones are ignored."""
        self._hub.remove_callback(callback_or_key)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        server = self._server
        return server is not None and server.running

    @property
    def port(self) -> int:
        """The port the listener is bound to (known once started)."""
        if self._port is None:
            raise ListenerError(
                "the listener has not been started yet, so it has no port.",
                hint="call start() first.",
            )
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
            server = ListenerServer(
                self._app,
                sock,
                max_body_bytes=self.max_body_bytes,
                max_connections=self.max_connections,
                name=f"tiledesk-listener-{sock.getsockname()[1]}",
            )
            self._port = server.port
            if self.store_file is not None:
                try:
                    self._writer = JsonlWriter(self.store_file, fsync=self.fsync)
                except OSError as exc:
                    server.stop()
                    raise ListenerError(
                        f"cannot append events to {self.store_file}: {exc.strerror or exc}",
                        hint="choose a store_file in a folder you can write to.",
                    ) from None
            self._hub.name = f"tiledesk-listener-{self._port}-callbacks"
            self._hub.start()
            self._server = server.start()
            with _RUNNING_LOCK:
                _RUNNING[self._port] = self
            logger.info("webhook listener serving on %s", self.url)
            return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, free the port, finish pending callbacks; safe to call twice."""
        with self._lifecycle:
            server, self._server = self._server, None
            if server is not None:
                server.stop(timeout)  # closes the socket and every connection
            self._hub.stop(timeout)  # runs the callbacks still due; a callback may call stop()
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
    def events(self) -> list[Event]:
        """A snapshot (a new list) of the kept events, oldest first."""
        return self._hub.snapshot()

    @property
    def app(self) -> Flask:
        """The Flask app the listener serves (to serve it yourself, or to compare servers)."""
        return self._app

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        """Every request that reached the listener (the last ``max_deliveries``), newest first:
        verdict, status, reason, headers (secrets hidden), body and time."""
        return self._log.records()

    @property
    def delivery_log(self) -> DeliveryLog:
        """The log behind :attr:`deliveries` (what the inspector follows)."""
        return self._log

    def wait_for_delivery(
        self, predicate: Callable[[DeliveryRecord], bool] | None = None, timeout: float = 10
    ) -> DeliveryRecord:
        """Wait until a request matching ``predicate`` has reached the listener, whatever its
        verdict (e.g. ``lambda d: d.number > 4``, or ``d.verdict == "refused"``); return the
        newest such record. Raises :class:`WebhookTimeout` after ``timeout`` seconds."""
        found = self._log.wait_for(predicate, timeout)
        if found is None:
            raise WebhookTimeout(
                f"waited {timeout:g} s for a matching request at "
                f"{self.url if self._port else '?'}; it has received {self._log.received} in all.",
                [],
            )
        return found

    def delivery(self, number: int) -> DeliveryRecord:
        """The request with this number (``#12`` in the inspector)."""
        return self._log.get(number)

    def replay(self, delivery: DeliveryRecord | int, timeout: float = 10.0) -> Rerun:
        """Run the ``on_event`` callbacks again for an accepted delivery, and wait for them.

        What to do after fixing a callback: re-run the cell that defines it (it replaces the old
        one), then replay the delivery it failed on. The event is not kept a second time and views
        are not redrawn (they show it already). Returns how many callbacks ran and their errors.
        """
        record = self._replayable(delivery)
        if not self.running:
            raise ReplayError(
                "the listener is stopped, so its callbacks are not running.",
                hint="call listener.start() first.",
            )
        assert record.event is not None
        return self._hub.rerun(record.event, timeout)

    def replay_to(
        self, delivery: DeliveryRecord | int, url: str, *, timeout: float = 10.0
    ) -> requests.Response:
        """POST an accepted delivery again, byte for byte, to ``url`` (your own handler).

        The headers are those Tiledesk sent, ``x-hook-secret`` included, so a handler that
        checks the secret accepts it. Returns the handler's answer, whatever its status; raises
        :class:`ReplayError` when the URL cannot be reached.
        """
        record = self._replayable(delivery)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ReplayError(
                f"cannot POST to {url!r}: give an http:// or https:// URL.",
                hint="e.g. http://127.0.0.1:5000/webhook for a Flask app on port 5000.",
            )
        try:
            return requests.post(
                url,
                data=record.body,
                headers=record.replay_headers(),
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            reason = type(exc).__name__
            if isinstance(exc, requests.ConnectionError):
                reason = "nothing answers there (connection refused or host unknown)"
            elif isinstance(exc, requests.Timeout):
                reason = f"no answer within {timeout:g} s"
            raise ReplayError(
                f"could not POST delivery #{record.number} to {url}: {reason}.",
                hint="is your handler running, on that port and path?",
            ) from None

    def _replayable(self, delivery: DeliveryRecord | int) -> DeliveryRecord:
        record = delivery if isinstance(delivery, DeliveryRecord) else self._log.get(delivery)
        if not record.replayable:
            raise ReplayError(
                f"request #{record.number} was {record.verdict} ({record.status}"
                f"{': ' + record.reason if record.reason else ''}), so there is no delivery to "
                "replay.",
                hint="replay a kept delivery (verdict 'kept' or 'duplicate').",
            )
        return record

    @property
    def last_event(self) -> Event | None:
        """The most recently kept event, or ``None``."""
        return self._hub.last()

    def clear(self) -> None:
        """Forget the kept events, e.g. before waiting only for new ones."""
        self._hub.clear()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: received, kept, duplicates, rejected (with the last reason), callbacks."""
        with self._stats_lock:
            stats = dict(self._stats)
        hub = self._hub
        stats["duplicates"] = hub.duplicates
        stats["evicted"] = hub.evicted
        stats["events_kept"] = len(hub)
        stats["pending_callbacks"] = hub.pending
        stats["callback_errors"] = hub.callback_errors
        stats["last_callback_error"] = hub.last_callback_error
        return stats

    def wait_for(
        self, predicate: EventPredicate | None = None, count: int = 1, timeout: float = 10
    ) -> list[Event]:
        """Wait until ``count`` kept events match ``predicate`` (any event when ``None``).

        Events kept before the call count too (call :meth:`clear` first to wait only for new
        ones). Returns the matching events; raises :class:`WebhookTimeout` after ``timeout``
        seconds, saying what the listener did receive.
        """
        matches = self._hub.wait(predicate, count, timeout)
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
            f"<WebhookListener {where} {state}, {len(self._hub)} event(s), "
            f"{len(self._secrets)} secret(s)>"
        )

    # -- internals ------------------------------------------------------------------------
    def _bind(self, port: int) -> socket.socket:
        """Bind the listening socket ourselves, to turn each failure into one clear error."""
        family = select_address_family(self.host, port)
        try:
            address = get_sockaddr(self.host, port, family)
        except OSError as exc:
            raise ListenerError(
                f"cannot listen on host {self.host!r}: {exc}",
                hint="use '127.0.0.1' (this machine only) or '0.0.0.0' (every interface).",
            ) from None
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
                f"port {port} on {self.host} is in use by another program.",
                hint=(
                    "stop that program, or choose another port: port=0 picks a free one, or set "
                    "TILEDESK_LISTENER_PORT (in .env or the environment; e.g. 8100) for the "
                    "notebooks' listener, then restart the kernel."
                ),
            )
        if exc.errno == errno.EACCES:
            return ListenerError(
                f"not allowed to listen on port {port}: ports below 1024 need administrator "
                "rights.",
                hint="choose a port from 1024 up (port=0 picks a free one).",
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return ListenerError(
                f"{self.host!r} is not an address of this machine.",
                hint="use '127.0.0.1' (this machine only) or '0.0.0.0' (every interface).",
            )
        return ListenerError(f"cannot listen on {self.host}:{port}: {exc.strerror or exc}")

    def _build_app(self) -> Flask:
        app = Flask("tiledesk_tutorial.listener")
        app.config["MAX_CONTENT_LENGTH"] = self.max_body_bytes
        app.add_url_rule(
            self.path,
            "webhook",
            self._receive,
            methods=["GET", "POST"],
            provide_automatic_options=False,
        )
        app.after_request(self._record)
        app.register_error_handler(HTTPException, self._http_error)
        app.register_error_handler(Exception, self._unexpected_error)
        return app

    def _receive(self) -> Response | tuple[dict[str, Any], int]:
        """``POST <path>``: one delivery, verified, kept once, answered at once."""
        if request.method != "POST":
            return self._status(), 200
        with self._stats_lock:
            self._stats["received"] += 1
        body = request.get_data(cache=False)  # raises 413 above max_body_bytes
        g.body = body
        # werkzeug rebuilds each header from the WSGI environ on every pass: read them once, for
        # the check and for the delivery log.
        g.headers = headers = list(request.headers.items())
        try:
            event = verify_delivery(
                body,
                dict(headers),
                self._secrets,
                verify_token=self.verify_token,
                received_at=now(),
            )
        except WebhookVerificationError as exc:
            return self._reject(exc.status, exc.reason)
        writer = self._writer
        try:
            kept = self._hub.add(event, persist=writer.write if writer is not None else None)
        except (OSError, ValueError) as exc:  # ValueError: the file was closed by stop()
            logger.warning("could not append a webhook event to %s: %s", self.store_file, exc)
            return self._reject(500, f"could not store the event: {exc}")
        g.event = event
        g.verdict = "kept" if kept else "duplicate"
        if kept:
            with self._stats_lock:
                self._stats["kept"] += 1
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

    def _record(self, response: Response) -> Response:
        """After every request (answered, refused or failed): note it in :attr:`deliveries`."""
        verdict = g.get("verdict") or ("refused" if response.status_code >= 400 else "status")
        self._log.record(
            received_at=now(),
            method=request.method,
            path=request.path,
            remote=request.remote_addr or "",
            headers=g.get("headers") or request.headers.items(),
            body=g.get("body", b""),
            status=response.status_code,
            verdict=verdict,
            reason=g.get("reason"),
            event=g.get("event") if verdict != "refused" else None,
        )
        return response

    def _reject(self, status: int, reason: str) -> tuple[dict[str, Any], int]:
        g.verdict = "refused"
        g.reason = reason
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
