"""The EventHub every source shares: keep once, callbacks on one thread in kept order, batches."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tiledesk_tutorial.event_hub import EventHub
from tiledesk_tutorial.models import Event


def message(n: int | str, text: str | None = None) -> Event:
    """A message.create event with its own message id."""
    return Event(event="message.create", payload={"_id": f"m{n}", "text": text or f"t{n}"})


@pytest.fixture
def hub() -> Any:
    """A started hub, stopped after the test."""
    started = EventHub(max_events=10_000, name="tiledesk-listener-test-hub")
    started.start()
    yield started
    started.stop()


def test_a_repeat_is_kept_once_and_never_handed_over_twice(hub: EventHub) -> None:
    seen: list[str] = []
    hub.on_event(lambda e: seen.append(e.text))
    assert hub.add(message(1)) is True
    assert hub.add(message(1, "the same message, delivered again")) is False
    assert hub.wait_idle(10)
    assert seen == ["t1"] and hub.duplicates == 1 and len(hub) == 1
    assert hub.seen(message(1)) and not hub.seen(message(2))


def test_callbacks_see_events_in_kept_order_whatever_the_number_of_threads(hub: EventHub) -> None:
    one_by_one: list[str] = []
    batched: list[str] = []
    threads: set[str] = set()

    def record(event: Event) -> None:
        one_by_one.append(event.message_id or "")
        threads.add(threading.current_thread().name)

    hub.on_event(record)
    hub.on_events(lambda batch: batched.extend(e.message_id or "" for e in batch), key="batch")

    def add_many(sender: int) -> None:
        for n in range(500):
            hub.add(message(f"{sender}-{n}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add_many, range(8)))
    assert hub.wait_idle(30)
    kept = [e.message_id for e in hub.snapshot()]
    assert len(kept) == 4000
    assert one_by_one == kept and batched == kept
    assert threads == {"tiledesk-listener-test-hub"}


def test_a_busy_worker_hands_the_waiting_events_over_in_one_batch(hub: EventHub) -> None:
    release = threading.Event()
    batches: list[list[str | None]] = []
    hub.on_event(lambda e: release.wait(10) if e.message_id == "m0" else None)
    hub.on_events(lambda batch: batches.append([e.message_id for e in batch]), key="view")
    hub.add(message(0))
    for n in range(1, 100):
        hub.add(message(n))  # the worker is held by the first event's callback meanwhile
    release.set()
    assert hub.wait_idle(10)
    # What the worker had taken before it was held, then everything that came meanwhile.
    assert 1 <= len(batches) <= 2
    assert [m for b in batches for m in b] == [f"m{n}" for n in range(100)]


def test_min_interval_gathers_a_burst_and_stop_hands_over_the_rest(hub: EventHub) -> None:
    batches: list[list[str | None]] = []
    first_call = threading.Event()
    others: list[str | None] = []
    all_others = threading.Event()

    def view(batch: list[Event]) -> None:
        batches.append([e.message_id for e in batch])
        first_call.set()

    def other(event: Event) -> None:
        others.append(event.message_id)
        if len(others) == 50:
            all_others.set()

    hub.on_events(view, key="view", min_interval=3600)
    hub.on_event(other)
    hub.add(message(0))
    assert first_call.wait(10)  # the first event of a quiet period is handed over at once
    for n in range(1, 50):
        hub.add(message(n))
    # The batch callback is not due for an hour; the other callbacks are not held up by it.
    assert all_others.wait(10)
    assert others == [f"m{n}" for n in range(50)]
    assert not hub.wait_idle(0.2)  # the rest is still gathering
    assert hub.pending >= 49
    hub.stop()
    assert batches == [["m0"], [f"m{n}" for n in range(1, 50)]]


def test_a_key_replaces_a_callback_and_remove_takes_either(hub: EventHub) -> None:
    calls: list[str] = []
    hub.on_events(lambda b: calls.append("first"), key=("view", None))
    hub.on_events(lambda b: calls.append("re-run"), key=("view", None))
    other = hub.on_events(lambda b: calls.append("other"), key=("view", "rid"))

    def named(event: Event) -> None:
        calls.append("named")

    hub.on_event(named)
    hub.on_event(named)  # the same named function, registered again: once
    hub.add(message(1))
    assert hub.wait_idle(10)
    assert sorted(calls) == ["named", "other", "re-run"]
    hub.remove_callback(other)
    hub.remove_callback(("view", None))
    hub.remove_callback(named)
    hub.add(message(2))
    assert hub.wait_idle(10)
    assert len(calls) == 3


def test_a_failing_callback_is_counted_and_logged_once(hub: EventHub, caplog) -> None:
    hub.label = "webhook"

    def broken(event: Event) -> None:
        raise KeyError("text")

    hub.on_event(broken)
    hub.add(message(1))
    hub.add(message(2))
    assert hub.wait_idle(10)
    assert hub.callback_errors == 2 and "broken: KeyError" in (hub.last_callback_error or "")
    assert caplog.text.count("webhook callback") == 1


def test_the_store_is_bounded_and_remembers_more_keys_than_events() -> None:
    hub = EventHub(max_events=3)
    for n in range(5):
        hub.add(message(n))
    assert [e.message_id for e in hub.snapshot()] == ["m2", "m3", "m4"] and hub.evicted == 2
    assert hub.add(message(0)) is False  # scrolled out, still recognised
    hub.clear()
    assert len(hub) == 0 and hub.last() is None and hub.add(message(4)) is False
    with pytest.raises(ValueError, match="max_events"):
        EventHub(max_events=0)
    with pytest.raises(TypeError, match="on_events"):
        hub.on_events("not a function", key="x")  # type: ignore[arg-type]


def test_persist_failing_keeps_nothing_so_a_retry_can_succeed() -> None:
    hub = EventHub()

    def full_disk(event: Event) -> None:
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        hub.add(message(1), persist=full_disk)
    assert len(hub) == 0 and not hub.seen(message(1))
    assert hub.add(message(1), persist=lambda e: None) is True


def test_wait_counts_events_already_kept_and_returns_what_matched_on_timeout(hub: EventHub) -> None:
    hub.add(message(1, "early"))
    assert [e.text for e in hub.wait(lambda e: e.text == "early", 1, 10)] == ["early"]
    later = threading.Timer(0.05, lambda: hub.add(message(2, "late")))
    later.start()
    try:
        assert [e.text for e in hub.wait(lambda e: e.text == "late", 1, 10)] == ["late"]
    finally:
        later.join()
    assert len(hub.wait(None, 5, 0.05)) == 2
