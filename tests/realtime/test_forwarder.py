"""The forwarder: events posted to a real local receiver in Tiledesk's webhook format, retried."""

from __future__ import annotations

import socket
import threading

import pytest

from realtime.helpers import Receiver
from tiledesk_tutorial.forwarder import ForwardResult, WebhookForwarder
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.webhooks import make_message_payload, verify_delivery, verify_token
from tiledesk_tutorial.wire import new_object_id

PROJECT = new_object_id()


def message(text: str, **kwargs: object) -> Event:
    payload = make_message_payload(text, project_id=PROJECT, **kwargs)  # type: ignore[arg-type]
    return Event(event="message.create", payload=payload, source="realtime")


def forwarder(target: str, **kwargs: object) -> tuple[WebhookForwarder, list[ForwardResult]]:
    results: list[ForwardResult] = []
    lock = threading.Lock()

    def report(result: ForwardResult) -> None:
        with lock:
            results.append(result)

    options = {"first_retry_delay": 0.05, "max_retry_delay": 0.2, **kwargs}
    made = WebhookForwarder(
        target, project_id=PROJECT, origin="http://127.0.0.1:3011", report=report, **options
    )  # type: ignore[arg-type]
    return made.start(), results


def test_each_message_is_posted_once_in_tiledesks_format(receiver: Receiver) -> None:
    fwd, results = forwarder(receiver.url, created_by="6b0f726f34d0522d0c611c04")
    events = [message("first"), message("second", role="agent"), message("third")]
    for event in events:
        assert fwd.submit(event)
    got = receiver.wait(3)
    assert fwd.stop() == []
    assert [r.body["payload"]["text"] for r in got] == ["first", "second", "third"]
    for delivery in got:
        assert set(delivery.body) == {"timestamp", "payload", "hook", "token"}
        headers = delivery.headers
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == "tiledesk-webhooks"
        assert headers["origin"] == "http://127.0.0.1:3011"
        assert headers["accept"] == "application/json"
        assert headers["x-hook-secret"] == fwd.secret
        hook = delivery.body["hook"]
        assert hook["event"] == "message.create" and hook["target"] == receiver.url
        assert hook["id_project"] == PROJECT and hook["createdBy"] == "6b0f726f34d0522d0c611c04"
        # The receiver's own verification, as it will run against Tiledesk: secret and token.
        claims = verify_token(delivery.body["token"], headers["x-hook-secret"], hook["_id"])
        assert claims["sub"] == "subscription" and claims["_id"] == hook["_id"]
        event = verify_delivery(delivery.raw, headers, [fwd.secret], verify_token=True)
        assert event.event == "message.create" and event.subscription_id == hook["_id"]
        assert event.source == "webhook" and event.text == delivery.body["payload"]["text"]
    # One subscription stands behind every delivery, as with a real one.
    assert len({r.body["hook"]["_id"] for r in got}) == 1
    assert fwd.forwarded == 3 and [r.outcome for r in results] == ["forwarded"] * 3


def test_a_given_secret_is_used_and_never_shown(receiver: Receiver) -> None:
    secret = "my-own-forwarding-secret-0123456789"
    fwd, _ = forwarder(receiver.url, secret=secret)
    assert not fwd.secret_generated and secret not in repr(fwd)
    fwd.submit(message("hello"))
    [delivery] = receiver.wait(1)
    fwd.stop()
    assert delivery.headers["x-hook-secret"] == secret
    verify_token(delivery.body["token"], secret, delivery.body["hook"]["_id"])


def test_a_made_secret_is_new_each_time(receiver: Receiver) -> None:
    first, _ = forwarder(receiver.url)
    second, _ = forwarder(receiver.url)
    first.stop(), second.stop()
    assert first.secret_generated and first.secret != second.secret
    assert first.secret not in repr(first)


def test_only_the_chosen_kinds_are_forwarded(receiver: Receiver) -> None:
    fwd, _ = forwarder(receiver.url, events=("message.create", "request.close"))
    request = {"_id": new_object_id(), "request_id": "support-group-x", "status": 1000}
    assert not fwd.submit(Event(event="request.update", payload=request, source="realtime"))
    assert fwd.submit(Event(event="request.close", payload=request, source="realtime"))
    assert fwd.submit(message("hi"))
    got = receiver.wait(2)
    fwd.stop()
    assert [r.body["hook"]["event"] for r in got] == ["request.close", "message.create"]
    assert got[0].body["hook"]["_id"] != got[1].body["hook"]["_id"]  # one hook per kind


def test_a_failing_target_is_retried_with_backoff_until_it_accepts(receiver: Receiver) -> None:
    receiver.answers = [503, 500, 502]
    fwd, results = forwarder(receiver.url)
    fwd.submit(message("one"))
    fwd.submit(message("two"))
    got = receiver.wait(2)
    assert fwd.stop() == []
    assert [r.body["payload"]["text"] for r in got] == ["one", "two"]  # order kept
    outcomes = [(r.outcome, r.status) for r in results]
    assert outcomes == [
        ("retrying", 503),
        ("retrying", 500),
        ("retrying", 502),
        ("forwarded", 200),
        ("forwarded", 200),
    ]
    assert [r.attempt for r in results[:4]] == [1, 2, 3, 4]
    delays = [r.retry_in for r in results[:3]]
    assert all(d is not None for d in delays) and delays == sorted(delays)  # growing
    assert fwd.failed_attempts == 3
    assert "attempt 1 failed, trying again in" in results[0].summary(receiver.url)


def test_retry_after_is_honoured_for_429(receiver: Receiver) -> None:
    receiver.answers = [429]
    receiver.retry_after = "0.1"
    fwd, results = forwarder(receiver.url, first_retry_delay=0.01)
    fwd.submit(message("slow down"))
    receiver.wait(1)
    fwd.stop()
    assert results[0].outcome == "retrying" and results[0].retry_in == pytest.approx(0.1)


def test_a_4xx_answer_is_reported_and_not_repeated(receiver: Receiver) -> None:
    receiver.answers = [401]
    fwd, results = forwarder(receiver.url)
    fwd.submit(message("refused"))
    fwd.submit(message("accepted"))
    [delivery] = receiver.wait(1)
    fwd.stop()
    assert delivery.body["payload"]["text"] == "accepted"
    assert (results[0].outcome, results[0].status) == ("refused", 401)
    assert "refused by the receiver" in results[0].summary(receiver.url)
    assert fwd.refused == 1 and receiver.attempts == 2


def test_what_a_dead_receiver_never_took_is_reported_at_stop() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = f"http://127.0.0.1:{port}/webhook"
    fwd, results = forwarder(target, timeout=(0.5, 0.5))
    fwd.submit(message("while down"))
    left = fwd.stop(timeout=0.5)  # the receiver never came up: nothing is lost silently
    assert [e.text for e in left] == ["while down"]
    assert results and all(r.outcome == "retrying" for r in results)
    assert "connection refused" in (results[0].error or "")


def test_a_wrong_target_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"full http:// or https:// URL"):
        WebhookForwarder("localhost:5000/webhook", project_id=PROJECT)
