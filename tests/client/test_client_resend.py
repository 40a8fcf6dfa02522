"""``TiledeskClient.resend_delivery`` against the sandbox: a recorded delivery sent again to a real
listener, and the errors a learner meets (a visitor, an unknown delivery, another project)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.models import ResentDelivery
from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload, parse_delivery

PASSWORD = "Passw0rd!-resend"


@pytest.fixture
def agent(sandbox: SandboxHandle) -> Iterator[TiledeskClient]:
    """A signed-in agent who owns a fresh project."""
    client = TiledeskClient(sandbox.url, backoff_factor=0.01)
    client.sign_up(f"ada-{uuid.uuid4().hex[:8]}@example.com", PASSWORD, "Ada", "Agent")
    client.sign_in()
    client.project_id = client.create_project("Resend").id
    yield client
    client.close()


def test_a_delivery_is_resent_to_the_listener_which_sees_a_repeat(agent: TiledeskClient) -> None:
    with WebhookListener() as listener:
        subscription = agent.create_subscription(listener.url)
        listener.add_secret(subscription.secret)
        visitor = agent.as_visitor(firstname="John")
        visitor.send_message(new_request_id(agent.project_id), "send me twice")
        [event] = listener.wait_for(lambda e: e.text == "send me twice")
        [entry] = agent.wait_for_subscription_history(1)

        resent = agent.resend_delivery(entry)
        assert isinstance(resent, ResentDelivery)
        assert (resent.resent, resent.event, resent.target, resent.subscription_id) == (
            entry.id,
            "message.create",
            listener.url,
            subscription.id,
        )
        assert resent.outcome == "pending"
        assert "/subscriptions/history/" in (agent.last_curl or "")

        history = agent.wait_for_subscription_history(2)
        assert len(history) == 2 and history[0].ok
        records = [r for r in listener.deliveries if r.method == "POST"]
        assert [r.verdict for r in records] == ["duplicate", "kept"]  # newest first
        assert records[0].event is not None and records[0].event.message_id == event.message_id
        assert len(listener.events) == 1

        agent.resend_delivery(entry.id)  # by id works as well
        assert len(agent.wait_for_subscription_history(3)) == 3  # every attempt recorded
        found = agent.find_delivery_log(event)  # the newest attempt of that same body
        assert found is not None and found.request_body["payload"]["_id"] == event.message_id
        assert found.request_body["timestamp"] == event.timestamp
        assert agent.resend_delivery(event).resent == found.id  # resent from the event received
        listener.wait_for_delivery(lambda d: d.number >= 4)
        assert [r.verdict for r in listener.deliveries] == ["duplicate"] * 3 + ["kept"]


def test_the_errors_a_learner_meets(agent: TiledeskClient) -> None:
    with WebhookListener() as listener:
        listener.add_secret(agent.create_subscription(listener.url).secret)
        visitor = agent.as_visitor(firstname="John")
        visitor.send_message(new_request_id(agent.project_id), "hello")
        [entry] = agent.wait_for_subscription_history(1)

        with pytest.raises(PermissionDeniedError, match="admin role"):
            visitor.resend_delivery(entry.id)
        with pytest.raises(NotFoundError, match="No recorded delivery"):
            agent.resend_delivery("5f" + "0" * 22)
        other = agent.create_project("Other").id
        with pytest.raises(NotFoundError):
            agent.resend_delivery(entry.id, project_id=other)
        with pytest.raises(InvalidInputError, match="not a valid delivery id"):
            agent.resend_delivery("a/b")
        made_up = parse_delivery(make_delivery(make_message_payload("never sent"), "s" * 40).body)
        assert agent.find_delivery_log(made_up, timeout=0.2, project_id=agent.project_id) is None
        with pytest.raises(InvalidInputError, match="not in the server's delivery history"):
            agent.resend_delivery(made_up, project_id=agent.project_id, timeout=0.2)
