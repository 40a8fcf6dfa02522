"""The sandbox's ASGI application: the REST API and the Realtime API on one port.

HTTP requests go to :class:`~tiledesk_tutorial.sandbox.api.Api`, served at the root and under each
API prefix (``/v3`` by default, so both kinds of base URL work); WebSocket handshakes go to
:class:`~tiledesk_tutorial.sandbox.realtime.Realtime`. Every HTTP answer carries
``Access-Control-Allow-Origin: *``, and no error of the sandbox's own code is ever more than a
logged ``500`` with a one-line body; a full disk is ``507`` with ``Retry-After``. In room mode,
``/room`` and ``/room/live`` are the presenter's room view and its socket
(:mod:`tiledesk_tutorial.sandbox.room`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path

from tiledesk_tutorial.sandbox.api import Api, error_response
from tiledesk_tutorial.sandbox.asgi import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    json_response,
    text_response,
)
from tiledesk_tutorial.sandbox.errors import ApiError
from tiledesk_tutorial.sandbox.realtime import Realtime
from tiledesk_tutorial.sandbox.room import ROOM_PATHS, ROOM_SOCKET_PATH, Room
from tiledesk_tutorial.sandbox.store import is_disk_full

log = logging.getLogger("tiledesk_tutorial.sandbox")

#: Seconds a client is asked to wait when the disk is full.
DISK_FULL_RETRY_AFTER = 5
#: Seconds between two log lines about a full disk.
DISK_FULL_LOG_EVERY = 30.0


class SandboxApp:
    """The ASGI application (uvicorn serves it)."""

    def __init__(
        self,
        api: Api,
        realtime: Realtime,
        prefixes: Iterable[str],
        room: Room | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.api = api
        self.data_dir = data_dir
        self._disk_full_logged_at = -math.inf
        self.realtime = realtime
        self.room = room
        self.prefixes = tuple("/" + p.strip("/") for p in prefixes if p.strip("/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            # The socket is at "/" and "/ws/"; under a prefix only at "/v3/ws/" (the path older
            # Tiledesk cloud dashboards used): "/v3/" itself is refused, as on Tiledesk.
            path = self._unprefixed(scope["path"])
            if self.room is not None and path == ROOM_SOCKET_PATH:
                await self.room.serve(scope, receive, send)
                return
            if path != scope["path"] and not path.startswith("/ws"):
                path = scope["path"]
            await self.realtime.serve(scope, receive, send, path=path)

    def _unprefixed(self, path: str) -> str:
        for prefix in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return path[len(prefix) :] or "/"
        return path

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, self._unprefixed(scope["path"]))
        if self.room is not None:
            response = self._room_route(request)
            if response is not None:
                await response.send(send)
                return
        try:
            response = await self.api.dispatch(request)
        except ApiError as error:
            response = error_response(error)
        except Exception as exc:
            if is_disk_full(exc):
                response = self._disk_full()
            else:
                log.exception("sandbox error on %s %s", request.method, request.path)
                response = json_response(
                    500, {"success": False, "msg": "Internal sandbox error: see the sandbox's log."}
                )
        response.headers["Access-Control-Allow-Origin"] = "*"
        await response.send(send)
        if self.room is not None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
            self.room.touch()  # an account, a project or a subscription may have changed

    def _disk_full(self) -> Response:
        """``507`` with ``Retry-After``: nothing was written, and writes resume once there is
        space again (the transaction rolled back, the database is intact)."""
        now = time.monotonic()
        if now - self._disk_full_logged_at > DISK_FULL_LOG_EVERY:
            self._disk_full_logged_at = now
            log.warning(
                "the disk of the data folder %s is full: writes are answered 507 until space "
                "is freed",
                self.data_dir,
            )
        response = json_response(
            507,
            {
                "success": False,
                "msg": "The sandbox's disk is full: nothing was saved. Free some space on the "
                "sandbox's machine, then try again.",
            },
        )
        response.headers["Retry-After"] = str(DISK_FULL_RETRY_AFTER)
        return response

    def _room_route(self, request: Request) -> Response | None:
        """The room view's page in room mode (never with the API's CORS header), else None."""
        if self.room is not None and request.path in ROOM_PATHS:
            if request.method in ("GET", "HEAD"):
                return self.room.page(request)
            return text_response(405, "Method Not Allowed")
        return None
