"""The conversation view: pure rendering, escaping, windowing, live updates and the reply box.

These run in the test process (no kernel: the widgets' comms are inert); tests/test_widget_kernel.py
drives the same view inside a real ipykernel.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support.listener import post as send

from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.event_hub import EventHub, EventSource
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.webhooks import (
    make_delivery,
    make_hook,
    make_message_payload,
    parse_delivery,
)
from tiledesk_tutorial.widgets import CSS_CLASS, ConversationView, render_conversations

SECRET = "widget-test-secret-0123456789abcdef0123"
RID = "support-group-5f00000000000000000000aa-0123456789abcdef0123456789abcdef"


def message(text: str | None, role: str = "visitor", rid: str = RID, **extra: Any) -> Event:
    """A parsed message.create delivery, shaped like the real server's."""
    payload = make_message_payload(text or "", role=role, request_id=rid, **extra)  # type: ignore[arg-type]
    if text is None:
        del payload["text"]
        payload["type"] = "image"
    return parse_delivery(make_delivery(payload, SECRET).body)


def request_event(event: str, rid: str = RID, status: int = 1000) -> Event:
    """A request.* delivery for ``rid``."""
    payload = {
        "_id": "6b0000000000000000000001",
        "request_id": rid,
        "status": status,
        "id_project": "5f00000000000000000000aa",
        "lead": {"lead_id": "x", "fullname": "John "},
    }
    return parse_delivery(make_delivery(payload, SECRET, hook=make_hook(event)).body)


def texts(page: str) -> list[str]:
    """The message texts of a rendered page, in order (unescaped for readability)."""
    found = re.findall(r'<div class="tiledesk-text"[^>]*>(.*?)</div>', page)
    return [t.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for t in found]


# -- the pure rendering --------------------------------------------------------------------------
def test_nothing_from_a_message_becomes_markup() -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    event = message(evil, sender_fullname='<b onmouseover="x()">Eve</b>', rid=RID + "<i>")
    page = render_conversations([event])
    assert "<script" not in page and "<img" not in page and "<b onmouseover" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b onmouseover=&quot;x()&quot;&gt;Eve&lt;/b&gt;" in page
    assert 'data-request-id="support-group-' in page and "&lt;i&gt;" in page


def test_messages_are_grouped_by_conversation_newest_last() -> None:
    other = RID.replace("aa-", "bb-")
    events = [
        message("a1", rid=RID),
        message("b1", rid=other),
        message("a2", role="agent", rid=RID),
        message("b2", rid=other),
    ]
    page = render_conversations(events)
    # RID's newest message is older than other's: RID's block comes first.
    assert texts(page) == ["a1", "a2", "b1", "b2"]
    assert page.index(f'data-request-id="{RID}"') < page.index(f'data-request-id="{other}"')


def test_a_conversation_is_in_the_order_its_messages_were_written() -> None:
    question = message("question")
    answer = message("answer", role="agent")
    stamp = {**answer.payload, "createdAt": "2030-01-01T00:00:00.000Z"}
    late_answer = parse_delivery({**answer.raw, "payload": stamp})
    # The answer's delivery overtook the question's: the view still shows the question first.
    assert texts(render_conversations([late_answer, question])) == ["question", "answer"]


def test_each_message_has_name_role_badge_and_time() -> None:
    events = [
        message("hello", role="visitor", sender_fullname="John "),
        message("hi", role="agent", sender_fullname="Ada Lovelace"),
        message("beep", role="bot", sender_fullname="Helper bot"),
        message("Chat closed", role="system"),
    ]
    page = render_conversations(events)
    for role, name in [
        ("visitor", "John"),
        ("agent", "Ada Lovelace"),
        ("bot", "Helper bot"),
        ("system", "Bot"),
    ]:
        assert f"tiledesk-role-{role}" in page
        assert f'>{name}</span><span class="tiledesk-badge"' in page
        assert f">{role}</span>" in page
    assert len(re.findall(r'class="tiledesk-time">\d\d:\d\d:\d\d<', page)) == 4
    assert "Conversation with Visitor Vic" in page  # the lead of the request


