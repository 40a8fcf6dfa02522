"""Verifying, parsing and making Tiledesk webhook deliveries (no HTTP here; see test_listener)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jwt
import pytest
from support.listener import recorded_deliveries

from tiledesk_tutorial.errors import TiledeskTutorialError
from tiledesk_tutorial.jsonl import event_to_record
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.webhooks import (
    InvalidDelivery,
    WebhookVerificationError,
    make_delivery,
    make_hook,
    make_message_payload,
    match_secret,
    parse_delivery,
    sign_delivery,
    verify_delivery,
    verify_token,
)
from tiledesk_tutorial.wire import subscription_audience

SECRET = "0f4b1f7e-5a8e-4c55-9a43-0c1f9f7d2b11"  # shaped like Tiledesk's (a UUID)

RECORDED = recorded_deliveries()
RECORDED_SECRET = RECORDED[0].secret


def test_the_transcript_holds_six_message_deliveries_from_one_subscription():
    assert len(RECORDED) == 6
    assert {d.body["hook"]["_id"] for d in RECORDED} == {"6b0690cd0ed30d16ca8ddcd0"}
    assert all(d.headers["User-Agent"] == "tiledesk-webhooks" for d in RECORDED)


def test_recorded_deliveries_parse_into_events_with_who_said_what():
    events = [parse_delivery(d.data(), headers=d.headers) for d in RECORDED]

    assert [e.event for e in events] == ["message.create"] * 6
    assert all(e.is_message for e in events)
    assert [(e.role, e.text) for e in events] == [
        ("visitor", "Order number is 4242"),
        ("agent", "Thanks, looking up 4242 now."),
        ("visitor", "request id without project id"),
        ("system", "Chat closed"),
        ("visitor", ""),
        ("visitor", None),  # the server stored a message without a text field at all
    ]
    first = events[0]
    assert first.sender == "cfd3818e-8374-47be-a9b1-340b59697934"
    assert first.sender_fullname == "Visitor Vic"  # trimmed; the payload keeps "Visitor Vic "
    assert first.payload["senderFullname"] == "Visitor Vic "
    assert first.source == "webhook"
    assert first.request_id == (
        "support-group-6b0690cb0ed30d16ca8ddc1a-0e5e69ddfda4415f9a78cbaf3333804e"
    )
    assert events[2].request_id == "support-group-bc09bf93-217c-4402-8694-6ae7f8b5bf34"
    assert first.message_id == "6b0690cd0ed30d16ca8ddcd9"
    assert first.project_id == "6b0690cb0ed30d16ca8ddc1a"
    assert first.subscription_id == "6b0690cd0ed30d16ca8ddcd0"
    assert first.timestamp == 1795592397831
    assert first.sent_at == datetime(2026, 11, 25, 7, 39, 57, 831000, tzinfo=UTC)
    assert first.created_at == datetime(2026, 11, 25, 7, 39, 57, 793000, tzinfo=UTC)
    assert first.received_at.tzinfo is UTC
    assert first.raw == RECORDED[0].body


def test_an_event_keeps_harmless_headers_but_never_the_secret():
    event = parse_delivery(RECORDED[0].data(), headers=RECORDED[0].headers)

    assert event.headers == {
        "user-agent": "tiledesk-webhooks",
        "origin": "http://127.0.0.1:3011",
        "content-type": "application/json",
    }
    assert RECORDED_SECRET not in json.dumps(event_to_record(event))
    assert RECORDED_SECRET not in repr(event)


def test_repr_and_summary_are_one_short_line():
    event = parse_delivery(RECORDED[1].data())

    assert "\n" not in repr(event)
    assert len(repr(event)) < 200
    assert "Thanks, looking up 4242 now." in repr(event)
    assert event.summary() == "message.create [agent] Ada Agent: Thanks, looking up 4242 now."
    assert parse_delivery(RECORDED[5].data()).summary().endswith(": <no text>")


def test_recorded_tokens_verify_with_the_recorded_secret():
    for delivery in RECORDED:
        claims = verify_token(delivery.body["token"], RECORDED_SECRET, delivery.body["hook"]["_id"])
        assert claims["_id"] == delivery.body["hook"]["_id"]
        assert claims["aud"] == subscription_audience(delivery.body["hook"]["_id"])
        assert claims["sub"] == "subscription"
        assert "exp" not in claims  # Tiledesk's delivery tokens never expire


@pytest.mark.parametrize(
    ("secret", "subscription_id", "reason"),
    [
        ("another-secret-0000-0000-000000000000", "6b0690cd0ed30d16ca8ddcd0", "Signature"),
        (RECORDED_SECRET, "6b0690cd0ed30d16ca8ddfff", "(?i)audience"),
        (RECORDED_SECRET, None, "hook._id"),
    ],
)
def test_a_token_for_another_secret_or_subscription_is_rejected(secret, subscription_id, reason):
    with pytest.raises(WebhookVerificationError, match=reason):
        verify_token(RECORDED[0].body["token"], secret, subscription_id)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_tokens_with_another_algorithm_or_issuer_or_subject_are_rejected():
    hook = make_hook()
    audience = subscription_audience(hook["_id"])
    forged = [
        jwt.encode({**hook, "aud": audience, "iss": "https://tiledesk.com", "sub": "subscription"},
                   SECRET, algorithm="HS512"),
        jwt.encode({**hook, "aud": audience, "iss": "https://evil.example", "sub": "subscription"},
                   SECRET, algorithm="HS256"),
        jwt.encode({**hook, "aud": audience, "iss": "https://tiledesk.com", "sub": "user"},
                   SECRET, algorithm="HS256"),
        jwt.encode({**hook, "_id": "other", "aud": audience, "iss": "https://tiledesk.com",
                    "sub": "subscription"}, SECRET, algorithm="HS256"),
        "not-a-jwt",
        None,
    ]  # fmt: skip
    for token in forged:
        with pytest.raises(WebhookVerificationError):
            verify_token(token, SECRET, hook["_id"])


def test_sign_delivery_makes_the_same_token_as_the_real_server():
    recorded_token = RECORDED[0].body["token"]
    claims = jwt.decode(recorded_token, options={"verify_signature": False})
    hook = {k: v for k, v in claims.items() if k not in {"iat", "aud", "iss", "sub"}}

    assert sign_delivery(hook, RECORDED_SECRET, issued_at=claims["iat"]) == recorded_token


def test_sign_delivery_needs_the_subscription_id():
    with pytest.raises(ValueError, match="_id"):
        sign_delivery({"event": "message.create"}, SECRET)


def test_make_delivery_builds_what_tiledesk_sends_and_it_verifies():
    payload = make_message_payload("hello", role="agent")
    delivery = make_delivery(payload, SECRET, timestamp=1_700_000_000_000)

    assert list(delivery.body) == ["timestamp", "payload", "hook", "token"]
    assert delivery.headers["x-hook-secret"] == SECRET
    assert delivery.headers["User-Agent"] == "tiledesk-webhooks"
    assert delivery.headers["Content-Type"] == "application/json"
    assert "secret" not in delivery.body["hook"]
    assert SECRET not in repr(delivery)
    event = parse_delivery(delivery.data(), headers=delivery.headers)
    assert (event.event, event.text, event.role) == ("message.create", "hello", "agent")
    assert event.project_id == payload["id_project"] == event.hook["id_project"]
    verify_token(event.raw["token"], SECRET, event.subscription_id)


@pytest.mark.parametrize("role", ["visitor", "agent", "bot", "system"])
def test_made_message_payloads_are_classified_as_the_role_asked_for(role):
    event = parse_delivery(make_delivery(make_message_payload("x", role=role), SECRET).data())
    assert event.role == role


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "JSON array"),
        (b'"payload"', "JSON string"),
        (b"null", "JSON null"),
        (b'{"hook": {"event": "message.create"}}', "no 'payload'"),
        (b'{"payload": [1]}', "'payload' is a JSON array"),
        (b'{"payload": {}, "hook": "message.create"}', "'hook' is a JSON string"),
    ],
)
def test_what_is_not_a_delivery_says_why(body, reason):
    with pytest.raises(InvalidDelivery, match=reason) as caught:
        parse_delivery(body)
    assert len(str(caught.value)) < 120
    assert "\n" not in str(caught.value)


def test_a_delivery_without_hook_or_timestamp_is_still_an_event():
    event = parse_delivery(b'{"payload": {"_id": "m1", "text": "hi"}, "timestamp": "soon"}')
    assert (event.event, event.timestamp, event.hook, event.text) == ("", None, {}, "hi")
    assert not event.is_message
    assert event.role is None


def _event(event: str, payload: dict, timestamp: int) -> Event:
    body = {"timestamp": timestamp, "payload": payload, "hook": {"_id": "s1", "event": event}}
    return parse_delivery(json.dumps(body))


def test_a_message_is_the_same_event_whenever_and_however_it_comes_again():
    message = {"_id": "m1", "text": "hi"}
    assert _event("message.create", message, 1).dedupe_key == (
        _event("message.create", message, 2).dedupe_key
    )
    assert _event("message.create", message, 1).dedupe_key != (
        _event("message.create", {"_id": "m2"}, 1).dedupe_key
    )


def test_distinct_request_updates_and_a_re_close_are_distinct_but_a_retry_is_not():
    request = {"_id": "r1", "status": 200, "updatedAt": "2026-11-25T07:40:03.600Z"}
    closed = {**request, "status": 1000, "updatedAt": "2026-11-25T07:40:03.670Z"}

    update = _event("request.update", request, 100)
    assert update.dedupe_key == _event("request.update", request, 100).dedupe_key  # a retry
    assert update.dedupe_key != _event("request.update", closed, 101).dedupe_key  # next update
    close = _event("request.close", closed, 102)
    re_close = _event("request.close", closed, 250)  # re-close: same request, sent again later
    assert close.dedupe_key != re_close.dedupe_key
    assert close.dedupe_key != _event("request.update", closed, 102).dedupe_key
    assert _event("lead.create", {"name": "no id"}, 1).dedupe_key is None


def test_match_secret_finds_the_right_secret_among_several():
    secrets = ["first-secret-aaaaaaaaaaaaaaaaaaaaaaaa", SECRET, "third-secret-ccccccccccccccc"]
    assert match_secret(SECRET, secrets) == SECRET
    assert match_secret(SECRET[:-1], secrets) is None
    assert match_secret(SECRET + "x", secrets) is None
    assert match_secret("", secrets) is None
    assert match_secret(None, secrets) is None
    assert match_secret(SECRET, []) is None


# -- verify_delivery: the whole check sequence -----------------------------------------------------
def test_verify_delivery_accepts_recorded_deliveries_with_secret_and_token():
    for delivery in RECORDED:
        event = verify_delivery(
            delivery.data(), delivery.headers, [SECRET, RECORDED_SECRET], verify_token=True
        )
        assert event.raw == delivery.body and event.subscription_id == "6b0690cd0ed30d16ca8ddcd0"
        assert RECORDED_SECRET not in json.dumps(event.headers)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing x-hook-secret header"),
        ({"x-hook-secret": ""}, "missing x-hook-secret header"),
        ({"X-Hook-Secret": "not-it-0000"}, "wrong x-hook-secret"),
    ],
)
def test_verify_delivery_refuses_a_missing_or_wrong_secret_before_reading_the_body(headers, reason):
    with pytest.raises(WebhookVerificationError, match=reason) as caught:
        verify_delivery(b"not even json", headers, [SECRET])
    assert caught.value.status == 401 and caught.value.reason.startswith(reason)
    assert caught.value.hint and SECRET not in str(caught.value)
    assert isinstance(caught.value, TiledeskTutorialError)
    assert not isinstance(caught.value, InvalidDelivery)


def test_verify_delivery_refuses_a_body_that_is_no_delivery_with_400():
    with pytest.raises(InvalidDelivery, match="no 'payload'") as caught:
        verify_delivery(b"{}", {"x-hook-secret": SECRET}, [SECRET])
    assert caught.value.status == 400
    assert isinstance(caught.value, WebhookVerificationError)  # one class to catch


def test_verify_delivery_checks_the_token_only_when_asked():
    good = make_delivery(make_message_payload("signed"), SECRET)
    forged = dict(
        good.body, token=sign_delivery(good.body["hook"], "another-secret-0000000000000000000000")
    )
    assert verify_delivery(json.dumps(forged), good.headers, [SECRET]).text == "signed"
    with pytest.raises(WebhookVerificationError, match="token rejected"):
        verify_delivery(json.dumps(forged), good.headers, [SECRET], verify_token=True)
    with pytest.raises(WebhookVerificationError, match="no subscription secret"):
        verify_delivery(good.data(), good.headers, [], verify_token=True)
    assert verify_delivery(good.data(), {}, []).text == "signed"  # no secret known: any sender
