"""Webhook deliveries from the sandbox to a real local HTTP receiver: events, retries, restarts."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from support.sandbox import FAST_RETRIES, Receiver, World, make_world

from tiledesk_tutorial.sandbox import RetryPolicy, SandboxHandle, start_sandbox


@pytest.fixture
def receiver():
    """A receiver that answers 200 to everything."""
    r = Receiver()
    yield r
    r.stop()


def test_every_message_and_request_event_is_delivered(sandbox: SandboxHandle, receiver) -> None:
    world = make_world(sandbox.url)
    for event in ("message.create", "request.create", "request.update", "request.close"):
        world.subscribe(receiver.url, event)
    rid = world.request_id()
    world.send(rid, "Hello")
    world.send(rid, "Hi, I am Ada", as_agent=True)
    world.api.put(f"/{world.project_id}/requests/{rid}/close", token=world.agent_token)
    received = receiver.wait(6)
    assert sandbox.wait_for_deliveries()
    assert len(receiver.received) == 6
    assert sorted(receiver.events(), key=str) == sorted(
        [
            ("request.create", 200),
            ("message.create", "Hello"),
            ("message.create", "Hi, I am Ada"),
            ("request.update", 1000),
            ("request.close", 1000),
            ("message.create", "Chat closed"),
        ],
        key=str,
    )
    by_event = {}
    for delivery in received:
        by_event.setdefault(delivery.body["hook"]["event"], []).append(delivery.body["payload"])
    closed = by_event["request.close"][0]
    assert [m["text"] for m in closed["messages"]] == ["Hello", "Hi, I am Ada"]
    assert closed["request_id"] == rid
    system = [p for p in by_event["message.create"] if p["sender"] == "system"]
    assert system[0]["text"] == "Chat closed"
    assert system[0]["attributes"]["messagelabel"] == {"key": "CHAT_CLOSED"}
    world.api.close()


def test_the_api_answers_before_the_receiver_does(sandbox: SandboxHandle) -> None:
    """Delivery never blocks the call that caused it: the receiver is held until the end."""
    release = threading.Event()

    def slow(index, delivery) -> int:
        release.wait(10)
        return 200

    receiver = Receiver(respond=slow)
    try:
        world = make_world(sandbox.url)
        world.subscribe(receiver.url)
        rid = world.request_id()
        answers = [world.send(rid, f"message {n}") for n in range(3)]
        assert [a["text"] for a in answers] == ["message 0", "message 1", "message 2"]
        assert not release.is_set()  # every call above returned while the receiver was held
        release.set()
        receiver.wait(3)
    finally:
        release.set()
        receiver.stop()
    world.api.close()


def test_a_500_is_retried_until_it_succeeds_and_every_attempt_is_in_history(
    sandbox: SandboxHandle,
) -> None:
    receiver = Receiver(respond=lambda index, delivery: 500 if index < 2 else 200)
    try:
        world = make_world(sandbox.url)
        world.subscribe(receiver.url)
        world.send(world.request_id(), "retry me")
        deliveries = receiver.wait(3)
        assert sandbox.wait_for_deliveries()
    finally:
        receiver.stop()
    assert [d.body["payload"]["text"] for d in deliveries] == ["retry me"] * 3
    assert len({d.raw for d in deliveries}) == 1  # a retry re-sends the very same body
    history = world.api.get(
        f"/{world.project_id}/subscriptions/history", token=world.agent_token
    ).json()
    assert [(h["attempt"], h["statusCode"], h["outcome"]) for h in history] == [
        (3, 200, "delivered"),
        (2, 500, "retrying"),
        (1, 500, "retrying"),
    ]
    entry = history[0]
    for field in ("event", "target", "response", "body", "jsonRequest", "err", "id_project"):
        assert field in entry
    assert json.loads(entry["response"])["statusCode"] == 200
    sent = json.loads(entry["jsonRequest"])
    assert sent["payload"]["text"] == "retry me"
    assert sent["token"].endswith("chars)")  # the delivery token is not kept in full
    world.api.close()


@pytest.mark.parametrize("status", [400, 404, 410])
def test_a_4xx_other_than_429_is_not_retried(sandbox: SandboxHandle, status: int) -> None:
    receiver = Receiver(respond=lambda index, delivery: status)
    try:
        world = make_world(sandbox.url)
        world.subscribe(receiver.url)
        world.send(world.request_id(), "no retry")
        receiver.wait(1)
        assert sandbox.wait_for_deliveries()
    finally:
        receiver.stop()
    assert len(receiver.received) == 1
    history = world.api.get(
        f"/{world.project_id}/subscriptions/history", token=world.agent_token
    ).json()
    assert [(h["statusCode"], h["outcome"]) for h in history] == [(status, "rejected")]
    world.api.close()


def test_retries_stop_after_the_configured_count(sandbox: SandboxHandle) -> None:
    receiver = Receiver(respond=lambda index, delivery: 503)
    try:
        world = make_world(sandbox.url)
        world.subscribe(receiver.url)
        world.send(world.request_id(), "always failing")
        receiver.wait(1 + FAST_RETRIES.retries)
        assert sandbox.wait_for_deliveries()
    finally:
        receiver.stop()
    assert len(receiver.received) == 1 + FAST_RETRIES.retries
    history = world.api.get(
        f"/{world.project_id}/subscriptions/history", token=world.agent_token
    ).json()
    assert history[0]["outcome"] == "failed"
    world.api.close()


def test_a_429_is_retried(sandbox: SandboxHandle) -> None:
    receiver = Receiver(respond=lambda index, delivery: 429 if index == 0 else 200)
    try:
        world = make_world(sandbox.url)
        world.subscribe(receiver.url)
        world.send(world.request_id(), "slow down")
        first, second = receiver.wait(2)
        assert sandbox.wait_for_deliveries()
    finally:
        receiver.stop()
    assert second.raw == first.raw
    world.api.close()


def test_connection_refused_is_retried(sandbox: SandboxHandle) -> None:
    world = make_world(sandbox.url)
    receiver = Receiver()
    url = receiver.url
    receiver.stop()  # the port is now closed: every attempt is refused
    world.subscribe(url)
    world.send(world.request_id(), "nobody listens")
    assert sandbox.wait_for_deliveries(timeout=10)
    history = world.api.get(
        f"/{world.project_id}/subscriptions/history", token=world.agent_token
    ).json()
    assert len(history) == 1 + FAST_RETRIES.retries
    assert all(h["statusCode"] is None and h["err"] for h in history)
    assert history[0]["outcome"] == "failed"
    world.api.close()


def test_deleted_subscription_gets_nothing_more(sandbox: SandboxHandle, receiver) -> None:
    world = make_world(sandbox.url)
    subscription = world.subscribe(receiver.url)
    rid = world.request_id()
    world.send(rid, "before")
    receiver.wait(1)
    deleted = world.api.delete(
        f"/{world.project_id}/subscriptions/{subscription['_id']}", token=world.agent_token
    )
    assert deleted.status_code == 200 and deleted.json()["_id"] == subscription["_id"]
    assert "secret" not in deleted.json()
    again = world.api.delete(
        f"/{world.project_id}/subscriptions/{subscription['_id']}", token=world.agent_token
    )
    assert (again.status_code, again.json()) == (200, None)
    world.send(rid, "after")
    assert sandbox.wait_for_deliveries()
    assert [d.body["payload"]["text"] for d in receiver.received] == ["before"]
    world.api.close()


def _restartable(data_dir: Path) -> SandboxHandle:
    return start_sandbox(
        port=0,
        data_dir=data_dir,
        retry_policy=RetryPolicy(retries=8, backoff=0.05, max_backoff=0.2),
    )


def test_data_survives_a_restart(tmp_path: Path) -> None:
    with _restartable(tmp_path) as sandbox:
        world = make_world(sandbox.url)
        rid = world.request_id()
        world.send(rid, "remember me")
        world.api.close()
    with _restartable(tmp_path) as sandbox:
        world = World(
            api=type(world.api)(sandbox.url),
            **{k: v for k, v in vars(world).items() if k != "api"},
        )
        messages = world.api.get(world.messages_path(rid), token=world.agent_token)
        assert [m["text"] for m in messages.json()] == [
            "remember me"
        ]  # same key: tokens still valid
        signin = world.api.post(
            "/auth/signin", json={"email": world.email, "password": "Passw0rd!123"}
        )
        assert signin.status_code == 200
        world.api.close()


def test_pending_delivery_is_made_after_a_restart(tmp_path: Path) -> None:
    hold = threading.Event()
    receiver = Receiver(respond=lambda index, delivery: 200 if hold.is_set() else 503)
    try:
        with _restartable(tmp_path) as sandbox:
            world = make_world(sandbox.url)
            world.subscribe(receiver.url)
            world.send(world.request_id(), "deliver me later")
            receiver.wait(1)  # the first attempt failed; the delivery waits for a retry
        hold.set()  # the receiver recovers while the sandbox is down
        with _restartable(tmp_path) as sandbox:
            assert sandbox.wait_for_deliveries(timeout=10)
            delivered = [d for d in receiver.received if d.body["payload"].get("text")]
            assert delivered[-1].body["payload"]["text"] == "deliver me later"
            history = type(world.api)(sandbox.url).get(
                f"/{world.project_id}/subscriptions/history", token=world.agent_token
            )
            outcomes = [h["outcome"] for h in history.json()]
            assert outcomes[0] == "delivered" and "retrying" in outcomes
    finally:
        receiver.stop()
    world.api.close()
