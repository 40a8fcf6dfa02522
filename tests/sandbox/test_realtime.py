"""The Realtime API, driven as a client drives it (``websockets``), against the recorded sessions.

ws-01 (handshake refusals), ws-04 (an agent's session through the tutorial flow) and ws-05
(refused subscriptions) in tests/transcripts/ws/ were recorded against Tiledesk 2.19.16; the frames
the sandbox sends must have the recorded structure (every key, recursively, and its JSON type).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.sandbox import (
    Socket,
    World,
    make_world,
    recorded_frames,
    shape,
    sign_up_agent,
    ws_url,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect

from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox
from tiledesk_tutorial.wire import topic_messages, topic_request, topic_requests

PONG = {"action": "heartbeat", "payload": {"message": {"text": "pong"}}}


@pytest.fixture
def world(sandbox: SandboxHandle) -> Iterator[World]:
    w = make_world(sandbox.url)
    yield w
    w.api.close()


def refusal(url: str) -> tuple[int, dict[str, str], bytes]:
    """Open a handshake that must be refused; its status, headers and body."""
    with pytest.raises(InvalidStatus) as refused, connect(url, open_timeout=5):
        pass
    response = refused.value.response
    return (
        response.status_code,
        {k.lower(): v for k, v in response.headers.raw_items()},
        response.body,
    )


def recorded_publish(name: str, topic_suffix: str, method: str, index: int = 0) -> Any:
    """The message of the ``index``-th recorded publish frame on a topic ending with the suffix."""
    frames = [
        frame["payload"]
        for direction, frame in recorded_frames(name)
        if direction == "<<"
        and frame["action"] == "publish"
        and frame["payload"]["method"] == method
        and frame["payload"]["topic"].endswith(topic_suffix)
    ]
    return frames[index]["message"]


# -- ws-01: handshakes ----------------------------------------------------------------------------


def test_handshake_refusals_answer_as_recorded(world: World, sandbox: SandboxHandle) -> None:
    for url in (ws_url(sandbox.url), ws_url(sandbox.url, "not.a.jwt")):
        status, headers, body = refusal(url)
        assert (status, body) == (401, b"Unauthorized")
        assert headers["content-type"] == "text/html"
        assert headers["connection"] == "close"
    # The real server never answers a visitor's token (ws-01 times out): the sandbox says 401.
    started = time.monotonic()
    assert refusal(ws_url(sandbox.url, world.visitor_token))[0] == 401
    assert time.monotonic() - started < 5
    status, headers, body = refusal(ws_url(sandbox.url, world.agent_token, "/v3/"))
    assert (status, body, headers["content-type"]) == (400, b"Bad Request", "text/html")
    assert refusal(ws_url(sandbox.url, world.agent_token, "/elsewhere"))[0] == 400


def test_a_webhook_delivery_token_cannot_open_a_socket(
    world: World, sandbox: SandboxHandle
) -> None:
    from support.sandbox import Receiver

    receiver = Receiver()
    try:
        world.subscribe(receiver.url)
        world.send(world.request_id(), "hello")
        [delivery] = receiver.wait(1)
        assert refusal(ws_url(sandbox.url, "JWT " + delivery.body["token"]))[0] == 401
    finally:
        receiver.stop()


@pytest.mark.parametrize("path", ["/", "/ws/", "/ws", "/v3/ws/"])
@pytest.mark.parametrize("prefixed", [True, False])
def test_an_agent_token_opens_the_socket(
    world: World, sandbox: SandboxHandle, path: str, prefixed: bool
) -> None:
    token = world.agent_token if prefixed else world.agent_token.removeprefix("JWT ")
    with Socket(sandbox.url, token, path) as client:
        client.send("me")
        me = client.recv()
        assert me["action"] == "me"
        assert me["payload"]["userId"] is None
        assert len(me["payload"]["id"]) == 36
        client.ping()
        assert client.recv() == PONG


# -- ws-04: the agent's session -------------------------------------------------------------------


def test_the_agent_session_publishes_the_recorded_frames(
    world: World, sandbox: SandboxHandle
) -> None:
    name = "ws-04-agent-session.txt"
    pid, rid = world.project_id, world.request_id()
    with Socket(sandbox.url, world.agent_token) as agent:
        agent.subscribe(topic_requests(pid))
        assert agent.next_publish() == {
            "topic": topic_requests(pid),
            "method": "CREATE",
            "message": [],
        }
        answer = world.send(rid, "Hello, I need help with my order")
        created = agent.next_publish()
        assert (created["topic"], created["method"]) == (topic_requests(pid), "CREATE")
        assert shape(created["message"]) == shape(recorded_publish(name, "/requests", "CREATE", 1))
        assert created["message"]["request_id"] == rid
        assert created["message"]["participants"] == [world.agent_id]
        assert created["message"] == answer["request"]  # the object the REST call answered

        agent.subscribe(topic_messages(pid, rid))
        snapshot = agent.next_publish()
        assert snapshot["topic"] == topic_messages(pid, rid)
        assert shape(snapshot["message"]) == shape(recorded_publish(name, "/messages", "CREATE"))
        assert [m["text"] for m in snapshot["message"]] == ["Hello, I need help with my order"]
        assert (
            snapshot["message"]
            == world.api.get(world.messages_path(rid), token=world.agent_token).json()
        )

        agent.subscribe(topic_request(pid, rid))
        one = agent.next_publish()
        assert (one["topic"], one["method"]) == (topic_request(pid, rid), "CREATE")
        recorded_request = recorded_publish(name, rid_suffix(name), "CREATE")
        assert shape(one["message"]) == shape(recorded_request)
        assert (
            one["message"]
            == world.api.get(f"/{pid}/requests/{rid}", token=world.agent_token).json()
        )

        world.send(rid, "Hi Vic, I am Ada. How can I help?", as_agent=True)
        reply = agent.next_publish()
        assert (reply["topic"], reply["method"]) == (topic_messages(pid, rid), "CREATE")
        assert shape(reply["message"]) == shape(recorded_publish(name, "/messages", "CREATE", 1))
        assert reply["message"]["text"] == "Hi Vic, I am Ada. How can I help?"
        world.send(rid, "Order number is 4242")
        later = agent.next_publish()
        assert (later["topic"], later["message"]["text"]) == (
            topic_messages(pid, rid),
            "Order number is 4242",
        )
        # A request's later messages do not publish on /requests (ws-04): nothing else came.
        agent.assert_nothing_pending()

        closed = world.api.put(f"/{pid}/requests/{rid}/close", token=world.agent_token)
        assert closed.status_code == 200
        on_list, on_request, info = (agent.next_publish() for _ in range(3))
        assert (on_list["topic"], on_list["method"]) == (topic_requests(pid), "UPDATE")
        assert (on_request["topic"], on_request["method"]) == (topic_request(pid, rid), "UPDATE")
        assert shape(on_list["message"]) == shape(recorded_publish(name, "/requests", "UPDATE"))
        assert on_list["message"] == on_request["message"]
        assert on_list["message"]["status"] == 1000
        assert info["topic"] == topic_messages(pid, rid)
        assert info["message"]["text"] == "Chat closed"
        assert shape(info["message"]) == shape(recorded_publish(name, "/messages", "CREATE", 3))

        agent.send("unsubscribe", {"topic": topic_messages(pid, rid)})
        agent.assert_nothing_pending()
        world.send(rid, "after unsubscribe (must not arrive on the messages topic)")
        agent.assert_nothing_pending()


def rid_suffix(name: str) -> str:
    """The request topic of a recording ends with its request id."""
    for direction, frame in recorded_frames(name):
        topic = frame.get("payload", {}).get("topic", "")
        if direction == ">>" and topic.count("/") == 3:
            return topic.rsplit("/", 1)[1]
    raise AssertionError("no request topic in " + name)


def test_the_snapshot_lists_open_requests_newest_first(
    world: World, sandbox: SandboxHandle
) -> None:
    pid = world.project_id
    older, newer, closed = world.request_id(), world.request_id(), world.request_id()
    for rid in (older, newer, closed):
        world.send(rid, "hello")
    world.api.put(f"/{pid}/requests/{closed}/close", token=world.agent_token)
    world.send(older, "bumps its updatedAt")  # the visitor writes again: older is now newest
    with Socket(sandbox.url, world.agent_token) as agent:
        agent.subscribe(topic_requests(pid))
        listed = agent.next_publish()["message"]
    assert [r["request_id"] for r in listed] == [older, newer]


# -- ws-05: refused subscriptions -----------------------------------------------------------------


def test_refused_subscriptions_get_no_answer(world: World, sandbox: SandboxHandle) -> None:
    other = make_world(sandbox.url)
    try:
        with Socket(sandbox.url, world.agent_token) as agent:
            for direction, frame in recorded_frames("ws-05-refused-subscriptions.txt"):
                if direction == ">>" and frame["action"] == "subscribe":
                    topic = frame["payload"]["topic"]
                    # The recording's project ids: A (the agent's) and B (another one's).
                    topic = topic.replace("6b0f728c34d0522d0c611d47", other.project_id)
                    topic = topic.replace("6b0f727234d0522d0c611c0a", world.project_id)
                    agent.subscribe(topic)
            agent.connection.send("this is not json")
            agent.send("subscribe", "not an object")
            agent.send("dance")
            agent.assert_nothing_pending()
            other.send(other.request_id(), "a message in project B (must not reach A's socket)")
            agent.assert_nothing_pending()
    finally:
        other.api.close()


def test_publish_and_broadcast_from_clients_are_ignored(
    world: World, sandbox: SandboxHandle
) -> None:
    pid, rid = world.project_id, world.request_id()
    world.send(rid, "hello")
    with (
        Socket(sandbox.url, world.agent_token) as listener,
        Socket(sandbox.url, world.agent_token) as sender,
    ):
        listener.subscribe(topic_messages(pid, rid))
        listener.next_publish()
        for action in ("publish", "broadcast"):
            sender.send(
                action,
                {"topic": topic_messages(pid, rid), "method": "CREATE", "message": {"text": "x"}},
            )
        sender.assert_nothing_pending()
        listener.assert_nothing_pending()


# -- permissions and isolation --------------------------------------------------------------------


def test_an_agent_follows_only_the_conversations_they_take_part_in(
    world: World, sandbox: SandboxHandle
) -> None:
    pid = world.project_id
    _, teammate_token, teammate_id = sign_up_agent(world.api, firstname="Tess")
    sandbox.accounts.add_member(pid, teammate_id, "agent")
    owners = world.request_id()
    world.send(owners, "assigned to the owner, the only available agent then")
    with (
        Socket(sandbox.url, teammate_token) as teammate,
        Socket(sandbox.url, world.agent_token) as owner,
    ):
        teammate.subscribe(topic_requests(pid))
        assert teammate.next_publish()["message"] == []
        teammate.subscribe(topic_messages(pid, owners))  # not theirs: refused, no answer
        teammate.subscribe(topic_request(pid, owners))
        teammate.assert_nothing_pending()
        owner.subscribe(topic_requests(pid))
        assert [r["request_id"] for r in owner.next_publish()["message"]] == [owners]

        # New requests go to the agent with the fewest: the teammate takes the next one.
        theirs = world.request_id()
        world.send(theirs, "for the teammate")
        assert teammate.next_publish()["message"]["request_id"] == theirs
        assert owner.next_publish()["message"]["request_id"] == theirs  # the owner sees all
        teammate.assert_nothing_pending()
        world.send(owners, "another message for the owner's request")
        world.api.put(f"/{pid}/requests/{owners}/close", token=world.agent_token)
        assert owner.next_publish()["method"] == "UPDATE"
        teammate.assert_nothing_pending()  # the owner's request's update is not the teammate's


def test_a_member_of_another_project_cannot_subscribe(world: World, sandbox: SandboxHandle) -> None:
    other = make_world(sandbox.url)
    try:
        rid = world.request_id()
        world.send(rid, "in project A")
        with Socket(sandbox.url, other.agent_token) as outsider:
            for topic in (
                topic_requests(world.project_id),
                topic_request(world.project_id, rid),
                topic_messages(world.project_id, rid),
            ):
                outsider.subscribe(topic)
            outsider.assert_nothing_pending()
            world.send(rid, "still in project A")
            outsider.assert_nothing_pending()
    finally:
        other.api.close()


# -- staying connected, or not --------------------------------------------------------------------


def test_a_client_that_reconnects_and_resubscribes_gets_what_it_missed(
    tmp_path: Any,
) -> None:
    data = tmp_path / "data"
    with start_sandbox(data_dir=data) as first:
        world = make_world(first.url)
        rid = world.request_id()
        world.send(rid, "before the drop")
        client = Socket(first.url, world.agent_token)
        client.subscribe(topic_messages(world.project_id, rid))
        assert [m["text"] for m in client.next_publish()["message"]] == ["before the drop"]
        port = first.port
    with pytest.raises(ConnectionClosed):  # the sandbox stopped: the socket is closed
        client.recv(timeout=10)
    client.close()
    with start_sandbox(port=port, data_dir=data) as second:
        world.api.base_url = second.url
        world.send(rid, "while the client was away")
        with Socket(second.url, world.agent_token) as again:
            again.subscribe(topic_messages(world.project_id, rid))
            texts = [m["text"] for m in again.next_publish()["message"]]
            assert texts == ["before the drop", "while the client was away"]
            world.send(rid, "live again")
            assert again.next_publish()["message"]["text"] == "live again"
    world.api.close()


def test_a_silent_client_is_dropped_and_a_chatty_one_kept() -> None:
    with start_sandbox(realtime_ping_interval=0.2) as sandbox:
        world = make_world(sandbox.url)
        with (
            Socket(sandbox.url, world.agent_token) as silent,
            Socket(sandbox.url, world.agent_token) as chatty,
        ):
            pings = 0
            while pings < 5:  # five intervals: the silent one is long gone by then
                frame = chatty.recv()
                assert frame == {"action": "heartbeat", "payload": {"message": {"text": "ping"}}}
                pings += 1
                chatty.ping()
                assert chatty.recv() == PONG
            frames = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(silent.recv(timeout=10))
            assert frames == [{"action": "heartbeat", "payload": {"message": {"text": "ping"}}}]
            assert len(sandbox.realtime.connections) == 1
        world.api.close()


def test_a_client_that_does_not_read_is_disconnected_and_others_keep_up() -> None:
    with start_sandbox(realtime_queue_bytes=64 * 1024) as sandbox:
        world = make_world(sandbox.url)
        pid, rid = world.project_id, world.request_id()
        world.send(rid, "first")
        stuck = _raw_socket_that_never_reads(sandbox.url, world.agent_token)
        try:
            stuck.sendall(_masked_text_frame(json.dumps(
                {"action": "subscribe", "payload": {"topic": topic_messages(pid, rid)}}
            )))  # fmt: skip
            with Socket(sandbox.url, world.agent_token) as reader:
                reader.subscribe(topic_messages(pid, rid))
                reader.next_publish()
                _wait_for(lambda: len(sandbox.realtime.connections) == 2)
                big = "x" * 20_000
                sent = 0
                # The kernel's buffers take a few MB first; then the sandbox's queue fills.
                while len(sandbox.realtime.connections) == 2 and sent < 2000:
                    world.send(rid, f"{sent} {big}")
                    assert reader.next_publish()["message"]["text"].startswith(f"{sent} ")
                    sent += 1
                assert len(sandbox.realtime.connections) == 1, f"still open after {sent} frames"
                reader.assert_nothing_pending()
        finally:
            stuck.close()
        world.api.close()


def _raw_socket_that_never_reads(base_url: str, token: str) -> socket.socket:
    """A socket that completes the handshake, then never reads: a small receive buffer fills."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    request = (
        f"GET /?token={token.replace(' ', '%20')} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _masked_text_frame(text: str) -> bytes:
    """A client's text frame, encoded by the websockets library."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[])


def _wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_the_realtime_api_and_rest_share_one_port(world: World, sandbox: SandboxHandle) -> None:
    with Socket(sandbox.url, world.agent_token) as client:
        connection = http.client.HTTPConnection(sandbox.host, sandbox.port, timeout=10)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
        client.ping()
        assert client.recv() == PONG
