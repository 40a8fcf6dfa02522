"""Room mode over real HTTP and WebSockets: who may see the room, what it shows, and how it moves.

The room view's page and socket are driven as the page drives them (``/room``, ``/room/live``),
against a sandbox started with ``room=True``; learners act through the REST API, webhook targets
are real local servers, and a learner's realtime feed is a real socket.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from support.fast_retries import FAST_RETRIES
from support.sandbox import (
    PASSWORD,
    Api,
    Receiver,
    Socket,
    World,
    make_world,
    sign_up_agent,
    ws_url,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tiledesk_tutorial.sandbox import RetryPolicy, SandboxHandle, start_sandbox
from tiledesk_tutorial.sandbox.log_redaction import QueryTokenFilter, hide_query_tokens
from tiledesk_tutorial.sandbox.room import describe_problem, public_target


@pytest.fixture
def room_sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox(port=0, retry_policy=FAST_RETRIES, room=True) as handle:
        yield handle


@pytest.fixture
def world(room_sandbox: SandboxHandle) -> Iterator[World]:
    world = make_world(room_sandbox.url)
    yield world
    world.api.close()


class RoomSocket:
    """The room view's socket, as the page opens it; ``until`` waits for a room that matches."""

    def __init__(self, sandbox: SandboxHandle, **kwargs: Any) -> None:
        assert sandbox.room is not None
        url = "ws" + sandbox.url.removeprefix("http") + "/room/live?token=" + sandbox.room.token
        self.socket: ClientConnection = connect(url, **kwargs).__enter__()
        self.room: dict[str, Any] | None = None
        self.frames: list[dict[str, Any]] = []

    def next_room(self, timeout: float = 10) -> dict[str, Any]:
        frame = json.loads(self.socket.recv(timeout=timeout))
        self.frames.append(frame)
        if frame["action"] == "publish":
            assert frame["payload"]["topic"] == "/room"
            self.room = frame["payload"]["message"]
        return frame

    def until(self, condition: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while self.room is None or not condition(self.room):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the room never matched; last: {self.room}")
            self.next_room(timeout=remaining)
        return self.room

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> RoomSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def receiving(respond: Callable[[int, Any], int] = lambda n, _: 200) -> Iterator[Receiver]:
    receiver = Receiver(respond=respond)
    try:
        yield receiver
    finally:
        receiver.stop()


def learner(room: dict[str, Any], email: str) -> dict[str, Any] | None:
    return next((entry for entry in room["learners"] if entry["email"] == email), None)


def hooks(room: dict[str, Any], email: str) -> list[dict[str, Any]]:
    entry = learner(room, email)
    return [hook for project in entry["projects"] for hook in project["subscriptions"]]


def refusal_status(url: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, **kwargs).close()
    return refused.value.response.status_code


# ------------------------------------------------------------------------------ who may look


def test_no_token_no_page_and_no_socket(room_sandbox: SandboxHandle) -> None:
    base = room_sandbox.url
    assert room_sandbox.room is not None
    for path in ("/room", "/room/", "/room?token=", "/room?token=wrong", "/v3/room"):
        response = requests.get(base + path, timeout=10)
        assert response.status_code == 401, path
        assert "presenter token" in response.text
        assert "<table" not in response.text
    socket_url = "ws" + base.removeprefix("http") + "/room/live"
    assert refusal_status(socket_url) == 401
    assert refusal_status(socket_url + "?token=wrong") == 401
    # A learner's own agent token opens the Realtime API, never the room.
    world = make_world(base)
    assert refusal_status(socket_url + "?token=" + quote(world.agent_token)) == 401
    assert (
        requests.post(base + "/room?token=" + room_sandbox.room.token, timeout=10).status_code
        == 405
    )


def test_the_token_opens_the_page_and_its_cookie_keeps_it_open(room_sandbox) -> None:
    token = room_sandbox.room.token
    session = requests.Session()
    first = session.get(f"{room_sandbox.url}/room?token={token}", timeout=10)
    assert first.status_code == 200
    assert "<title>Room view" in first.text
    assert token not in first.text
    assert "'self'" in first.headers["Content-Security-Policy"]
    assert first.headers["Referrer-Policy"] == "no-referrer"
    assert "Access-Control-Allow-Origin" not in first.headers
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/room" in cookie
    # A reload without the query (the page takes the token out of its address bar) still works.
    assert session.get(room_sandbox.url + "/room", timeout=10).status_code == 200
    socket_url = "ws" + room_sandbox.url.removeprefix("http") + "/room/live"
    with connect(socket_url, additional_headers={"Cookie": f"tiledesk_room={token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["payload"]["method"] == "CREATE"


def test_another_site_cannot_open_the_room_socket(room_sandbox) -> None:
    url = (
        "ws" + room_sandbox.url.removeprefix("http") + "/room/live?token=" + room_sandbox.room.token
    )
    assert refusal_status(url, origin="http://evil.example") == 403
    host = room_sandbox.url.removeprefix("http://")
    with connect(url, origin=f"http://{host}") as ws:
        assert json.loads(ws.recv(timeout=10))["action"] == "publish"


def test_without_room_mode_there_is_no_room(sandbox: SandboxHandle) -> None:
    assert sandbox.room is None
    response = requests.get(sandbox.url + "/room", timeout=10)
    assert response.status_code == 400  # "room" taken as a project id, as Tiledesk does
    assert refusal_status(ws_url(sandbox.url, "x", path="/room/live")) in (400, 401)


def test_the_presenter_token_is_random_per_start_and_redacted_in_reprs() -> None:
    with start_sandbox(port=0, room=True) as one, start_sandbox(port=0, room=True) as two:
        assert one.room.token != two.room.token
        assert len(one.room.token) >= 20
        assert one.room.token not in repr(one.room)
        assert one.room.view_url(one.url) == f"{one.url}/room?token={one.room.token}"


# ------------------------------------------------------------------------------ what it shows


def test_a_learners_name_is_shown_trimmed(room_sandbox) -> None:
    """Names signed up with stray spaces (Tiledesk keeps them) show trimmed in the room."""
    with RoomSocket(room_sandbox) as view:
        api = Api(room_sandbox.url)
        try:
            email, _token, _id = sign_up_agent(api, "Pat ", " Presenter ")
        finally:
            api.close()
        entry = learner(view.until(lambda room: learner(room, email)), email)
        assert entry["name"] == "Pat Presenter"


def test_a_learner_appears_as_they_sign_up_create_a_project_and_send(room_sandbox) -> None:
    with RoomSocket(room_sandbox) as view:
        assert view.next_room()["payload"]["method"] == "CREATE"
        assert view.room["learners"] == []

        world = make_world(room_sandbox.url)
        entry = learner(view.until(lambda room: learner(room, world.email)), world.email)
        assert entry["name"] == "Ada Agent"
        view.until(lambda room: learner(room, world.email)["projects"])
        project = learner(view.room, world.email)["projects"][0]
        assert project["id"] == world.project_id and project["name"] == "Tutorial Project"
        assert project["conversations"] == 0 and project["messages"] == {"visitor": 0, "agent": 0}

        rid = world.request_id()
        world.send(rid, "my card number is 4242 4242 4242 4242")
        world.send(rid, "Hi, I am Ada", as_agent=True)

        def sent_two(room: dict) -> bool:
            return learner(room, world.email)["projects"][0]["messages"] == {
                "visitor": 1,
                "agent": 1,
            }

        project = learner(view.until(sent_two), world.email)["projects"][0]
        assert project["conversations"] == 1 and project["open_conversations"] == 1
        assert project["last_message_at"]
        # No message text, and no secret, in anything the presenter received.
        everything = json.dumps(view.frames)
        assert "4242" not in everything and "Hi, I am Ada" not in everything
        assert world.agent_token.split()[-1] not in everything
        assert world.visitor_token.split()[-1] not in everything
        assert PASSWORD not in everything and "password" not in everything


def test_subscriptions_show_no_secret_and_no_query_string(room_sandbox, world) -> None:
    with receiving() as receiver:
        subscription = world.subscribe(receiver.url + "?key=hunter2")
        with RoomSocket(room_sandbox) as view:
            [hook] = hooks(view.until(lambda room: hooks(room, world.email)), world.email)
            assert hook["target"] == receiver.url
            assert hook["state"] == "idle" and hook["event"] == "message.create"
            assert subscription["secret"] not in json.dumps(view.frames)
            assert "hunter2" not in json.dumps(view.frames)


def test_a_failing_target_shows_as_failing_then_healthy_again() -> None:
    fixed = threading.Event()  # the learner fixes their handler
    patient = RetryPolicy(retries=20, backoff=0.3, max_backoff=0.3)
    with (
        start_sandbox(port=0, retry_policy=patient, room=True) as sandbox,
        receiving(lambda n, _: 200 if fixed.is_set() else 500) as receiver,
    ):
        world = make_world(sandbox.url)
        world.subscribe(receiver.url)
        with RoomSocket(sandbox) as view:
            world.send(world.request_id(), "one")

            def state(wanted: str) -> Callable[[dict], bool]:
                return lambda room: [h["state"] for h in hooks(room, world.email)] == [wanted]

            [hook] = hooks(view.until(state("failing")), world.email)
            assert hook["last_problem"] == "HTTP 500" and hook["last_status"] == 500
            assert hook["failing_since"] and hook["next_retry_at"]
            assert hook["next_retry_at"] >= hook["failing_since"]
            assert hook["pending"] == 1 and hook["delivered"] == 0
            first_failure = hook["failing_since"]
            view.until(lambda room: hooks(room, world.email)[0]["failed_attempts"] >= 2)
            assert hooks(view.room, world.email)[0]["failing_since"] == first_failure
            fixed.set()
            [hook] = hooks(view.until(state("healthy")), world.email)
            assert hook["delivered"] == 1 and hook["failed_attempts"] >= 2
            assert hook["failing_since"] is None and hook["next_retry_at"] is None
            assert hook["last_status"] == 200 and hook["pending"] == 0
        world.api.close()


def test_a_target_that_never_answers_shows_as_waiting(room_sandbox, world) -> None:
    room_sandbox.room.waiting_after = 0.3
    with socket.create_server(("127.0.0.1", 0)) as asleep:  # accepts, never answers
        world.subscribe(f"http://127.0.0.1:{asleep.getsockname()[1]}/hook")
        with RoomSocket(room_sandbox) as view:
            world.send(world.request_id(), "are you there?")
            [hook] = hooks(
                view.until(lambda room: hooks(room, world.email)[0]["state"] == "waiting"),
                world.email,
            )
            assert hook["pending"] == 1 and hook["waiting_since"]


def test_a_gone_target_shows_cannot_connect_and_gives_up(room_sandbox, world) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    world.subscribe(f"http://127.0.0.1:{port}/hook")
    with RoomSocket(room_sandbox) as view:
        world.send(world.request_id(), "hello")
        [hook] = hooks(
            view.until(lambda room: hooks(room, world.email)[0]["state"] == "failed"), world.email
        )
        assert hook["last_problem"] == "cannot connect"
        assert hook["failed_attempts"] == FAST_RETRIES.retries + 1


def test_a_learner_on_the_realtime_feed_shows_as_connected(room_sandbox, world) -> None:
    with RoomSocket(room_sandbox) as view:
        view.until(lambda room: learner(room, world.email) is not None)
        assert learner(view.room, world.email)["realtime_connections"] == 0
        room_sandbox.room.idle_refresh = 0.2  # a socket opening is no write: the refresh sees it
        with Socket(room_sandbox.url, world.agent_token):
            view.until(lambda room: learner(room, world.email)["realtime_connections"] == 1)
        view.until(lambda room: learner(room, world.email)["realtime_connections"] == 0)


def test_two_presenters_see_the_same_room_and_heartbeats_are_answered(room_sandbox, world) -> None:
    with RoomSocket(room_sandbox) as one, RoomSocket(room_sandbox) as two:
        one.next_room()
        two.next_room()
        one.socket.send(
            json.dumps({"action": "heartbeat", "payload": {"message": {"text": "ping"}}})
        )
        frame = one.next_room()
        while frame["action"] != "heartbeat":
            frame = one.next_room()
        assert frame["payload"]["message"]["text"] == "pong"
        world.send(world.request_id(), "hello")
        for view in (one, two):
            view.until(lambda room: learner(room, world.email)["projects"][0]["conversations"])


def test_the_room_after_a_restart_remembers_counts_and_health(tmp_path: Path) -> None:
    with receiving(lambda n, _: 503) as receiver:
        with start_sandbox(port=0, data_dir=tmp_path, retry_policy=FAST_RETRIES) as first:
            world = make_world(first.url)
            world.subscribe(receiver.url)
            world.send(world.request_id(), "before the restart")
            assert first.wait_for_deliveries(10)
            world.api.close()
        with start_sandbox(port=0, data_dir=tmp_path, room=True) as second:
            room = second.room.snapshot()
    [entry] = room["learners"]
    assert entry["projects"][0]["messages"] == {"visitor": 1, "agent": 0}
    [hook] = entry["projects"][0]["subscriptions"]
    assert hook["state"] == "failed" and hook["last_problem"] == "HTTP 503"


def test_a_busy_room_sends_at_most_a_few_updates_a_second(room_sandbox, world) -> None:
    rid = world.request_id()
    room_sandbox.room.min_interval = 2.0
    with RoomSocket(room_sandbox) as view:
        view.next_room()
        for n in range(40):
            world.send(rid, f"message {n}")
        view.until(
            lambda room: learner(room, world.email)["projects"][0]["messages"]["visitor"] == 40
        )
    # 40 writes in a row make far fewer frames: changes between two updates go out together.
    assert room_sandbox.room.updates_sent < 40


# ------------------------------------------------------------------------------ pieces


def test_problems_and_targets_are_shown_without_secrets() -> None:
    assert describe_problem(502, None) == "HTTP 502"
    assert describe_problem(None, "TimeoutError: timed out, no answer within 15 s") == (
        "no answer (timed out)"
    )
    assert describe_problem(None, "ClientConnectorError: Cannot connect to host") == (
        "cannot connect"
    )
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    assert jwt not in describe_problem(None, f"weird: {jwt}")
    assert public_target("https://user:pw@hooks.example:8443/in?key=abc#x") == (
        "https://hooks.example:8443/in"
    )
    assert public_target("http://[::1]:5000/hook") == "http://[::1]:5000/hook"


def test_tokens_in_logged_socket_paths_are_hidden() -> None:
    line = '127.0.0.1:5 - "WebSocket /?token=JWT%20eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl" [accepted]'
    hidden = hide_query_tokens(line)
    assert "c2lnbmF0dXJl" not in hidden and hidden.startswith('127.0.0.1:5 - "WebSocket /?token=')
    assert "JWT " in hidden
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s"', ("1.2.3.4",
        "/room/live?token=abcdefghijklmnopqrstuv"), None
    )  # fmt: skip
    QueryTokenFilter().filter(record)
    assert "abcdefghijklmnopqrstuv" not in record.getMessage()


def test_the_sandbox_log_never_shows_the_presenter_token(room_sandbox, caplog) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    with RoomSocket(room_sandbox) as view:
        view.next_room()
    deadline = time.monotonic() + 5
    while "WebSocket /room/live" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "WebSocket /room/live?token=" in caplog.text
    assert room_sandbox.room.token not in caplog.text
