"""Events in a JSON Lines file: written one line per event, read back, cut lines skipped."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from support.listener import recorded_deliveries

from tiledesk_tutorial.jsonl import JsonlWriter, event_from_record, event_to_record, read_jsonl
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.webhooks import parse_delivery

RECORDED = recorded_deliveries()


def test_records_round_trip_and_read_jsonl_skips_a_cut_line(tmp_path, caplog):
    events = [parse_delivery(d.data(), headers=d.headers) for d in RECORDED[:3]]
    store = tmp_path / "events.jsonl"
    lines = [json.dumps(event_to_record(e)) for e in events]
    store.write_text(lines[0] + "\n" + lines[1] + "\n\n" + lines[2][:50] + "\n", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="tiledesk_tutorial"):
        back = read_jsonl(store)

    assert [(e.message_id, e.text, e.received_at) for e in back] == [
        (e.message_id, e.text, e.received_at) for e in events[:2]
    ]
    assert back[0].raw == events[0].raw
    assert "skipped 1 unreadable line" in caplog.text
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_the_writer_appends_and_an_unpaired_surrogate_reads_back(tmp_path):
    store = tmp_path / "nested" / "events.jsonl"
    writer = JsonlWriter(store, fsync=True)
    odd = parse_delivery({"payload": {"_id": "m1", "text": "half \ud800 a pair"}})
    writer.write(parse_delivery(RECORDED[0].data(), headers=RECORDED[0].headers))
    writer.write(odd)
    writer.close()
    writer = JsonlWriter(store)  # a restart appends
    writer.write(parse_delivery(RECORDED[1].data()))
    writer.close()
    back = read_jsonl(store)
    assert [e.text for e in back] == [
        RECORDED[0].body["payload"]["text"],
        odd.text,
        RECORDED[1].body["payload"]["text"],
    ]
    assert back[0].headers["user-agent"] == "tiledesk-webhooks"


def test_a_realtime_event_round_trips_too():
    event = Event(
        event="message.create",
        payload={"_id": "m1", "text": "live", "recipient": "support-group-x"},
        source="realtime",
        received_at=datetime(2026, 11, 25, 7, 39, 57, tzinfo=UTC),
        raw={"action": "publish"},
        topic="/p/requests/support-group-x/messages",
    )
    back = event_from_record(json.loads(json.dumps(event_to_record(event))))
    assert (back.source, back.text, back.topic, back.received_at, back.raw) == (
        "realtime",
        "live",
        event.topic,
        event.received_at,
        {"action": "publish"},
    )