def test_only_the_newest_window_is_rendered_and_it_is_quick_to_make() -> None:
    events = [message(f"m{i:04d}", role="agent" if i % 2 else "visitor") for i in range(5000)]
    page = render_conversations(events, max_messages=200)
    shown = texts(page)
    assert shown == [f"m{i:04d}" for i in range(4800, 5000)]


def test_a_message_without_text_says_what_it_is() -> None:
    page = render_conversations([message(None)])
    assert "(image message)" in page


def test_a_long_text_is_cut() -> None:
    page = render_conversations([message("x" * 10_000)])
    assert "(10000 characters in all)" in page and "x" * 4001 not in page


def test_a_closed_conversation_is_marked_and_can_reopen() -> None:
    events = [message("hello"), request_event("request.close")]
    assert 'class="tiledesk-state"' in render_conversations(events)
    assert ">closed</span>" in render_conversations(events)
    reopened = [*events, request_event("request.update", status=200)]
    assert ">open</span>" in render_conversations(reopened)


def test_filtering_by_conversation_and_the_empty_page() -> None:
    events = [message("mine"), message("theirs", rid=RID + "x")]
    assert texts(render_conversations(events, request_id=RID)) == ["mine"]
    empty = render_conversations([], request_id=RID)
    assert "No messages yet" in empty and "this conversation" in empty
    with pytest.raises(ValueError, match="max_messages"):
        render_conversations([], max_messages=0)


# -- the widget, fed by hand ------------------------------------------------------------------
def test_view_without_listener_counts_and_windows() -> None:
    view = ConversationView(max_messages=3)
    view.extend(message(f"m{i}") for i in range(5))
    assert texts(view.html) == ["m2", "m3", "m4"]
    assert (
        view.count_text == "5 messages in 1 conversation (the newest 3 shown) · 5 updates received"
    )
    assert CSS_CLASS in view.widget._dom_classes
    view.add(message("m5"))
    assert texts(view.html) == ["m3", "m4", "m5"]
    assert view.status_text == ""
    with pytest.raises(ValueError, match="no client"):
        view.reply("hi")
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    view.close()


def test_a_repeated_delivery_is_shown_once() -> None:
    view = ConversationView()
    event = message("once")
    view.extend([event, event])
    assert texts(view.html) == ["once"] and view.messages_seen == 1
    view.close()


# -- the widget, fed by a listener ------------------------------------------------------------
@pytest.fixture
def listener() -> Iterator[WebhookListener]:
    """A running listener that knows SECRET."""
    with WebhookListener(secret=SECRET) as running:
        yield running


