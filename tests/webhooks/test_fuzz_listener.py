"""Bad input at scale against the webhook listener: property-based, with hypothesis.

Random JSON, delivery-shaped bodies with every field of the wrong type, invalid UTF-8, deep
nesting, odd methods, paths and headers, raw HTTP bytes. The properties: the answer is a 200 or a
4xx (never a 5xx) in strict JSON, a refused request keeps nothing (in memory or in the JSON Lines
file), and the listener keeps serving.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from support.faults import FUZZ, header_text, json_values, nested, raw_request, strict_json

from tiledesk_tutorial.jsonl import event_to_record
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload

pytestmark = pytest.mark.fuzz

SECRET = "5b1f0c3e-2d4a-4e8b-9c7d-6a5f4e3d2c1b"
CASES: Counter[str] = Counter()
RAW_FUZZ = settings(FUZZ, max_examples=200)

PAYLOAD_KEYS = (
    "_id", "text", "sender", "senderFullname", "recipient", "request_id", "id_project",
    "createdAt", "updatedAt", "request", "attributes", "type", "status", "lead",
)  # fmt: skip
HOOK_KEYS = ("_id", "event", "target", "id_project", "createdAt")
EVENTS = ("message.create", "request.create", "request.update", "request.close", "x")


class Fuzzed:
    """A running listener and what it has kept, to compare before and after each request."""

    def __init__(self, listener: WebhookListener, store_file: Path) -> None:
        self.listener = listener
        self.store_file = store_file

    def __repr__(self) -> str:
        return f"<Fuzzed {self.listener!r}>"

    def kept(self) -> tuple[int, int, int]:
        """(events in memory, bytes in the JSON Lines file, kept counter)."""
        size = self.store_file.stat().st_size if self.store_file.exists() else 0
        return len(self.listener.events), size, self.listener.stats["kept"]


@pytest.fixture(scope="module", params=["secret", "secret and token"])
def fuzzed(request, tmp_path_factory) -> Iterator[Fuzzed]:
    """A listener that checks the secret, and one that also verifies each delivery's token."""
    store_file = tmp_path_factory.mktemp("listener") / "events.jsonl"
    listener = WebhookListener(
        secret=SECRET, verify_token=request.param == "secret and token", store_file=store_file
    ).start()
    yield Fuzzed(listener, store_file)
    listener.stop()
    print(f"\nlistener fuzz cases run ({request.param}): {dict(CASES)}")


def hooks() -> st.SearchStrategy[Any]:
    """A ``hook``: the right shape with fields of any type, or any JSON at all."""
    field = json_values | st.sampled_from(EVENTS)
    return st.dictionaries(st.sampled_from(HOOK_KEYS), field, max_size=5) | json_values


def deliveries() -> st.SearchStrategy[dict[str, Any]]:
    """Bodies shaped like a delivery, each field of any type (ids, times, nested request...)."""
    payload = st.dictionaries(st.sampled_from(PAYLOAD_KEYS), json_values, max_size=8)
    return st.fixed_dictionaries(
        {},
        optional={
            "timestamp": json_values
            | st.sampled_from([1.5e308, -1, 0, 2**63, 10**30, 1700000000000, math.inf, math.nan]),
            "payload": payload | json_values,
            "hook": hooks(),
            "token": json_values,
        },
    )


def real_delivery_mutated() -> st.SearchStrategy[tuple[bytes, dict[str, str]]]:
    """A valid delivery (right secret and token) with one field replaced by anything."""

    def build(args: tuple[str, str, Any, str]) -> tuple[bytes, dict[str, str]]:
        text, where, value, event = args
        delivery = make_delivery(make_message_payload(text), SECRET, event=event)
        body = delivery.body
        if where == "payload":
            body["payload"][data_key(value)] = value
        elif where == "hook":
            body["hook"][data_key(value)] = value
        elif where != "none":
            body[where] = value
        return json.dumps(body).encode(), delivery.headers

    return st.tuples(
        st.text(max_size=20),
        st.sampled_from(["none", "payload", "hook", "timestamp", "token", "payload", "hook"]),
        json_values,
        st.sampled_from(EVENTS),
    ).map(build)


def data_key(value: Any) -> str:
    """Which field a mutation replaces, chosen from the value, so that every key gets its turn."""
    keys = (*PAYLOAD_KEYS, *HOOK_KEYS)
    return keys[len(repr(value)) % len(keys)]


secret_headers = st.sampled_from(
    [{"x-hook-secret": SECRET}, {"x-hook-secret": SECRET}, {}, {"x-hook-secret": "wrong"}]
) | header_text.map(lambda value: {"x-hook-secret": value})
bodies = st.one_of(
    deliveries().map(lambda body: (json.dumps(body).encode(), {})),
    real_delivery_mutated(),
    json_values.map(lambda value: (json.dumps(value).encode(), {})),
    st.binary(max_size=300).map(lambda raw: (raw, {})),
    st.binary(min_size=1, max_size=20).map(lambda raw: (b'{"payload": {"text": "\xff' + raw, {})),
)
methods = st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
paths = st.sampled_from(["", "", "", "/", "-x", "/../webhook", "?a=1"]) | st.text(max_size=10).map(
    lambda text: "/" + requests.utils.quote(text)
)
content_types = st.sampled_from(
    ["application/json", "application/json", "text/plain", "", "application/json; charset=utf-16"]
)


