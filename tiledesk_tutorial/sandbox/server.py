"""Run the sandbox: one asyncio event loop in a background thread, serving REST and the Realtime
API on one port with uvicorn, and sending the webhooks from the same loop.

The loop has its own thread so that :func:`start_sandbox` works anywhere, a Jupyter kernel (which
runs a loop of its own) included. Key derivation (scrypt) runs in a small thread pool beside it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn

from tiledesk_tutorial.sandbox import log_redaction
from tiledesk_tutorial.sandbox.access import Authenticator
from tiledesk_tutorial.sandbox.accounts import Accounts
from tiledesk_tutorial.sandbox.api import Api
from tiledesk_tutorial.sandbox.app import SandboxApp
from tiledesk_tutorial.sandbox.changes import ChangeFeed, Changes
from tiledesk_tutorial.sandbox.conversations import Conversations
from tiledesk_tutorial.sandbox.delivery import DeliveryWorker, RetryPolicy
from tiledesk_tutorial.sandbox.errors import SandboxError
from tiledesk_tutorial.sandbox.files import Files
from tiledesk_tutorial.sandbox.folder import FolderLock, open_store
from tiledesk_tutorial.sandbox.protocols import (
    HEAD_TIMEOUT,
    SandboxHttpProtocol,
    SandboxWebSocketProtocol,
)
from tiledesk_tutorial.sandbox.realtime import DEFAULT_QUEUE_BYTES, Realtime
from tiledesk_tutorial.sandbox.resend import Resends
from tiledesk_tutorial.sandbox.room import Room
from tiledesk_tutorial.sandbox.subscriptions import Outbox, Subscriptions
from tiledesk_tutorial.wire import SERVER_PING_INTERVAL

log = logging.getLogger("tiledesk_tutorial.sandbox")

DEFAULT_PREFIXES = ("/v3",)
#: Threads for key derivation (scrypt, ~75 ms of CPU each): half the cores, so that a burst of
#: sign-ins or wrong passwords always leaves the event loop a core for everyone else's calls.
KEY_DERIVATION_THREADS = max(1, (os.cpu_count() or 2) // 2)
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0


class SandboxHandle:
    """A running sandbox: its ``url``, its data folder, its parts, and ``stop()``.

    Also a context manager. ``accounts.add_member(project_id, user_id, role)`` adds a teammate
    (the sandbox has no invitation route); ``realtime.connections`` are the open sockets.
    """

    def __init__(
        self,
        sock: socket.socket,
        data_dir: Path,
        temporary: bool,
        *,
        prefixes: tuple[str, ...],
        retry_policy: RetryPolicy | None,
        deliveries_per_target: int,
        realtime_ping_interval: float,
        realtime_queue_bytes: int,
        head_timeout: float,
        room: bool = False,
        folder_lock: FolderLock | None = None,
        repair: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self._temporary = temporary
        self._folder_lock = folder_lock
        self.host, self.port = sock.getsockname()[:2]
        self.url = f"http://{_url_host(self.host)}:{self.port}"
        self.store = open_store(Path(data_dir), repair=repair)
        global_secret = self.store.meta("global_secret", lambda: secrets.token_hex(32))
        self.auth = Authenticator(self.store, global_secret)
        self.accounts = Accounts(self.store, self.auth, global_secret)
        self.subscriptions = Subscriptions(self.store)
        self.realtime = Realtime(
            self.store,
            self.auth,
            ping_interval=realtime_ping_interval,
            queue_bytes=realtime_queue_bytes,
        )
        #: The workshop room (``start_sandbox(room=True)``, ``tiledesk-sandbox --room``), or None.
        self.room = Room(self.store, lambda: self.realtime.connections) if room else None
        self.delivery = DeliveryWorker(
            self.store,
            policy=retry_policy,
            origin=self.url,
            per_target=deliveries_per_target,
            on_recorded=self.room.record_attempts if self.room else None,
        )
        feed = ChangeFeed(self.store, Outbox(), self._committed)
        self.conversations = Conversations(self.store, feed)
        self._key_derivation = ThreadPoolExecutor(
            KEY_DERIVATION_THREADS, thread_name_prefix="sandbox-kdf"
        )
        #: The chat uploads, kept in ``<data folder>/files``.
        self.files = Files(self.store, Path(data_dir) / "files")
        api = Api(self.auth, self.accounts, self.conversations, self.subscriptions,
                  self._key_derivation, Resends(feed), self.files)  # fmt: skip
        http = type("HttpProtocol", (SandboxHttpProtocol,), {"head_timeout": head_timeout})
        config = uvicorn.Config(
            SandboxApp(api, self.realtime, prefixes, room=self.room, data_dir=Path(data_dir)),
            http=http,
            ws=SandboxWebSocketProtocol,
            ws_max_size=64 * 1024,  # a client's frames are small: subscribe, heartbeat, me
            ws_ping_interval=None,  # the Realtime API pings with its own heartbeat frames
            ws_per_message_deflate=False,  # as the real server: no compression offered
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"tiledesk-sandbox-{self.port}", daemon=True
        )
        self._loop_thread_id: int | None = None
        self._stopped = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ lifecycle

    def _start(self) -> SandboxHandle:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) or self._failure is not None:
            self.stop()
            raise SandboxError(
                f"The sandbox could not start on {self.url}: {self._failure or 'timed out'}",
                hint="See the log above; start it again, or on another port (0 = any free one).",
            )
        return self

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        try:
            await self.delivery.start()
            serving = asyncio.ensure_future(self._server.serve(sockets=[self._sock]))
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.005)
            if serving.done():
                serving.result()
            self._ready.set()
            await serving
        except BaseException as exc:
            self._failure = exc
            log.exception("the sandbox stopped on an error")
        finally:
            self._ready.set()
            if self.room is not None:
                await self.room.close()
            await self.realtime.close()
            await self.delivery.stop()

    def _committed(self, changes: Changes) -> None:
        """A write committed: send its webhooks and publish its frames, on the event loop."""
        if threading.get_ident() == self._loop_thread_id:
            self._hand_over(changes)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._hand_over, changes)

    def _hand_over(self, changes: Changes) -> None:
        self.delivery.submit(changes.deliveries)
        self.realtime.publish(changes)
        if self.room is not None:
            self.room.observe(changes)

    @property
    def running(self) -> bool:
        """True until :meth:`stop` is called."""
        return not self._stopped

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Wait until no webhook delivery is queued, due for a retry or in flight; True if that
        happened within ``timeout`` seconds."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopped:
            return self.delivery.pending == 0
        waiting = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self.delivery.wait_idle(), timeout), loop
        )
        try:
            waiting.result(timeout + 1)
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """Stop serving, stop the deliveries, close the database. Safe to call twice.

        Deliveries not made yet stay in the data folder for the next start.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)
        if self._thread.is_alive():
            self._thread.join(_STOP_TIMEOUT + 5)
        self._sock.close()
        self._key_derivation.shutdown(wait=True)
        self.store.close()
        if self._folder_lock is not None:
            self._folder_lock.release()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SandboxHandle {self.url} {state}, data in {self.data_dir}>"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The sandbox's event loop: uvloop where it is installed (Linux and macOS), else asyncio's.

    Measured with ``make bench``'s throughput part on the 2-core machine: 785 and 821 messages a
    second (every webhook delivered) on asyncio's loop, 1,008 and 1,048 on uvloop.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def start_sandbox(
    port: int = 0,
    data_dir: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    prefixes: tuple[str, ...] = DEFAULT_PREFIXES,
    retry_policy: RetryPolicy | None = None,
    deliveries_per_target: int = 4,
    realtime_ping_interval: float = SERVER_PING_INTERVAL,
    realtime_queue_bytes: int = DEFAULT_QUEUE_BYTES,
    head_timeout: float = HEAD_TIMEOUT,
    room: bool = False,
    repair: bool = False,
) -> SandboxHandle:
    """Start the sandbox in a background thread and return its handle once it answers.

    ``port=0`` picks a free port. Without ``data_dir`` the data lives in a temporary folder that
    ``stop()`` removes; with one, everything persists there across restarts. A busy port raises
    :class:`SandboxError`; a folder another sandbox runs on, or one that cannot be written or holds
    a damaged database, raises :class:`~tiledesk_tutorial.sandbox.folder.DataFolderError` (one line
    naming the folder); ``repair=True`` moves a damaged write-ahead log aside, keeping its good
    part. ``deliveries_per_target`` bounds the webhooks in flight to one
    target; ``realtime_ping_interval`` is the Realtime API's heartbeat (Tiledesk's 30 s; tests
    shorten it), ``realtime_queue_bytes`` the frames that may wait for a client that does not
    read, ``head_timeout`` the seconds a client has to send a request's headers. ``room=True``
    also serves the presenter's room view (``handle.room``; see
    :mod:`tiledesk_tutorial.sandbox.room`).
    """
    log_redaction.install()
    temporary = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="tiledesk-sandbox-")) if temporary else Path(data_dir)
    sock = _bind(host, port)
    lock = FolderLock(folder)
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        lock.acquire(f"http://{_url_host(bound_host)}:{bound_port}")
        handle = SandboxHandle(
            sock,
            folder,
            temporary,
            prefixes=prefixes,
            retry_policy=retry_policy,
            deliveries_per_target=deliveries_per_target,
            realtime_ping_interval=realtime_ping_interval,
            realtime_queue_bytes=realtime_queue_bytes,
            head_timeout=head_timeout,
            room=room,
            folder_lock=lock,
            repair=repair,
        )
    except BaseException:
        sock.close()
        lock.release()
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return handle._start()


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket; a busy port is a one-line :class:`SandboxError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise SandboxError(
            f"Cannot start the sandbox on {host}:{port}: {exc.strerror}.",
            hint="Use an address of this machine, such as 127.0.0.1 or 0.0.0.0.",
        ) from None
    family, kind, proto, _, address = infos[0]
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say they are
    # TCP, and with it on, each answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise SandboxError(
            f"Cannot start the sandbox on {host}:{port}: the port is already in use "
            "(another sandbox?).",
            hint="Stop the other one, or pick another port (0 = any free port).",
        ) from exc
    sock.setblocking(False)
    return sock


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
