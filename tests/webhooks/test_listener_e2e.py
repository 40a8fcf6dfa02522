"""End to end: the sandbox delivers webhooks for a real conversation to the listener.

sandbox (a Tiledesk-compatible server) -> subscriptions -> the listener, over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import socket
import uuid

import pytest
from support.listener import listener_threads

from tiledesk_tutorial.client import TiledeskClient
from tiledesk_tutorial.jsonl import read_jsonl
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.sandbox import RetryPolicy, start_sandbox
from tiledesk_tutorial.tunnel import webhook_target

EVENTS = ("message.create", "request.create", "request.update", "request.close")


@pytest.fixture
def sandbox():
    # Short retries, so that the test of a listener coming back does not wait long.
    with start_sandbox(retry_policy=RetryPolicy(retries=8, backoff=0.2, max_backoff=1.0)) as sb:
        yield sb


@pytest.fixture
def agent(sandbox):
    client = TiledeskClient(sandbox.url)
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    client.sign_up(email, "a long password 123", "Ada", "Agent")
    client.sign_in()
    client.project_id = client.create_project("Webhooks end to end").id
    yield client
    client.close()


def _subscribe(agent: TiledeskClient, listener: WebhookListener, target: str) -> None:
    for event in EVENTS:
        listener.add_secret(agent.create_subscription(target, event).secret)


def test_a_conversation_in_the_sandbox_reaches_the_listener_verified(sandbox, agent, monkeypatch):
    monkeypatch.delenv("TILEDESK_WEBHOOK_URL", raising=False)
    with WebhookListener(verify_token=True) as listener:
        target = webhook_target(listener, sandbox.url)
        assert target == listener.url  # the sandbox is on this machine: no tunnel
        _subscribe(agent, listener, target)

        visitor = agent.as_visitor(firstname="Vic")
        request_id = visitor.new_request_id()
        visitor.send_message(request_id, "Hello, I need help with my order")
        agent.send_message(request_id, "Hi Vic, I am Ada.")
        agent.close_request(request_id)

        said = listener.wait_for(lambda e: e.is_message and e.request_id == request_id, count=3)
        closes = listener.wait_for(lambda e: e.event == "request.close")
        creates = listener.wait_for(lambda e: e.event == "request.create")

        by_text = {e.text: e for e in said}
        assert by_text["Hello, I need help with my order"].role == "visitor"
        assert by_text["Hi Vic, I am Ada."].role == "agent"
        assert by_text["Hi Vic, I am Ada."].sender_fullname.startswith("Ada")
        assert by_text["Chat closed"].role == "system"
        assert closes[0].request_id == request_id
        assert creates[0].request_id == request_id
        assert all(e.project_id == agent.project_id for e in listener.events)
        assert listener.stats["rejected"] == 0  # every token verified
        assert sandbox.wait_for_deliveries(timeout=10)
    assert listener_threads() == []


def test_a_listener_back_on_its_port_gets_the_deliveries_it_missed(sandbox, agent, tmp_path):
    store_file = tmp_path / "events.jsonl"
    listener = WebhookListener(store_file=store_file).start()
    port = listener.port
    _subscribe(agent, listener, listener.url)
    visitor = agent.as_visitor()
    request_id = visitor.new_request_id()
    visitor.send_message(request_id, "before the restart")
    listener.wait_for(lambda e: e.text == "before the restart")
    listener.stop()  # the kernel restarts; the sandbox keeps retrying

    # Meanwhile the port hangs up on the sandbox once, so its first attempt surely fails.
    with socket.create_server(("127.0.0.1", port)) as hang_up:
        hang_up.settimeout(10)
        visitor.send_message(request_id, "while nobody listens")
        connection, _ = hang_up.accept()
        connection.close()
    again = WebhookListener(port=port, store_file=store_file).start()
    try:
        assert again.wait_for(lambda e: e.text == "while nobody listens", timeout=20)
        assert sandbox.wait_for_deliveries(timeout=20)
    finally:
        again.stop()

    texts = [e.text for e in read_jsonl(store_file) if e.is_message]
    assert texts.count("before the restart") == 1
    assert texts.count("while nobody listens") == 1


def test_a_wrong_secret_is_refused_and_the_sandbox_does_not_retry_a_401(sandbox, agent):
    with WebhookListener(secret="0d1e2f3a-not-the-subscription-secret") as listener:
        agent.create_subscription(listener.url, "message.create")
        visitor = agent.as_visitor()
        visitor.send_message(visitor.new_request_id(), "refused")
        assert sandbox.wait_for_deliveries(timeout=10)

        assert listener.events == []
        assert listener.stats["rejected"] == 1  # 4xx is final: no retry
        assert "wrong x-hook-secret" in listener.stats["last_rejection"]
