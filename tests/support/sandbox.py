"""Helpers for the sandbox's tests: raw HTTP calls, a tutorial world, a webhook receiver, and a
Realtime API client with the recorded WebSocket sessions.

These tests talk to the sandbox with plain ``requests`` and the ``websockets`` library (not the
package's client), so that what is checked is exactly what goes over the wire.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from websockets.sync.client import ClientConnection, connect
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tiledesk_tutorial.sandbox import RetryPolicy

PASSWORD = "Passw0rd!123"
# Fast retries, so that tests of retried deliveries take a second, not minutes.
FAST_RETRIES = RetryPolicy(retries=3, backoff=0.05, max_backoff=0.2)
_emails = itertools.count(1)


def shape(value: Any) -> Any:
    """The structure of a JSON value: dict keys (recursively) and list element shapes."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


class Api:
    """Raw HTTP against a sandbox: ``api.post("/auth/signin", json=..., token=...)``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; ``token`` is sent verbatim as the Authorization header."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = token
        if basic is not None:
            raw = f"{basic[0]}:{basic[1]}".encode()
            all_headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        return self.session.request(
            method, self.base_url + path, headers=all_headers, timeout=10, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET ``path``."""
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """POST ``path``."""
        return self.call("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        """PUT ``path``."""
        return self.call("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        """DELETE ``path``."""
        return self.call("DELETE", path, **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self.session.close()


@dataclass
class World:
    """The tutorial's cast: an agent who owns a project, and a signed-in visitor."""

    api: Api
    email: str
    agent_token: str
    agent_id: str
    project_id: str
    visitor_token: str
    visitor_id: str

    def request_id(self) -> str:
        """A fresh ``support-group-<project>-<hex>`` conversation id."""
        return f"support-group-{self.project_id}-{uuid.uuid4().hex}"

    def messages_path(self, request_id: str) -> str:
        """``/<pid>/requests/<rid>/messages``."""
        return f"/{self.project_id}/requests/{request_id}/messages"

    def send(self, request_id: str, text: str, *, as_agent: bool = False) -> dict[str, Any]:
        """Send a message as the visitor (or the agent) and return the JSON answer."""
        token = self.agent_token if as_agent else self.visitor_token
        response = self.api.post(self.messages_path(request_id), json={"text": text}, token=token)
        assert response.status_code == 200, response.text
        return response.json()

    def new_visitor(self, firstname: str = "Vic") -> tuple[str, str]:
        """Sign in another anonymous visitor; returns (token, user id)."""
        body = self.api.post(
            "/auth/signinAnonymously", json={"id_project": self.project_id, "firstname": firstname}
        ).json()
        return body["token"], body["user"]["_id"]

    def subscribe(self, target: str, event: str = "message.create") -> dict[str, Any]:
        """Create a webhook subscription as the agent (owner)."""
        response = self.api.post(
            f"/{self.project_id}/subscriptions",
            json={"event": event, "target": target},
            token=self.agent_token,
        )
        assert response.status_code == 200, response.text
        return response.json()


def sign_up_agent(
    api: Api, firstname: str = "Ada", lastname: str = "Agent"
) -> tuple[str, str, str]:
    """Sign up and sign in a new agent; returns (email, token, user id)."""
    email = f"agent{next(_emails)}-{uuid.uuid4().hex[:6]}@example.com"
    signup = api.post(
        "/auth/signup",
        json={"email": email, "password": PASSWORD, "firstname": firstname, "lastname": lastname},
    )
    assert signup.status_code == 200 and signup.json()["success"], signup.text
    signin = api.post("/auth/signin", json={"email": email, "password": PASSWORD}).json()
    return email, signin["token"], signin["user"]["_id"]


def make_world(base_url: str) -> World:
    """An agent with a project and a visitor of that project, on the sandbox at ``base_url``."""
    api = Api(base_url)
    email, token, agent_id = sign_up_agent(api)
    project = api.post("/projects", json={"name": "Tutorial Project"}, token=token).json()
    visitor = api.post(
        "/auth/signinAnonymously", json={"id_project": project["_id"], "firstname": "Visitor Vic"}
    ).json()
    return World(
        api=api,
        email=email,
        agent_token=token,
        agent_id=agent_id,
        project_id=project["_id"],
        visitor_token=visitor["token"],
        visitor_id=visitor["user"]["_id"],
    )


@dataclass
class Received:
    """One delivery as the receiver saw it."""

    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server that records webhook deliveries and answers as it is told.

    ``respond`` maps the n-th delivery (0-based) to a status; by default everything gets 200.
    """

    respond: Callable[[int, Received], int] = lambda index, delivery: 200
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_SilentHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _app(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        raw = request.get_data()
        delivery = Received(dict(request.headers), json.loads(raw), raw, time.time())
        with self._cond:
            index = len(self.received)
            self.received.append(delivery)
            self._cond.notify_all()
        status = self.respond(index, delivery)
        return Response(json.dumps({"ok": status < 300}), status=status)(environ, start_response)

    def wait(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` deliveries arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} deliveries, got {len(self.received)}: "
                        f"{[d.body['hook']['event'] for d in self.received]}"
                    )
                self._cond.wait(remaining)
            return list(self.received)

    def events(self) -> list[tuple[str, Any]]:
        """(event, text or status) of each delivery, in arrival order."""
        return [
            (
                d.body["hook"]["event"],
                d.body["payload"].get("text", d.body["payload"].get("status")),
            )
            for d in self.received
        ]

    def stop(self) -> None:
        """Stop the server and free its port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _SilentHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_request(self, *args: Any) -> None:
        pass


# -- the Realtime API ------------------------------------------------------------------------------

WS_TRANSCRIPTS = Path(__file__).resolve().parents[1] / "transcripts" / "ws"
_WS_LINE = re.compile(r"^\[\s*[\d.]+s\] (>>|<<) (.*)$")


def ws_url(base_url: str, token: str | None = None, path: str = "/") -> str:
    """The socket's URL on a sandbox: ``ws://host:port/?token=<URL-encoded token>``."""
    url = "ws" + base_url.removeprefix("http") + path
    return url if token is None else f"{url}?token={quote(token)}"


class Socket:
    """A Realtime API client over ``websockets.sync``: JSON frames in and out."""

    def __init__(self, base_url: str, token: str, path: str = "/") -> None:
        opening = connect(
            ws_url(base_url, token, path), open_timeout=10, close_timeout=2, ping_interval=None
        )
        self.connection: ClientConnection = opening.__enter__()

    def send(self, action: str, payload: Any = None) -> None:
        """Send one frame."""
        frame: dict[str, Any] = {"action": action}
        if payload is not None:
            frame["payload"] = payload
        self.connection.send(json.dumps(frame))

    def subscribe(self, topic: str) -> None:
        """Send a subscribe frame."""
        self.send("subscribe", {"topic": topic})

    def ping(self) -> None:
        """Send a heartbeat ping."""
        self.send("heartbeat", {"message": {"text": "ping"}})

    def recv(self, timeout: float = 10) -> dict[str, Any]:
        """The next frame, parsed."""
        return json.loads(self.connection.recv(timeout=timeout))

    def next_publish(self, timeout: float = 10) -> dict[str, Any]:
        """The next ``publish`` frame's payload (heartbeats in between are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if frame["action"] == "publish":
                return frame["payload"]

    def assert_nothing_pending(self) -> None:
        """Frames come in order: if a ping's pong is next, nothing else was queued before it."""
        self.ping()
        assert self.recv() == {"action": "heartbeat", "payload": {"message": {"text": "pong"}}}

    def close(self) -> None:
        """Close the socket."""
        self.connection.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def recorded_frames(name: str) -> list[tuple[str, dict[str, Any]]]:
    """The JSON frames of a recorded WebSocket session, as (``">>"`` or ``"<<"``, frame)."""
    frames = []
    for line in (WS_TRANSCRIPTS / name).read_text().splitlines():
        match = _WS_LINE.match(line)
        if match:
            try:
                frames.append((match.group(1), json.loads(match.group(2))))
            except ValueError:
                continue  # "this is not json", sent on purpose
    return frames
