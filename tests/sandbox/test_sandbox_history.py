"""The delivery history cannot fill a disk: a delivery's request body is stored once for all its
attempts, and the history keeps within a documented bound (the oldest attempts go first)."""

from __future__ import annotations

import json

import pytest
from support.fast_retries import FAST_RETRIES
from support.sandbox import make_world

from tiledesk_tutorial.sandbox import delivery, start_sandbox

pytestmark = pytest.mark.faults

DEAD_TARGET = "http://127.0.0.1:9/nobody-listens"
BIG = 100_000


def _history(world, page: int = 0) -> list[dict]:
    answer = world.api.get(
        f"/{world.project_id}/subscriptions/history?page={page}", token=world.agent_token
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_body_retried_to_a_dead_target_is_stored_once() -> None:
    with start_sandbox(retry_policy=FAST_RETRIES) as sandbox:
        world = make_world(sandbox.url)
        world.subscribe(DEAD_TARGET)
        conversation = world.request_id()
        for i in range(5):
            world.send(conversation, f"{i}:" + "x" * BIG)
        assert sandbox.wait_for_deliveries(30)
        attempts = _history(world)
        assert len(attempts) == 5 * (FAST_RETRIES.retries + 1)
        texts = {json.loads(a["jsonRequest"])["payload"]["text"] for a in attempts}
        assert texts == {f"{i}:" + "x" * BIG for i in range(5)}  # every attempt shows its body
        bodies, body_bytes = sandbox.store.query_one(
            "SELECT COUNT(*), total(length(body)) FROM delivery_bodies"
        )
        assert bodies == 5 and body_bytes > 5 * BIG
        (log_bytes,) = sandbox.store.query_one("SELECT total(length(doc)) FROM delivery_log")
        assert log_bytes < BIG  # 20 attempts, not one copy of a body among them
        world.api.close()


def test_the_history_keeps_within_its_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "HISTORY_BODY_BYTES", 3 * BIG + BIG // 2)
    monkeypatch.setattr(delivery, "_PRUNE_EVERY_BYTES", 1)  # prune after every new body
    with start_sandbox(retry_policy=FAST_RETRIES) as sandbox:
        world = make_world(sandbox.url)
        world.subscribe(DEAD_TARGET)
        conversation = world.request_id()
        for i in range(8):
            world.send(conversation, f"{i}:" + "x" * BIG)
            assert sandbox.wait_for_deliveries(30)
        (body_bytes,) = sandbox.store.query_one("SELECT total(length(body)) FROM delivery_bodies")
        assert body_bytes <= 3 * BIG + BIG // 2
        texts = [json.loads(a["jsonRequest"])["payload"]["text"][:2] for a in _history(world)]
        assert texts[0] == "7:"  # the newest stay
        assert "0:" not in texts and "1:" not in texts  # the oldest went first
        world.api.close()


def test_the_history_keeps_within_its_attempt_bound_and_leaves_no_unused_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "HISTORY_ATTEMPTS", 12)
    monkeypatch.setattr(delivery, "_PRUNE_EVERY", 4)
    with start_sandbox(retry_policy=FAST_RETRIES) as sandbox:
        world = make_world(sandbox.url)
        world.subscribe(DEAD_TARGET)
        conversation = world.request_id()
        for i in range(10):
            world.send(conversation, f"{i}:" + "y" * 1000)
        assert sandbox.wait_for_deliveries(30)
        (attempts,) = sandbox.store.query_one("SELECT COUNT(*) FROM delivery_log")
        assert 12 <= attempts < 12 + 4 + 64  # the bound, plus what came since the last pruning
        (unused,) = sandbox.store.query_one(
            "SELECT COUNT(*) FROM delivery_bodies WHERE id NOT IN "
            "(SELECT body_id FROM delivery_log WHERE body_id IS NOT NULL)"
        )
        assert unused == 0
        (stored,) = sandbox.store.query_one(
            "SELECT total(length(CAST(body AS BLOB))) FROM delivery_bodies"
        )
        assert sandbox.delivery._body_bytes == stored  # the running count the pruning trusts
        kept = _history(world)
        assert len(kept) == attempts
        assert all(
            json.loads(a["jsonRequest"])["payload"]["text"].endswith("y" * 1000) for a in kept
        )
        world.api.close()
