"""The delivery inspector widget, driven the way a learner does: requests reach a real listener,
the list follows, a click shows one, the buttons replay it (callbacks, re-POST, resend).

These run in the test process (no kernel: the widgets' comms are inert); notebook 04 runs the same
inspector in a real kernel.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from support.listener import post

from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.inspector import CSS_CLASS, DeliveryInspector, render_delivery
from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload
from tiledesk_tutorial.widgets import ConversationView

SECRET = "inspector-widget-secret-0123456789abcdef01"


def delivery(text: str, secret: str = SECRET):
    return make_delivery(make_message_payload(text), secret)


def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait for something the inspector's own thread does (it redraws on its own)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def inspectors() -> Iterator[list[DeliveryInspector]]:
    made: list[DeliveryInspector] = []
    yield made
    for inspector in made:
        inspector.close()
    assert [t for t in threading.enumerate() if t.name.startswith("tiledesk-inspector")] == []


def test_the_list_follows_the_listener_newest_first(make_listener, inspectors):
    listener = make_listener(secret=SECRET)
    inspector = DeliveryInspector(listener, min_interval=0.01)
    inspectors.append(inspector)
    assert (
        inspector.labels == [] and "Nothing has reached the listener yet" in inspector.detail_html
    )
    assert CSS_CLASS in inspector.widget._dom_classes

    hello = delivery("Hello <b>there</b>")
    post(listener.url, hello.data(), hello.headers)
    post(listener.url, hello.data(), hello.headers)
    forged = delivery("forged", secret="a-guessed-secret-of-sufficient-length-0000")
    post(listener.url, forged.data(), forged.headers)
    assert until(lambda: len(inspector.labels) == 3)
    labels = inspector.labels
    assert labels[0].startswith("#3") and "refused" in labels[0] and "401" in labels[0]
    assert labels[1].startswith("#2") and "duplicate" in labels[1]
    assert labels[2].startswith("#1") and "kept" in labels[2] and "Hello <b>there</b>" in labels[2]
    assert "1 kept, 1 duplicate, 1 refused" in inspector.title_text

    # The newest is shown; it was refused, so nothing can be replayed from it.
    assert inspector.selected is not None and inspector.selected.number == 3
    assert "wrong x-hook-secret" in inspector.detail_html
    assert inspector._rerun.disabled and inspector._post.disabled

    record = inspector.select(1)  # what clicking its line does
    page = inspector.detail_html
    assert record.verdict == "kept" and not inspector._rerun.disabled
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in page and "<b>there</b>" not in page  # escaped
    assert "x-hook-secret" in page.lower() and SECRET not in page  # the header is there, redacted
    assert hello.body["token"] not in page
    assert "&quot;payload&quot;: {" in page  # pretty-printed

    # A new request arrives while an older one is being read: the selection stays.
    post(listener.url, delivery("later").data(), hello.headers)
    assert until(lambda: len(inspector.labels) == 4)
    assert inspector.selected is not None and inspector.selected.number == 1


def test_the_buttons_replay_a_kept_delivery(make_listener, inspectors):
    listener = make_listener(secret=SECRET)
    mine = make_listener(secret=SECRET, verify_token=True)  # the learner's own handler
    handled: list[str] = []
    broken = {"yet": True}

    def handle(event):
        if broken["yet"]:
            raise ValueError("KeyError in my handler")
        handled.append(event.text)

    listener.on_event(handle)
    inspector = DeliveryInspector(listener, replay_url=mine.url, min_interval=0.01)
    inspectors.append(inspector)
    hello = delivery("replay me")
    post(listener.url, hello.data(), hello.headers)
    assert until(lambda: len(inspector.labels) == 1)
    inspector.select(1)

    inspector._rerun.click()
    assert "a callback failed" in inspector.status_text and "KeyError" in inspector.status_text
    broken["yet"] = False  # the learner fixes the handler...
    inspector._rerun.click()  # ...and replays the delivery it failed on
    assert inspector.status_text == "#1: ran 1 callback(s), no error."
    assert handled == ["replay me"]

    inspector._post.click()
    assert inspector.status_text.startswith(f"#1 POSTed to {mine.url}: 200")
    assert [e.text for e in mine.events] == ["replay me"]

    inspector._url.value = "http://127.0.0.1:9/nothing-here"
    inspector._post.click()
    assert inspector.status_text.startswith("Not sent: could not POST delivery #1")


def test_two_inspectors_of_one_listener_do_not_both_follow_it(make_listener, inspectors):
    listener = make_listener(secret=SECRET)
    first = DeliveryInspector(listener, min_interval=0.01)
    second = DeliveryInspector(listener, min_interval=0.01)  # the cell, run again
    inspectors.extend([first, second])
    assert not first._thread.is_alive()
    post(listener.url, delivery("after the re-run").data(), delivery("x").headers)
    assert until(lambda: len(second.labels) == 1)


def test_beside_a_conversation_view(make_listener, inspectors):
    listener = make_listener(secret=SECRET)
    view = ConversationView(listener)
    inspector = DeliveryInspector(listener)
    inspectors.append(inspector)
    box = inspector.beside(view)
    assert list(box.children) == [view.widget, inspector.widget]
    assert view.widget.layout.flex == "1 1 0" and inspector.widget.layout.flex == "1 1 0"
    view.close()


def test_render_delivery_escapes_everything(make_listener):
    listener = make_listener(secret=SECRET)
    post(listener.url, b"<script>alert(1)</script>", {"x-hook-secret": SECRET, "X-Evil": "<i>"})
    page = render_delivery(listener.deliveries[0])
    assert "<script>" not in page and "&lt;script&gt;" in page and "<i>" not in page


def test_resend_from_tiledesk_through_the_sandbox(
    sandbox: SandboxHandle, make_listener, inspectors
):
    agent = TiledeskClient(sandbox.url)
    agent.sign_up(f"ada-{uuid.uuid4().hex[:8]}@example.com", "a long password 123", "Ada", "A")
    agent.sign_in()
    agent.project_id = agent.create_project("Inspector").id
    listener = make_listener()
    listener.add_secret(agent.create_subscription(listener.url).secret)
    inspector = DeliveryInspector(listener, client=agent, min_interval=0.01)
    inspectors.append(inspector)
    visitor = agent.as_visitor(firstname="John")
    visitor.send_message(new_request_id(agent.project_id), "resend me, Tiledesk")
    listener.wait_for(lambda e: e.text == "resend me, Tiledesk")
    agent.wait_for_subscription_history(1)
    assert until(lambda: len(inspector.labels) == 1)
    inspector.select(1)

    inspector._resend.click()
    assert "the server sends it again" in inspector.status_text, inspector.status_text
    assert until(lambda: len(inspector.labels) == 2)
    assert "duplicate" in inspector.labels[0]
    assert len(agent.wait_for_subscription_history(2)) == 2

    visitor_view = DeliveryInspector(listener, client=visitor, min_interval=0.01)
    inspectors.append(visitor_view)
    visitor_view.select(1)
    visitor_view._resend.click()
    assert visitor_view.status_text.startswith("Not resent: "), visitor_view.status_text
    agent.close()
