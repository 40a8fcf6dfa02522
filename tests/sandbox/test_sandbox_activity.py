"""Webhook delivery gives way to API calls in progress, and never waits for long."""

from __future__ import annotations

import threading

from tiledesk_tutorial.sandbox.activity import Activity


def test_quiet_when_no_call_is_in_progress() -> None:
    activity = Activity()
    assert activity.wait_quiet(0) is True


def test_waits_for_the_last_call_to_be_answered() -> None:
    activity = Activity()
    activity.enter()
    activity.enter()
    assert activity.wait_quiet(0.01) is False  # busy: gives up after the short wait
    waiter_saw: list[bool] = []
    waiter = threading.Thread(target=lambda: waiter_saw.append(activity.wait_quiet(5)))
    waiter.start()
    activity.leave()
    assert activity.busy == 1
    activity.leave()
    waiter.join(5)
    assert waiter_saw == [True]
    assert activity.busy == 0
