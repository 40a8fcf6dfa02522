"""The realtime feed against the sandbox's Realtime API, over real WebSockets on loopback.

Both sides of a conversation, conversations created later, closes, history, heartbeats, a dropped
connection (through a proxy that cuts, refuses or freezes) and a sandbox restart on the same data
folder and port: each time nothing is lost and nothing arrives twice.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import jwt
import pytest

from realtime.helpers import Proxy
from tiledesk_tutorial import TiledeskClient, new_request_id, start_sandbox
from tiledesk_tutorial.config import Config
from tiledesk_tutorial.errors import InvalidInputError
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.realtime import (
    RealtimeAuthError,
    RealtimeEndpointError,
    RealtimeFeed,
    RealtimeTimeout,
    RealtimeUnreachableError,
    running_feeds,
)
from tiledesk_tutorial.wire import new_object_id

T = TypeVar("T")
PASSWORD = "Realtime-Passw0rd!"
WAIT = 20.0  # seconds; a frame takes milliseconds, this only bounds a broken run
# Fast heartbeats and reconnections, so that the tests take seconds.
FAST = {"heartbeat_interval": 0.5, "heartbeat_timeout": 1.0, "reconnect_delay": 0.1}


@dataclass
class World:
    """A sandbox with an agent (the project's owner) signed in."""

    api_url: str
    agent: TiledeskClient

    @property
    def project_id(self) -> str:
        assert self.agent.project_id is not None
        return self.agent.project_id

    def visitor(self, name: str = "Vic") -> TiledeskClient:
        return self.agent.as_visitor(firstname=name)

    def feed(self, **options: object) -> RealtimeFeed:
        return RealtimeFeed(self.agent, **{**FAST, **options})  # type: ignore[arg-type]


def make_world(api_url: str) -> World:
    agent = TiledeskClient(api_url)
    email = f"rt-{uuid.uuid4().hex[:10]}@example.com"
    agent.sign_up(email, PASSWORD, "Ada", "Agent")
    agent.sign_in(email, PASSWORD)
    agent.project_id = agent.create_project("Realtime").id
    return World(api_url, agent)


@pytest.fixture
def world(sandbox_session) -> Iterator[World]:  # type: ignore[no-untyped-def]
    made = make_world(sandbox_session.url)
    yield made
    made.agent.close()


def until(read: Callable[[], T], done: Callable[[T], bool], timeout: float = WAIT) -> T:
    """``read()`` again every 20 ms until ``done`` says yes (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def texts(events: list[Event]) -> list[str | None]:
    return [e.text for e in events if e.is_message]


def test_both_sides_of_a_conversation_arrive_live(world: World) -> None:
    with world.feed() as feed:
        assert feed.state.status == "connected"
        visitor = world.visitor()
        rid = new_request_id(world.project_id)
        visitor.send_message(rid, "Hello, I need help with my order")
        world.agent.send_message(rid, "Hi Vic, I am Ada. How can I help?")
        got = feed.wait_for(lambda e: e.is_message and e.request_id == rid, count=2, timeout=WAIT)
        [created] = feed.wait_for(lambda e: e.event == "request.create", timeout=WAIT)
    assert [(e.role, e.sender_fullname, e.text) for e in got] == [
        ("visitor", "Vic", "Hello, I need help with my order"),
        ("agent", "Ada Agent", "Hi Vic, I am Ada. How can I help?"),
    ]
    assert all(e.source == "realtime" and e.event == "message.create" for e in got)
    assert got[0].topic == f"/{world.project_id}/requests/{rid}/messages"
    assert created.request_id == rid and created.topic == f"/{world.project_id}/requests"
    assert feed.events.index(created) < feed.events.index(got[0])  # the conversation first
    assert feed.state.status == "stopped" and not feed.running


def test_a_conversation_created_later_is_followed_too(world: World) -> None:
    with world.feed() as feed:
        first, later = new_request_id(world.project_id), new_request_id(world.project_id)
        world.visitor("Ann").send_message(first, "first conversation")
        feed.wait_for(lambda e: e.text == "first conversation", timeout=WAIT)
        world.visitor("Bob").send_message(later, "a new conversation")
        world.agent.send_message(later, "answer in the new one")
        feed.wait_for(lambda e: e.request_id == later and e.is_message, count=2, timeout=WAIT)
        assert set(feed.conversations) == {first, later}


def test_what_was_there_before_start_is_history(world: World) -> None:
    rid = new_request_id(world.project_id)
    visitor = world.visitor()
    visitor.send_message(rid, "before the feed")
    with world.feed() as feed:
        visitor.send_message(rid, "after the feed started")
        feed.wait_for(lambda e: e.text == "after the feed started", timeout=WAIT)
        assert "before the feed" not in texts(feed.events)
        assert feed.stats["history_skipped"] >= 2  # the conversation and its first message
    with world.feed(include_history=True) as feed:
        got = feed.wait_for(lambda e: e.is_message and e.request_id == rid, count=2, timeout=WAIT)
        assert texts(got) == ["before the feed", "after the feed started"]


def test_a_close_is_request_close_then_chat_closed(world: World) -> None:
    with world.feed() as feed:
        rid = new_request_id(world.project_id)
        world.visitor().send_message(rid, "please close me")
        feed.wait_for(lambda e: e.text == "please close me", timeout=WAIT)
        world.agent.close_request(rid)
        [closed] = feed.wait_for(lambda e: e.event == "request.close", timeout=WAIT)
        [system] = feed.wait_for(lambda e: e.role == "system", timeout=WAIT)
    assert closed.request_id == rid and closed.status == 1000
    assert system.text == "Chat closed" and system.request_id == rid


def test_a_reply_long_after_the_close_still_comes_back_to_the_view(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After Run All of notebook 06 the conversation is closed and, after a grace period, no
    longer followed: the view's reply asks the feed to follow it again, so the reply shows."""
    from tiledesk_tutorial import ConversationView, realtime

    monkeypatch.setattr(realtime, "CLOSED_GRACE", 0.2)
    with world.feed() as feed:
        rid = new_request_id(world.project_id)
        world.visitor().send_message(rid, "hello, then goodbye")
        feed.wait_for(lambda e: e.text == "hello, then goodbye", timeout=WAIT)
        world.agent.close_request(rid)
        feed.wait_for(lambda e: e.text == "Chat closed" and e.request_id == rid, timeout=WAIT)
        followed = until(lambda: feed.conversations, lambda rids: rid not in rids)
        assert rid not in followed  # the grace is over: the feed no longer follows it
        view = ConversationView(feed, client=world.agent, request_id=rid)
        assert view.reply("typed long after the close") is not None
        assert view.wait_until_shown("typed long after the close", timeout=WAIT)
        view.close()
    with pytest.raises(InvalidInputError, match="conversation's id"):
        feed.follow_conversation("")


def test_a_dropped_connection_loses_nothing_and_repeats_nothing(
    world: World, sandbox_session
) -> None:  # type: ignore[no-untyped-def]
    proxy = Proxy(sandbox_session.port)
    try:
        feed = world.feed(url=proxy.url()).start()
        open_one, closing, visitor = (
            new_request_id(world.project_id),
            new_request_id(world.project_id),
            world.visitor(),
        )
        visitor.send_message(open_one, "a1")
        visitor.send_message(closing, "b1")
        feed.wait_for(lambda e: e.text in ("a1", "b1"), count=2, timeout=WAIT)

        proxy.refuse = True
        proxy.cut()
        # While the feed is away: a message, a close, and a new conversation.
        visitor.send_message(open_one, "a2 while disconnected")
        world.agent.close_request(closing)
        created = new_request_id(world.project_id)
        world.visitor("Cy").send_message(created, "c1 while disconnected")
        state = feed.state
        assert state.status == "reconnecting" and state.since is not None
        assert "reconnecting to" in str(state)
        proxy.refuse = False

        missed = {"a2 while disconnected", "c1 while disconnected", "Chat closed"}
        feed.wait_for(lambda e: e.text in missed, count=3, timeout=WAIT)
        feed.wait_for(
            lambda e: e.event == "request.close" and e.request_id == closing, timeout=WAIT
        )
        visitor.send_message(open_one, "a3 after")
        feed.wait_for(lambda e: e.text == "a3 after", timeout=WAIT)
        assert feed.state.status == "connected" and feed.state.reconnects == 1
        events = feed.events
        feed.stop()
    finally:
        proxy.close()
    counts = Counter(texts(events))
    assert counts == Counter(["a1", "b1", *missed, "a3 after"])  # each once
    assert feed.stats["duplicates"] >= 2  # a1 and b1 came again in the snapshots, and dropped
    kinds = Counter((e.event, e.request_id) for e in events if not e.is_message)
    assert kinds[("request.create", created)] == 1 and kinds[("request.close", closing)] == 1


def test_a_sandbox_restart_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    data = tmp_path / "sandbox"
    server = start_sandbox(port=0, data_dir=data)
    port = server.port
    world = make_world(server.url)
    feed = world.feed(max_reconnect_delay=0.5)
    try:
        feed.start()
        rid, visitor = new_request_id(world.project_id), world.visitor()
        visitor.send_message(rid, "before the restart")
        feed.wait_for(lambda e: e.text == "before the restart", timeout=WAIT)
        server.stop()
        server = start_sandbox(port=port, data_dir=data)  # same data, same port
        visitor.send_message(rid, "just after the restart")  # maybe before the feed is back
        feed.wait_for(lambda e: e.text == "just after the restart", timeout=WAIT)
        visitor.send_message(rid, "later")
        feed.wait_for(lambda e: e.text == "later", timeout=WAIT)
        assert feed.state.reconnects >= 1
    finally:
        feed.stop()
        world.agent.close()
        server.stop()
    assert texts(feed.events) == ["before the restart", "just after the restart", "later"]


def test_heartbeats_are_sent_and_answered(world: World) -> None:
    with world.feed(heartbeat_interval=0.1, heartbeat_timeout=5.0) as feed:
        rid = new_request_id(world.project_id)
        world.visitor().send_message(rid, "one")
        feed.wait_for(lambda e: e.text == "one", timeout=WAIT)
        stats = until(lambda: feed.stats, lambda s: s["heartbeats_answered"] >= 3)
    assert stats["heartbeats_answered"] >= 3 and stats["heartbeats_sent"] >= 3
    assert stats["reconnects"] == 0


def test_answering_the_servers_pings_keeps_the_connection() -> None:
    # The sandbox, like Tiledesk, drops a client that sent nothing for a whole ping period; with
    # its own heartbeats far apart, only the feed's answers to the server's pings keep it.
    with start_sandbox(port=0, realtime_ping_interval=0.2) as server:
        world = make_world(server.url)
        try:
            with world.feed(heartbeat_interval=60.0) as feed:
                stats = until(lambda: feed.stats, lambda s: s["server_pings"] >= 5)
                rid = new_request_id(world.project_id)
                world.visitor().send_message(rid, "still connected")
                feed.wait_for(lambda e: e.text == "still connected", timeout=WAIT)
                assert feed.state.status == "connected"
                final = feed.stats
        finally:
            world.agent.close()
    assert stats["server_pings"] >= 5 and final["heartbeats_sent"] == 0
    assert final["reconnects"] == 0


def test_a_connection_that_stops_answering_is_replaced(world: World, sandbox_session) -> None:  # type: ignore[no-untyped-def]
    proxy = Proxy(sandbox_session.port)
    try:
        with world.feed(url=proxy.url(), heartbeat_interval=0.2, heartbeat_timeout=0.5) as feed:
            proxy.freeze()  # the socket stays open, nothing passes: only heartbeats can tell
            rid = new_request_id(world.project_id)
            world.visitor().send_message(rid, "sent while the old connection hangs")
            feed.wait_for(lambda e: e.text == "sent while the old connection hangs", timeout=WAIT)
            assert proxy.connections >= 2 and feed.state.reconnects >= 1
    finally:
        proxy.close()


def test_refusals_from_the_sandbox_are_one_sentence(world: World, sandbox_session) -> None:  # type: ignore[no-untyped-def]
    visitor = world.visitor()
    with pytest.raises(RealtimeAuthError, match="needs an agent's token"):
        RealtimeFeed(visitor, project_id=world.project_id)
    assert world.agent.token is not None
    claims = jwt.decode(world.agent.token[4:], options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-sandbox-secret-0123456789abcdef", algorithm="HS256")
    with pytest.raises(RealtimeAuthError, match=r"refused the token \(401"):
        RealtimeFeed(token=forged, api_url=world.api_url, project_id=world.project_id).start()
    wrong_path = f"ws://127.0.0.1:{sandbox_session.port}/no/such/path"
    with pytest.raises(RealtimeEndpointError, match="TILEDESK_REALTIME_URL"):
        world.feed(url=wrong_path).start()


def test_a_project_the_agent_is_not_in_is_said_after_the_snapshot_wait(world: World) -> None:
    feed = RealtimeFeed(world.agent, project_id=new_object_id(), open_timeout=1.0)
    with pytest.raises(RealtimeUnreachableError, match="no conversations came back") as caught:
        feed.start()
    assert "owner, admin or agent" in (caught.value.hint or "")
    assert not feed.running


def test_tiledesk_realtime_url_is_where_it_connects(world: World, sandbox_session) -> None:  # type: ignore[no-untyped-def]
    proxy = Proxy(sandbox_session.port)
    try:
        config = Config(api_url=world.api_url, realtime_url=proxy.url())
        with RealtimeFeed(world.agent, config=config) as feed:
            assert feed.url == proxy.url() and proxy.connections == 1
    finally:
        proxy.close()


def test_a_rerun_cell_replaces_the_earlier_feed(world: World) -> None:
    first = world.feed().start()
    second = world.feed().start()  # the same project on the same server: the first one stops
    try:
        assert not first.running and second.running
        assert running_feeds() == [second]
        assert second.start() is second  # idempotent
        rid = new_request_id(world.project_id)
        world.visitor().send_message(rid, "to the second feed")
        second.wait_for(lambda e: e.text == "to the second feed", timeout=WAIT)
        assert "to the second feed" not in texts(first.events)
    finally:
        second.stop()
        second.stop()  # idempotent
        first.stop()


def test_wait_for_says_where_the_feed_stands(world: World) -> None:
    with world.feed() as feed, pytest.raises(RealtimeTimeout) as caught:
        feed.wait_for(lambda e: e.text == "never sent", timeout=0.2)
    assert "got 0" in str(caught.value) and "connected to" in str(caught.value)
    assert caught.value.events == []


def test_the_conversation_view_follows_a_feed_and_replies_through_it(world: World) -> None:
    from tiledesk_tutorial import ConversationView

    with world.feed() as feed:
        rid = new_request_id(world.project_id)
        view = ConversationView(feed, client=world.agent, request_id=rid)
        world.visitor("John").send_message(rid, "Where is my parcel?")
        assert view.wait_until_shown("Where is my parcel?")
        sent = view.reply("On its way, John!")  # what the Send button does
        assert sent is not None and view.wait_until_shown("On its way, John!")
        world.agent.close_request(rid)
        assert view.wait_until_shown("Chat closed")
        html = view.html
        view.close()
    assert html.index("Where is my parcel?") < html.index("On its way, John!")
    assert "tiledesk-role-visitor" in html and "tiledesk-role-agent" in html
    assert ">closed</span>" in html and view.status_text.startswith("Sent at ")
