"""Resending a recorded delivery (a sandbox extension): over HTTP, to a real receiver, and who may.

``POST /:pid/subscriptions/history/:id/resend`` queues the recorded body again for the
subscription's target: the same payload and timestamp, a token that verifies, a new attempt in the
history. Only an owner or an admin of the project may ask.
"""

from __future__ import annotations

import time

import pytest
from support.sandbox import Receiver, World, make_world, sign_up_agent

from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.webhooks import verify_delivery


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _history(world: World, at_least: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        entries = world.api.get(
            f"/{world.project_id}/subscriptions/history", token=world.agent_token
        ).json()
        if len(entries) >= at_least or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def _resend_path(world: World, entry_id: str) -> str:
    return f"/{world.project_id}/subscriptions/history/{entry_id}/resend"


def test_a_recorded_delivery_is_sent_again_as_a_new_attempt(
    sandbox: SandboxHandle, receiver: Receiver
) -> None:
    world = make_world(sandbox.url)
    hook = world.subscribe(receiver.url)
    world.send(world.request_id(), "Hello, resend me")
    [first] = receiver.wait(1)
    [entry] = _history(world, 1)
    assert entry["outcome"] == "delivered"

    answer = world.api.post(_resend_path(world, entry["_id"]), token=world.agent_token)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "success": True,
        "resent": entry["_id"],
        "event": "message.create",
        "target": receiver.url,
        "id_subscription": hook["_id"],
        "id_project": world.project_id,
        "outcome": "pending",
    }
    again = receiver.wait(2)[1]
    assert again.body["payload"] == first.body["payload"]
    assert again.body["timestamp"] == first.body["timestamp"]  # the same delivery: a repeat
    assert again.body["hook"] == first.body["hook"]
    event = verify_delivery(again.raw, again.headers, [hook["secret"]], verify_token=True)
    assert event.text == "Hello, resend me"
    assert {k.lower(): v for k, v in again.headers.items()}["x-hook-secret"] == hook["secret"]

    history = _history(world, 2)
    assert len(history) == 2 and history[0]["_id"] != entry["_id"]
    assert history[0]["outcome"] == "delivered" and history[0]["attempt"] == 1
    assert history[0]["id_subscription"] == hook["_id"]
    world.api.close()


def test_a_failed_delivery_is_resent_once_the_receiver_is_back(sandbox: SandboxHandle) -> None:
    """The case resend exists for: the learner's handler answered 400 (a bug), is fixed, and the
    delivery it refused (never retried: a 4xx is final) is sent again."""
    fixed = {"yet": False}
    receiver = Receiver(respond=lambda index, delivery: 200 if fixed["yet"] else 400)
    try:
        world = make_world(sandbox.url)
        world.subscribe(receiver.url)
        world.send(world.request_id(), "the one that failed")
        receiver.wait(1)
        [entry] = _history(world, 1)
        assert entry["outcome"] == "rejected" and entry["statusCode"] == 400
        fixed["yet"] = True
        answer = world.api.post(_resend_path(world, entry["_id"]), token=world.agent_token)
        assert answer.status_code == 200
        assert receiver.wait(2)[1].body["payload"]["text"] == "the one that failed"
        assert _history(world, 2)[0]["outcome"] == "delivered"
    finally:
        receiver.stop()
    world.api.close()


def test_only_an_owner_or_admin_of_the_project_may_resend(
    sandbox: SandboxHandle, receiver: Receiver
) -> None:
    world, other = make_world(sandbox.url), make_world(sandbox.url)
    world.subscribe(receiver.url)
    world.send(world.request_id(), "who may resend me?")
    receiver.wait(1)
    [entry] = _history(world, 1)
    path = _resend_path(world, entry["_id"])

    def member(role: str) -> str:
        _, token, user_id = sign_up_agent(world.api, firstname=role.title(), lastname="Member")
        sandbox.accounts.add_member(world.project_id, user_id, role)
        return token

    refused = {
        "no token": (None, 401),
        "visitor": (world.visitor_token, 403),
        "agent of another project": (other.agent_token, 403),
        "visitor of another project": (other.visitor_token, 403),
        "plain agent": (member("agent"), 403),
        "supervisor": (member("supervisor"), 403),
    }
    for name, (token, status) in refused.items():
        answer = world.api.post(path, token=token)
        assert answer.status_code == status, (name, answer.status_code, answer.text)
    assert sandbox.wait_for_deliveries()
    assert len(receiver.received) == 1  # nothing was resent by any of them

    for token in (member("admin"), world.agent_token):  # an admin, then the owner
        assert world.api.post(path, token=token).status_code == 200
    receiver.wait(3)
    world.api.close()
    other.api.close()


def test_what_cannot_be_resent_is_a_clear_404(sandbox: SandboxHandle, receiver: Receiver) -> None:
    world, other = make_world(sandbox.url), make_world(sandbox.url)
    hook = world.subscribe(receiver.url)
    world.send(world.request_id(), "soon without a subscription")
    receiver.wait(1)
    [entry] = _history(world, 1)

    unknown = world.api.post(_resend_path(world, "5f" + "0" * 22), token=world.agent_token)
    assert unknown.status_code == 404 and "No recorded delivery" in unknown.json()["msg"]
    not_an_id = world.api.post(_resend_path(world, "nope"), token=world.agent_token)
    assert not_an_id.status_code == 404
    # Another project's owner cannot reach this project's history through their own project.
    elsewhere = other.api.post(
        f"/{other.project_id}/subscriptions/history/{entry['_id']}/resend", token=other.agent_token
    )
    assert elsewhere.status_code == 404

    world.api.delete(f"/{world.project_id}/subscriptions/{hook['_id']}", token=world.agent_token)
    gone = world.api.post(_resend_path(world, entry["_id"]), token=world.agent_token)
    assert gone.status_code == 404 and "subscription of this delivery was deleted" in gone.text
    assert sandbox.wait_for_deliveries()
    assert len(receiver.received) == 1
    world.api.close()
    other.api.close()