@FUZZ
@given(body=bodies, secret=secret_headers, method=methods, path=paths, content_type=content_types)
def test_no_request_gets_a_5xx_and_a_refused_one_keeps_nothing(
    fuzzed: Fuzzed,
    body: tuple[bytes, dict[str, str]],
    secret: dict[str, str],
    method: str,
    path: str,
    content_type: str,
) -> None:
    data, delivery_headers = body
    headers = {**delivery_headers, **secret}
    if content_type:
        headers["Content-Type"] = content_type
    before = fuzzed.kept()
    response = requests.request(
        method, fuzzed.listener.url + path, data=data, headers=headers, timeout=10
    )
    CASES["structured"] += 1
    assert response.status_code < 500, response.text
    answer = strict_json(response.text) if response.content else None
    after = fuzzed.kept()
    if response.status_code != 200 or method != "POST":
        assert after == before, response.text
    elif answer["kept"]:
        assert after[0] == before[0] + 1 or after[0] == fuzzed.listener._store.max_events
        assert after[1] > before[1] and after[2] == before[2] + 1
        read_everything(fuzzed.listener.last_event)
    else:
        assert after == before  # a repeat: answered 200, kept once
    assert fuzzed.listener.running


EVENT_PROPERTIES = (
    "is_message", "text", "sender", "sender_fullname", "role", "request_id", "message_id",
    "project_id", "subscription_id", "created_at", "sent_at", "dedupe_key", "message",
    "request", "lead_name", "status", "updated_at",
)  # fmt: skip


def read_everything(event: Any) -> None:
    """What callbacks and widgets read from a kept event: none of it may raise."""
    for name in EVENT_PROPERTIES:
        getattr(event, name)
    repr(event)
    event.summary()
    json.dumps(event_to_record(event))


@RAW_FUZZ
@given(
    method=st.sampled_from([b"POST", b"GET"]) | st.binary(max_size=10),
    path=st.sampled_from([b"/webhook", b"/webhook?x=\xff"]) | st.binary(max_size=20),
    headers=st.lists(
        st.tuples(
            st.sampled_from([b"x-hook-secret", b"Content-Type", b"X-Odd"]) | st.binary(max_size=20),
            st.sampled_from([SECRET.encode(), b"application/json"]) | st.binary(max_size=30),
        ),
        max_size=4,
    ),
    body=st.binary(max_size=200),
    length=st.sampled_from(["exact", "zero", "short", "huge"]),
)
def test_raw_http_bytes_never_get_a_5xx(
    fuzzed: Fuzzed,
    method: bytes,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    length: str,
) -> None:
    size = {"exact": len(body), "zero": 0, "short": len(body) + 7, "huge": 10**12}[length]
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: listener", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: %d" % size)
    before = fuzzed.kept()
    url = f"http://127.0.0.1:{fuzzed.listener.port}"
    status, _ = raw_request(url, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    CASES["raw"] += 1
    assert status is None or status < 500
    if status != 200:
        assert fuzzed.kept() == before
    assert requests.get(fuzzed.listener.url, timeout=5).status_code == 200


EDGE_DELIVERIES = [
    ("timestamp", "1e999"),
    ("timestamp", "-1e999"),
    ("timestamp", "NaN"),
    ("timestamp", "Infinity"),
    ("timestamp", "1e308"),
    ("timestamp", "123456789012345678901234567890"),
    ("timestamp", "true"),
    ("updatedAt", "[1, 2]"),
    ("updatedAt", '{"a": 1}'),
    ("_id", "[1]"),
    ("_id", '{"$oid": "x"}'),
    ("_id", "1e999"),
    ("_id", "NaN"),
    ("text", '"\\ud800"'),
    ("text", '"\\u0000"'),
    *[("attributes", nested(depth)) for depth in (150, 500, 800, 900, 950, 980)],
    ("attributes", nested(5000)),
]


@pytest.mark.parametrize(("field", "value"), EDGE_DELIVERIES, ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("event", ["message.create", "request.update"])
def test_edge_deliveries(fuzzed: Fuzzed, field: str, value: str, event: str) -> None:
    """Values that break naive code: unhashable ids, infinite or NaN timestamps, deep nesting."""
    delivery = make_delivery(make_message_payload("edge"), SECRET, event=event)
    if field == "timestamp":
        delivery.body["timestamp"] = "EDGE"
    else:
        delivery.body["payload"][field] = "EDGE"
    text = json.dumps(delivery.body).replace('"EDGE"', value)  # the raw JSON text, as sent
    before = fuzzed.kept()
    response = requests.post(
        fuzzed.listener.url, data=text.encode(), headers=delivery.headers, timeout=10
    )
    CASES["edge"] += 1
    assert response.status_code < 500, response.text
    strict_json(response.text)
    if response.status_code != 200:
        assert fuzzed.kept() == before
    else:  # what was kept can be read, and read back from the JSON Lines file
        read_everything(fuzzed.listener.last_event)
        lines = fuzzed.store_file.read_text(encoding="utf-8").splitlines()
        json.loads(lines[-1])
    again = requests.post(
        fuzzed.listener.url, data=text.encode(), headers=delivery.headers, timeout=10
    )
    assert again.status_code == response.status_code  # a retry is answered the same way
