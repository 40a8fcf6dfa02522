"""Every request that reaches the listener, in its delivery log: verdicts, secrets hidden, bounds,
and replay (the callbacks again, or a re-POST to another handler), over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
import requests
from support.listener import post
from support.net import free_port

from tiledesk_tutorial.delivery_log import DeliveryLog
from tiledesk_tutorial.errors import InvalidInputError
from tiledesk_tutorial.listener import ReplayError, WebhookTimeout
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload

SECRET = "inspector-test-secret-0123456789abcdef0123"


def delivery(text: str = "Hello, I need help", secret: str = SECRET):
    return make_delivery(make_message_payload(text), secret)


def test_each_request_is_logged_newest_first_with_its_verdict(make_listener):
    listener = make_listener(secret=SECRET)
    hello = delivery()
    assert post(listener.url, hello.data(), hello.headers).json()["kept"] is True
    assert post(listener.url, hello.data(), hello.headers).json()["kept"] is False
    forged = delivery("forged", secret="a-guessed-secret-of-sufficient-length-0000")
    assert post(listener.url, forged.data(), forged.headers).status_code == 401
    assert requests.get(listener.url, timeout=10).status_code == 200
    assert post(listener.url.replace("/webhook", "/hook"), b"{}").status_code == 404
    assert post(listener.url, b"not json", {"x-hook-secret": SECRET}).status_code == 400

    records = listener.deliveries
    assert [r.number for r in records] == [6, 5, 4, 3, 2, 1]
    assert [(r.verdict, r.status) for r in records] == [
        ("refused", 400),
        ("refused", 404),
        ("status", 200),
        ("refused", 401),
        ("duplicate", 200),
        ("kept", 200),
    ]
    assert "JSON" in (records[0].reason or "")
    assert records[1].reason == "no endpoint at /hook: the webhook path is /webhook"
    assert records[3].reason and "wrong x-hook-secret" in records[3].reason
    kept = records[-1]
    assert kept.event is not None and kept.event.text == "Hello, I need help"
    assert kept.replayable and records[-2].replayable and not records[3].replayable
    assert kept.method == "POST" and kept.path == "/webhook" and kept.remote == "127.0.0.1"
    assert isinstance(kept.received_at, datetime) and kept.received_at.tzinfo is UTC
    assert kept.body == hello.data()
    assert listener.delivery(1) is kept
    assert listener.wait_for_delivery(lambda r: r.verdict == "duplicate").number == 2
    with pytest.raises(WebhookTimeout, match="received 6 in all"):
        listener.wait_for_delivery(lambda r: r.number > 6, timeout=0.05)
    assert "#1" in kept.summary() and "kept" in kept.summary()


def test_secrets_and_tokens_never_show_in_full(make_listener):
    listener = make_listener(secret=SECRET)
    hello = delivery()
    post(
        listener.url, hello.data(), {**hello.headers, "Authorization": "Basic c2VjcmV0OnNlY3JldA=="}
    )
    wrong = "a-guessed-secret-of-sufficient-length-0000"
    forged = delivery("forged", secret=wrong)
    post(listener.url, forged.data(), forged.headers)
    token = hello.body["token"]
    for record in listener.deliveries:
        shown = " ".join([repr(record), str(record.headers), record.body_text(), record.summary()])
        for secret in (SECRET, wrong, token, "c2VjcmV0OnNlY3JldA=="):
            assert secret not in shown
        assert record.header("x-hook-secret") is not None  # shown, redacted
    kept = listener.deliveries[-1]
    body = json.loads(kept.body)
    assert body["token"] == token  # what a replay sends is untouched
    pretty = kept.body_text()
    assert '\n  "payload": {' in pretty  # pretty-printed
    assert kept.replay_headers()["x-hook-secret"] == SECRET
    assert "Authorization" not in kept.replay_headers()
    refused = listener.deliveries[0]
    assert refused.replay_secret is None  # a wrong secret is not kept for anything


def test_memory_is_bounded_by_count_and_by_bytes(make_listener):
    listener = make_listener(secret=SECRET, max_deliveries=5)
    for number in range(12):
        hello = delivery(f"message {number}")
        post(listener.url, hello.data(), hello.headers)
    assert [r.number for r in listener.deliveries] == [12, 11, 10, 9, 8]
    with pytest.raises(InvalidInputError, match="no longer kept: the listener keeps the last 5"):
        listener.delivery(3)
    with pytest.raises(InvalidInputError, match="no request #99"):
        listener.delivery(99)

    log = DeliveryLog(max_records=100, max_bytes=10_000)
    for _ in range(10):
        log.record(
            received_at=datetime.now(UTC),
            method="POST",
            path="/webhook",
            remote="127.0.0.1",
            headers=[],
            body=b"x" * 3000,
            status=200,
            verdict="kept",
        )
    assert len(log) == 3 and log.bytes == 9000 and log.dropped == 7
    big = log.record(
        received_at=datetime.now(UTC),
        method="POST",
        path="/webhook",
        remote="127.0.0.1",
        headers=[],
        body=b"y" * 50_000,
        status=400,
        verdict="refused",
    )
    assert not big.body_truncated and len(big.body) == 50_000
    assert log.records()[0] is big and len(log) == 1  # the newest is always kept


def test_a_refused_request_keeps_only_the_start_of_a_long_body(make_listener):
    listener = make_listener(secret=SECRET)
    junk = b"[" + b"1," * 100_000 + b"1]"
    assert post(listener.url, junk, {"x-hook-secret": SECRET}).status_code == 400
    [record] = listener.deliveries
    assert record.body_size == len(junk) and len(record.body) == 64 * 1024
    assert record.body_truncated and "bytes in all" in record.body_text()


def test_replay_runs_the_callbacks_again_but_keeps_nothing_twice(make_listener):
    listener = make_listener(secret=SECRET)
    seen: list[str] = []
    batches: list[int] = []
    failures = {"left": 1}

    def handle(event):
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("my handler has a bug")
        seen.append(event.text)

    listener.on_event(handle)
    listener.on_events(lambda events: batches.append(len(events)), key="view")
    hello = delivery()
    post(listener.url, hello.data(), hello.headers)
    listener.wait_for(count=1)
    assert listener._hub.wait_idle()
    assert seen == [] and listener.stats["callback_errors"] == 1

    outcome = listener.replay(1)  # the handler is fixed now: replay the delivery it failed on
    assert outcome.ok and outcome.callbacks == 1 and seen == ["Hello, I need help"]
    assert len(listener.events) == 1 and batches == [1]  # nothing kept again, the view not redrawn

    failures["left"] = 1
    failed = listener.replay(listener.deliveries[0])
    assert not failed.ok and "my handler has a bug" in failed.errors[0]

    forged = delivery("forged", secret="a-guessed-secret-of-sufficient-length-0000")
    post(listener.url, forged.data(), forged.headers)
    with pytest.raises(ReplayError, match=r"request #2 was refused \(401"):
        listener.replay(2)
    listener.stop()
    with pytest.raises(ReplayError, match="the listener is stopped"):
        listener.replay(1)


def test_replay_from_a_callback_runs_at_once(make_listener):
    listener = make_listener(secret=SECRET)
    calls: list[str] = []
    done = threading.Event()

    def handle(event):
        calls.append(event.text)
        if len(calls) == 1:
            outcome = listener.replay(1)
            calls.append(f"replayed {outcome.callbacks}")
            done.set()

    listener.on_event(handle)
    hello = delivery()
    post(listener.url, hello.data(), hello.headers)
    assert done.wait(10)
    assert calls == ["Hello, I need help", "Hello, I need help", "replayed 1"]


def test_replay_to_posts_the_same_delivery_to_another_handler(make_listener):
    listener = make_listener(secret=SECRET)
    mine = make_listener(secret=SECRET, verify_token=True)  # a learner's own, strict handler
    hello = delivery()
    post(listener.url, hello.data(), hello.headers)

    answer = listener.replay_to(1, mine.url)
    assert answer.status_code == 200 and answer.json()["kept"] is True
    [copy] = mine.deliveries
    assert copy.body == hello.data()  # byte for byte
    assert copy.header("user-agent") == hello.headers["User-Agent"]
    assert mine.events[0].message_id == listener.events[0].message_id

    dead = f"http://127.0.0.1:{free_port()}/webhook"
    with pytest.raises(ReplayError, match="nothing answers there") as caught:
        listener.replay_to(1, dead)
    assert "is your handler running" in caught.value.hint
    with pytest.raises(ReplayError, match="give an http:// or https:// URL"):
        listener.replay_to(1, "localhost:5000")