def post(listener: WebhookListener, text: str, session: requests.Session, **kw: Any) -> None:
    """Deliver one message.create to the listener, as Tiledesk would."""
    delivery = make_delivery(make_message_payload(text, request_id=RID, **kw), SECRET)
    answer = send(listener.url, delivery.data(), delivery.headers, session=session)
    assert answer.status_code == 200, answer.text


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    """Poll ``condition`` (the view is updated from another thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_listener_updates_arrive_from_the_worker_thread(listener: WebhookListener) -> None:
    view = ConversationView(listener, max_messages=50)
    assigned_from: set[str] = set()
    view._log.observe(lambda _: assigned_from.add(threading.current_thread().name), "value")
    with requests.Session() as session:
        for i in range(120):
            post(listener, f"burst {i:03d}", session)
    assert view.wait_until_shown("burst 119", timeout=5)
    assert not view.wait_until_shown("never sent", timeout=0.05)
    assert texts(view.html) == [f"burst {i:03d}" for i in range(70, 120)]
    wait_until(lambda: view.count_text.endswith("120 updates received"))
    assert (
        view.count_text
        == "120 messages in 1 conversation (the newest 50 shown) · 120 updates received"
    )
    assert assigned_from == {f"tiledesk-listener-{listener.port}-callbacks"}
    # Coalesced: far fewer redraws than deliveries.
    assert listener.stats["callback_errors"] == 0
    view.close()


def test_events_kept_before_the_view_are_shown(listener: WebhookListener) -> None:
    with requests.Session() as session:
        post(listener, "early", session)
    listener.wait_for(lambda e: e.text == "early")
    view = ConversationView(listener)
    assert texts(view.html) == ["early"]
    view.close()


def test_a_new_view_replaces_the_old_ones_callback(listener: WebhookListener) -> None:
    old = ConversationView(listener)
    new = ConversationView(listener)  # the re-run cell
    with requests.Session() as session:
        post(listener, "after the re-run", session)
    wait_until(lambda: "after the re-run" in new.html)
    assert "after the re-run" not in old.html
    filtered = ConversationView(listener, request_id=RID)  # another filter: both kept
    with requests.Session() as session:
        post(listener, "both see this", session)
    wait_until(lambda: "both see this" in new.html and "both see this" in filtered.html)
    new.close()
    filtered.close()
    old.close()


def test_refresh_rebuilds_from_the_listener(listener: WebhookListener) -> None:
    view = ConversationView(listener)
    view.close()  # stops following
    with requests.Session() as session:
        post(listener, "missed while closed", session)
    listener.wait_for(lambda e: e.text == "missed while closed")
    time.sleep(0.2)
    assert "missed while closed" not in view.html
    view.refresh()
    assert "missed while closed" in view.html


# -- replying through the sandbox --------------------------------------------------------------
def test_reply_box_sends_as_the_agent_and_the_webhook_shows_it(sandbox: SandboxHandle) -> None:
    agent = TiledeskClient(sandbox.url, backoff_factor=0.01)
    agent.sign_up("ada@example.com", "Passw0rd!-widget", "Ada", "Lovelace")
    agent.sign_in("ada@example.com", "Passw0rd!-widget")
    agent.project_id = agent.create_project("Widget").id
    with WebhookListener(port=0) as listener:
        subscription = agent.create_subscription(listener.url)
        listener.add_secret(subscription.secret)
        view = ConversationView(listener, client=agent)
        assert view.reply("too early") is None
        assert view.status_text.startswith("No conversation yet")

        visitor = agent.as_visitor(firstname="John")
        rid = new_request_id(agent.project_id)
        visitor.send_message(rid, "Where is my order?")
        wait_until(lambda: "Where is my order?" in view.html)

        view._text.value = "It ships today."
        view._on_click(None)  # what the Send button does
        assert view._text.value == ""
        assert view.status_text.startswith("Sent at ")
        wait_until(lambda: "It ships today." in view.html)
        assert texts(view.html) == ["Where is my order?", "It ships today."]
        assert "tiledesk-role-agent" in view.html and "Ada Lovelace" in view.html

        view._text.value = "   "
        view._on_click(None)
        assert view.status_text == "Type a message first."

        sandbox.stop()  # the server goes away: the button reports it, nothing is raised
        view._text.value = "Are you there?"
        view._on_click(None)
        assert view.status_text.startswith("Not sent: POST ")
        assert view._text.value == "Are you there?"  # kept, to send again
        assert agent.token is not None and agent.token[4:] not in view.status_text
        view.close()
    visitor.close()
    agent.close()


def test_reply_to_a_fixed_conversation(sandbox_session: SandboxHandle) -> None:
    agent = TiledeskClient(sandbox_session.url, backoff_factor=0.01)
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    agent.sign_up(email, "Passw0rd!-widget", "Ada", "Lovelace")
    agent.sign_in(email, "Passw0rd!-widget")
    agent.project_id = agent.create_project("Widget").id
    rid = new_request_id(agent.project_id)
    agent.as_visitor(firstname="John").send_message(rid, "first")
    view = ConversationView(client=agent, request_id=rid)
    sent = view.reply("answer")
    assert sent is not None and sent.request_id == rid
    assert [m.text for m in agent.list_messages(rid)] == ["first", "answer"]
    view.close()
    agent.close()


def test_the_reply_box_refuses_when_its_source_is_stopped(sandbox_session: SandboxHandle) -> None:
    """A stopped listener would never bring the reply back: the box says so and sends nothing."""
    agent = TiledeskClient(sandbox_session.url, backoff_factor=0.01)
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    agent.sign_up(email, "Passw0rd!-widget", "Ada", "Lovelace")
    agent.sign_in(email, "Passw0rd!-widget")
    agent.project_id = agent.create_project("Widget").id
    rid = new_request_id(agent.project_id)
    agent.as_visitor(firstname="John").send_message(rid, "first")
    listener = WebhookListener(port=0).start()
    view = ConversationView(listener, client=agent, request_id=rid)
    listener.stop()
    view._text.value = "into nothing"
    view._on_text_message(view._text, {"event": "submit"}, [])  # Enter in the box
    assert view.status_text == (
        "Not sent: the webhook listener this view follows is stopped, so your reply would never "
        "show here. Start it again (.start()) or re-run the notebook."
    )
    assert view._text.value == "into nothing"  # kept, to send once the listener runs again
    assert [m.text for m in agent.list_messages(rid)] == ["first"]
    view.close()
    agent.close()


# -- the widget, fed by any event source --------------------------------------------------------
class HubSource:
    """The smallest EventSource: an EventHub and nothing else (as the realtime feed is built)."""

    def __init__(self) -> None:
        self.hub = EventHub(name="tiledesk-listener-test-source")
        self.hub.start()
        self.before_snapshot: list[Event] = []

    @property
    def running(self) -> bool:
        return True

    @property
    def events(self) -> list[Event]:
        for event in self.before_snapshot:  # kept just as the view reads: it is in both
            self.hub.add(event)
        self.before_snapshot = []
        return self.hub.snapshot()

    def on_events(self, callback: Any, *, key: Any, min_interval: float = 0.0) -> Any:
        return self.hub.on_events(callback, key=key, min_interval=min_interval)

    def remove_callback(self, callback_or_key: Any) -> None:
        self.hub.remove_callback(callback_or_key)

    def wait_for(self, predicate: Any = None, count: int = 1, timeout: float = 10) -> list[Event]:
        return self.hub.wait(predicate, count, timeout)


@pytest.fixture
def hub_source() -> Iterator[HubSource]:
    """A running HubSource."""
    source = HubSource()
    yield source
    source.hub.stop()


def test_a_view_follows_any_event_source(hub_source: HubSource) -> None:
    assert isinstance(hub_source, EventSource)
    hub_source.hub.add(message("before the view"))
    view = ConversationView(hub_source, min_interval=0)
    assert texts(view.html) == ["before the view"]
    for n in range(20):
        hub_source.hub.add(message(f"live {n}"))
    assert view.wait_until_shown("live 19")
    assert texts(view.html) == ["before the view", *(f"live {n}" for n in range(20))]
    assert view.count_text == "21 messages in 1 conversation · 21 updates received"
    view.close()
    hub_source.hub.add(message("after close"))
    assert hub_source.hub.wait_idle(10)
    assert "after close" not in view.html


def test_an_event_kept_while_the_view_starts_is_shown_once(hub_source: HubSource) -> None:
    racing = message("kept between the callback and the snapshot")
    hub_source.before_snapshot = [racing]
    view = ConversationView(hub_source, min_interval=0)
    hub_source.hub.add(message("next"))
    assert view.wait_until_shown("next")
    assert texts(view.html) == ["kept between the callback and the snapshot", "next"]
    assert view.messages_seen == 2
    view.close()
