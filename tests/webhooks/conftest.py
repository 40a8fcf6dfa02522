"""Fixtures of the webhook tests: listeners started for a test and checked for leftovers."""

from __future__ import annotations

import pytest
from support.listener import listener_threads

from tiledesk_tutorial.listener import WebhookListener, running_listeners


@pytest.fixture
def make_listener():
    """Start listeners for a test; stop them all after it and check no thread was left behind."""
    started: list[WebhookListener] = []

    def start(**kwargs) -> WebhookListener:
        listener = WebhookListener(**kwargs).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()
    assert listener_threads() == []
    assert running_listeners() == []
