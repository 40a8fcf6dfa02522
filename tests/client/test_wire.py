"""The wire format shared by the client and the sandbox: ids, times, tokens, headers, roles,
Retry-After, realtime topics and frames (tiledesk_tutorial/wire.py; docs/wire-format.md)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import jwt
import pytest
from support.client import AGENT_TOKEN, VISITOR_TOKEN
from support.listener import recorded_deliveries

from tiledesk_tutorial import wire

AN_AGENT = "6b0690cb0ed30d16ca8ddc1a"


def test_object_ids_are_24_hex_and_new_ones_are_unique_and_time_ordered() -> None:
    assert wire.is_object_id("6b0690cb0ed30d16ca8ddc1a")
    assert wire.is_object_id("6B0690CB0ED30D16CA8DDC1A")
    for value in ("6b0690cb0ed30d16ca8ddc1", "6b0690cb0ed30d16ca8ddc1g", "", None, 42, "x" * 24):
        assert not wire.is_object_id(value)
    made = [wire.new_object_id() for _ in range(1000)]
    assert len(set(made)) == 1000 and all(wire.is_object_id(m) for m in made)
    times = [m[:8] for m in made]  # the first 4 bytes are the time, in seconds
    assert times == sorted(times)
    assert abs(int(made[0][:8], 16) - datetime.now(UTC).timestamp()) < 60


def test_request_ids_have_the_widgets_format() -> None:
    rid = wire.new_request_id("6b0690cb0ed30d16ca8ddc1a")
    prefix, hex_part = rid.rsplit("-", 1)
    assert prefix == "support-group-6b0690cb0ed30d16ca8ddc1a" and len(hex_part) == 32
    assert len(wire.new_uuid()) == 36 and wire.new_uuid() != wire.new_uuid()


def test_times_are_written_like_the_server_and_read_in_every_form() -> None:
    moment = datetime(2026, 11, 25, 7, 39, 56, 340512, tzinfo=UTC)
    assert wire.iso(moment) == "2026-11-25T07:39:56.340Z"
    assert wire.parse_time("2026-11-25T07:39:56.340Z") == moment.replace(microsecond=340000)
    assert wire.parse_time("2026-11-25T08:39:56.340+01:00") == moment.replace(microsecond=340000)
    assert wire.parse_time("2026-11-25T07:39:56") == datetime(2026, 11, 25, 7, 39, 56, tzinfo=UTC)
    assert wire.parse_time(1795592397831) == datetime(2026, 11, 25, 7, 39, 57, 831000, tzinfo=UTC)
    assert wire.epoch_ms(moment) == 1795592396340
    for garbage in (None, "", "soon", True, float("nan"), float("inf"), 10**30, [], {}):
        assert wire.parse_time(garbage) is None
    assert wire.parse_time(wire.iso_now()) is not None


def test_names_are_trimmed_once_here() -> None:
    assert wire.trim_name("John ") == "John"
    assert wire.trim_name("  Ada Lovelace ") == "Ada Lovelace"
    assert wire.trim_name("   ") is None and wire.trim_name(None) is None
    assert wire.trim_name(42) == "42"


def test_the_jwt_prefix_and_claims() -> None:
    token = wire.bare_token(AGENT_TOKEN)
    assert wire.with_jwt_prefix(token) == AGENT_TOKEN == wire.with_jwt_prefix(AGENT_TOKEN)
    assert wire.bare_token("jwt  " + token + " ") == token
    assert wire.unverified_claims(AGENT_TOKEN)["sub"] == wire.SUBJECT_USER
    assert wire.unverified_claims(VISITOR_TOKEN)["sub"] == wire.SUBJECT_GUEST
    assert wire.unverified_claims("not a token") == {}
    assert wire.subscription_audience("abc") == "https://tiledesk.com/subscriptions/abc"


def test_the_recorded_delivery_headers_and_token_claims_are_the_wires() -> None:
    delivery = recorded_deliveries()[0]
    made = wire.webhook_headers(delivery.secret, delivery.headers["Origin"])
    assert list(made.items()) == [
        (name, value) for name, value in delivery.headers.items() if name in made
    ]
    assert delivery.headers[wire.SECRET_HEADER] == delivery.secret
    claims = jwt.decode(delivery.body["token"], options={"verify_signature": False})
    assert claims["iss"] == wire.TOKEN_ISSUER and claims["sub"] == wire.SUBJECT_SUBSCRIPTION
    assert claims["aud"] == wire.subscription_audience(delivery.body["hook"]["_id"])


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert wire.retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert wire.retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert wire.retry_after_seconds({"Retry-After": "-4"}) == 0.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (wire.retry_after_seconds({"Retry-After": later}) or 0) <= 31
    for headers in ({}, None, {"Retry-After": "soon"}, {"Retry-After": "nan"}):
        assert wire.retry_after_seconds(headers) is None


@pytest.mark.parametrize(
    ("message", "role"),
    [
        ({"sender": "system", "text": "Chat closed"}, "system"),
        ({"sender": AN_AGENT, "attributes": {"subtype": "info/support"}}, "system"),
        ({"sender": "bot_6b0690cb0ed30d16ca8ddc1a"}, "bot"),
        ({"sender": "u1", "request": {"lead": {"lead_id": "u1"}}}, "visitor"),
        ({"sender": "6b0690cb0ed30d16ca8ddc1a", "request": {"lead": {"lead_id": "u1"}}}, "agent"),
        ({"sender": "6b0690cb0ed30d16ca8ddc1a"}, "agent"),
        ({"sender": "cfd3818e-8374-47be-a9b1-340b59697934"}, "visitor"),
        ({}, "visitor"),
    ],
)
def test_who_sent_a_message(message: dict, role: str) -> None:
    assert wire.sender_role(message) == role


def test_request_statuses() -> None:
    assert wire.request_status_name(wire.STATUS_CLOSED) == "CLOSED"
    assert wire.request_status_name(7) is None and wire.request_status_name(None) is None
    assert [s for s in wire.REQUEST_STATUS if wire.is_open_status(s)] == [100, 200, 300]


def test_realtime_topics_round_trip_and_frames_are_compact_json() -> None:
    pid, rid = "6b0690cb0ed30d16ca8ddc1a", "support-group-x"
    for text, kind in [
        (wire.topic_requests(pid), "requests"),
        (wire.topic_request(pid, rid), "request"),
        (wire.topic_messages(pid, rid), "messages"),
    ]:
        topic = wire.parse_topic(text)
        assert topic is not None and topic.kind == kind and str(topic) == text
    assert wire.parse_topic("/not-a-project/requests") is None
    assert wire.parse_topic(f"/{pid}/leads") is None and wire.parse_topic(None) is None
    assert wire.frame_subscribe("/t") == '{"action":"subscribe","payload":{"topic":"/t"}}'
    heartbeat = json.loads(wire.frame_heartbeat())
    assert heartbeat == {"action": "heartbeat", "payload": {"message": {"text": "ping"}}}
    published = json.loads(wire.frame_publish("/t", "CREATE", {"text": "é"}))
    assert published["payload"] == {"topic": "/t", "method": "CREATE", "message": {"text": "é"}}


def test_tiledesks_trailing_space_in_names_reaches_no_output() -> None:
    """Tiledesk writes "John " for a visitor with no last name; every place that shows a name
    shows it trimmed, through wire.trim_name (the payload itself keeps it as sent)."""
    from tiledesk_tutorial.delivery_log import DeliveryRecord
    from tiledesk_tutorial.inspector import row_label
    from tiledesk_tutorial.listen import event_line, event_record
    from tiledesk_tutorial.webhooks import make_delivery, make_message_payload, parse_delivery
    from tiledesk_tutorial.widgets import render_conversations

    payload = make_message_payload("Hello", sender_fullname="John ")
    payload["request"]["lead"]["fullname"] = "John "
    delivery = make_delivery(payload, "a-secret-of-sufficient-length-0123456789")
    event = parse_delivery(delivery.body)
    record = DeliveryRecord(
        number=1,
        received_at=datetime.now(UTC),
        method="POST",
        path="/webhook",
        remote="127.0.0.1",
        headers=(),
        body=delivery.data(),
        body_size=len(delivery.data()),
        status=200,
        verdict="kept",
        event=event,
    )
    assert event.payload["senderFullname"] == "John "  # as sent
    message, request = event.message, event.request
    assert message is not None and request is not None
    shown = {
        "event.sender_fullname": event.sender_fullname,
        "event.lead_name": event.lead_name,
        "event.summary()": event.summary(),
        "repr(event.message)": repr(message),
        "repr(event.request)": repr(request),
        "request.lead_name": request.lead_name,
        "the view": render_conversations([event]),
        "listen's line": event_line(event),
        "listen --json": json.dumps(event_record(event)),
        "the inspector's row": row_label(record),
    }
    for where, text in shown.items():
        assert "John" in str(text), where
        assert not re.search(r"John ['\"<:,)\]]|John $", str(text)), (where, text)
