"""The receiver fails: the listener stopped for 30 s during traffic, a hung receiver, a 404.

Every delivery arrives once the listener is back (within the retry policy), every attempt is in
``/subscriptions/history``, and a 404 is final, as on Tiledesk.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from support.faults import DeliveryLedger
from support.sandbox import Receiver, World, make_world

from tiledesk_tutorial.jsonl import read_jsonl
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.sandbox import RetryPolicy, start_sandbox

pytestmark = pytest.mark.faults

EVENTS = ("message.create", "request.create", "request.update", "request.close")
OUTAGE_SECONDS = 30
# Retries every 2 s at most, so that deliveries arrive within ~2 s of the listener's return; 40
# retries cover a 75 s outage.
POLICY = RetryPolicy(retries=40, backoff=0.25, max_backoff=2.0)


def history(world: World) -> list[dict]:
    """Every page of ``/subscriptions/history``."""
    entries: list[dict] = []
    for page in range(10_000):
        batch = world.api.get(
            f"/{world.project_id}/subscriptions/history",
            params={"page": page},
            token=world.agent_token,
        ).json()
        if not batch:
            return entries
        entries.extend(batch)
    raise AssertionError("history never ends")


def test_the_default_policy_outlasts_a_30_second_outage() -> None:
    policy = RetryPolicy()
    window = sum(min(policy.backoff * 2**n, policy.max_backoff) for n in range(policy.retries))
    assert window > OUTAGE_SECONDS * 3  # ~121 s: a laptop's Wi-Fi drop, or a kernel restart


def test_every_delivery_arrives_after_the_listener_was_down_for_30_seconds(tmp_path: Path) -> None:
    store_file = tmp_path / "events.jsonl"
    with start_sandbox(retry_policy=POLICY) as sandbox:
        world = make_world(sandbox.url)
        listener = WebhookListener(verify_token=True, store_file=store_file).start()
        port = listener.port
        secrets = [world.subscribe(listener.url, event)["secret"] for event in EVENTS]
        for secret in secrets:
            listener.add_secret(secret)
        visitors = [world.new_visitor(f"V{i}")[0] for i in range(4)]
        conversations = [world.request_id() for _ in visitors]
        stop = threading.Event()
        failures: list[str] = []

        def talk(token: str, request_id: str) -> None:
            number = 0
            while not stop.is_set():
                response = world.api.post(
                    world.messages_path(request_id), json={"text": f"m{number}"}, token=token
                )
                if response.status_code != 200:
                    failures.append(response.text)
                number += 1
                stop.wait(1.0)

        threads = [
            threading.Thread(target=talk, args=pair, daemon=True)
            for pair in zip(visitors, conversations, strict=True)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            listener.stop()  # the kernel restarts, the laptop sleeps, the Wi-Fi drops...
            down_at = time.time()
            time.sleep(OUTAGE_SECONDS / 2)
            closed = world.api.put(
                f"/{world.project_id}/requests/{conversations[0]}/close", token=world.agent_token
            )
            assert closed.status_code == 200
            time.sleep(OUTAGE_SECONDS / 2)
            up_at = time.time()
            listener = WebhookListener(
                port=port, secret=secrets, verify_token=True, store_file=store_file
            ).start()
            time.sleep(2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        try:
            assert failures == []
            assert sandbox.wait_for_deliveries(timeout=30)
        finally:
            listener.stop()

        stored = []
        for request_id in conversations:
            stored += world.api.get(world.messages_path(request_id), token=world.agent_token).json()
        kept = read_jsonl(store_file)
        kept_messages = [e.message_id for e in kept if e.event == "message.create"]
        assert sorted(kept_messages) == sorted(m["_id"] for m in stored)  # each one, once
        assert sorted(e.request_id for e in kept if e.event == "request.create") == sorted(
            conversations
        )
        assert [e.request_id for e in kept if e.event == "request.close"] == [conversations[0]]
        assert listener.stats["rejected"] == 0  # every token verified

        attempts: dict[tuple, list[dict]] = defaultdict(list)
        entries = history(world)
        for entry in entries:
            body = json.loads(entry["jsonRequest"])
            key = (entry["id_subscription"], body["payload"]["_id"], body["timestamp"])
            attempts[key].append(entry)
        delayed = 0
        for key, tries in attempts.items():
            tries.sort(key=lambda h: h["attempt"])
            assert [h["attempt"] for h in tries] == list(range(1, len(tries) + 1)), key
            assert len(tries) <= POLICY.retries + 1
            assert [h["outcome"] for h in tries] == ["retrying"] * (len(tries) - 1) + ["delivered"]
            # Connection refused, or a kept-alive connection the stopping listener closed.
            assert all(h["statusCode"] is None and h["err"] for h in tries[:-1]), tries
            sent_at = body_time(tries[0])
            if down_at < sent_at < up_at - POLICY.max_backoff * 2:
                assert len(tries) > 1  # made while the listener was down: retried, then made
                delayed += 1
        assert delayed > OUTAGE_SECONDS  # ~4 messages a second were sent during the outage
        assert len(attempts) == len(stored) + len(conversations) + 2  # + request.update/close
        world.api.close()
        print(
            f"\nreceiver down {OUTAGE_SECONDS} s: {len(stored)} messages, {len(attempts)} "
            f"deliveries ({delayed} made during the outage), {len(entries)} attempts in history"
        )


def body_time(entry: dict) -> float:
    """When the delivery was made (its body's ``timestamp``), in epoch seconds."""
    return json.loads(entry["jsonRequest"])["timestamp"] / 1000


def test_a_404_from_the_listener_is_final(sandbox) -> None:
    world = make_world(sandbox.url)
    with WebhookListener() as listener:
        world.subscribe(listener.url + "-typo")  # a wrong path: the listener answers 404
        world.send(world.request_id(), "lost on purpose")
        assert sandbox.wait_for_deliveries(timeout=10)
        assert listener.events == []
        assert listener.stats["rejected"] == 1
    entries = history(world)
    assert [(h["attempt"], h["statusCode"], h["outcome"]) for h in entries] == [
        (1, 404, "rejected")
    ]
    world.api.close()


def test_a_receiver_that_hangs_is_timed_out_and_retried(tmp_path: Path) -> None:
    """A receiver that accepts the connection and never answers (a dead Wi-Fi link)."""
    release = threading.Event()
    ledger = DeliveryLedger(failures_per_delivery=0)

    def hang_first(index: int, delivery) -> int:
        if index == 0:
            release.wait(10)
        return ledger(index, delivery)

    receiver = Receiver(respond=hang_first)
    policy = RetryPolicy(retries=3, backoff=0.05, max_backoff=0.2, read_timeout=0.5)
    try:
        with start_sandbox(retry_policy=policy) as sandbox:
            world = make_world(sandbox.url)
            world.subscribe(receiver.url)
            answer = world.send(world.request_id(), "are you there?")
            assert ledger.wait_for({("message.create", answer["_id"])}, timeout=10) == set()
            assert sandbox.wait_for_deliveries(timeout=10)
            entries = history(world)
            world.api.close()
    finally:
        release.set()
        receiver.stop()
    assert [(h["attempt"], h["outcome"]) for h in entries] == [(2, "delivered"), (1, "retrying")]
    assert "timed out" in entries[1]["err"].lower()
