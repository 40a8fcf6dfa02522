"""Run the sandbox: in background threads of the current process, or as a server until stopped."""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from cheroot import wsgi

from tiledesk_tutorial.sandbox.access import Authenticator
from tiledesk_tutorial.sandbox.activity import Activity
from tiledesk_tutorial.sandbox.app import SandboxApp, with_prefix
from tiledesk_tutorial.sandbox.delivery import DeliveryWorker, RetryPolicy
from tiledesk_tutorial.sandbox.service import SandboxService
from tiledesk_tutorial.sandbox.store import Store

log = logging.getLogger("tiledesk_tutorial.sandbox")

DEFAULT_PREFIXES = ("/v3",)


class SandboxError(RuntimeError):
    """The sandbox could not start (for example, its port is taken)."""


class _Server(wsgi.Server):
    """cheroot's WSGI server (thread pool, keep-alive), logging through ``logging``, not stderr."""

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        log.log(
            level if level > logging.INFO else logging.DEBUG, "http: %s", msg, exc_info=traceback
        )


class SandboxHandle:
    """A running sandbox: its ``url``, its data folder, and ``stop()``. Also a context manager."""

    def __init__(
        self,
        server: _Server,
        store: Store,
        service: SandboxService,
        delivery: DeliveryWorker,
        data_dir: Path,
        temporary: bool,
    ) -> None:
        self._server = server
        self.store = store
        self.service = service
        self.delivery = delivery
        self.data_dir = data_dir
        self._temporary = temporary
        self.host, self.port = server.bind_addr[:2]
        self.url = f"http://{_url_host(self.host)}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve, name=f"tiledesk-sandbox-{self.port}", daemon=True
        )
        self._stopped = False
        self._lock = threading.Lock()

    def _start(self) -> SandboxHandle:
        self.delivery.start()
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True until :meth:`stop` is called."""
        return not self._stopped

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Wait until no webhook delivery is queued or in flight; True if that happened in time."""
        return self.delivery.wait_idle(timeout)

    def stop(self) -> None:
        """Stop serving, stop the delivery worker, close the database. Safe to call twice."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.stop()
        self._thread.join(timeout=5)
        self.delivery.stop()
        self.store.close()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SandboxHandle {self.url} {state}, data in {self.data_dir}>"


def build_app(
    data_dir: Path,
    *,
    prefixes: tuple[str, ...] = DEFAULT_PREFIXES,
    retry_policy: RetryPolicy | None = None,
    delivery_threads: int = 4,
    origin: str = "http://localhost:3000",
) -> tuple[Callable, Store, SandboxService, DeliveryWorker]:
    """Open the data folder and assemble the WSGI application with its store and workers."""
    store = Store(Path(data_dir) / "sandbox.sqlite3")
    global_secret = store.meta("global_secret", lambda: secrets.token_hex(32))
    auth = Authenticator(store, global_secret)
    activity = Activity()
    delivery = DeliveryWorker(
        store, policy=retry_policy, origin=origin, threads=delivery_threads, activity=activity
    )
    service = SandboxService(store, auth, global_secret, on_deliveries=delivery.submit)
    app = SandboxApp(service, extra_routes=_extra_routes(), activity=activity)
    return with_prefix(app, prefixes), store, service, delivery


def _extra_routes() -> dict[str, Callable]:
    try:
        from tiledesk_tutorial.sandbox.console import console_routes
    except ImportError:
        return {}
    return console_routes()


def start_sandbox(
    port: int = 0,
    data_dir: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    prefixes: tuple[str, ...] = DEFAULT_PREFIXES,
    retry_policy: RetryPolicy | None = None,
    delivery_threads: int = 4,
) -> SandboxHandle:
    """Start the sandbox in background threads and return its handle.

    ``port=0`` picks a free port. Without ``data_dir`` the data lives in a temporary folder that
    ``stop()`` removes; with one, everything persists there across restarts.
    """
    temporary = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="tiledesk-sandbox-")) if temporary else Path(data_dir)
    server = _bind(host, port)
    url = f"http://{_url_host(server.bind_addr[0])}:{server.bind_addr[1]}"
    try:
        app, store, service, delivery = build_app(
            folder,
            prefixes=prefixes,
            retry_policy=retry_policy,
            delivery_threads=delivery_threads,
            origin=url,
        )
    except BaseException:
        server.stop()
        raise
    server.wsgi_app = app
    return SandboxHandle(server, store, service, delivery, folder, temporary)._start()


def _bind(host: str, port: int) -> _Server:
    """Create the server and bind its socket; a busy port is a one-line :class:`SandboxError`."""
    server = _Server(
        (host, port),
        _not_ready,
        numthreads=8,
        request_queue_size=128,
        timeout=30,
        shutdown_timeout=2,
        server_name="tiledesk-tutorial-sandbox",
    )
    try:
        server.prepare()
    except OSError as exc:
        raise SandboxError(
            f"Cannot start the sandbox on {host}:{port}: the port is already in use "
            "(another sandbox?). Stop the other one, or pick another port (0 = any free port)."
        ) from exc
    return server


def _not_ready(environ: dict, start_response: Callable) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def lan_address() -> str:
    """This machine's address on its local network (no packet is sent), or 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
