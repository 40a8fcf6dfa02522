"""Fixtures for the realtime feed, the forwarder and ``listen``: a webhook receiver that records
what it gets and answers what the test says, and a check that no feed thread is left running."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from realtime.helpers import Quiet, Receiver
from tiledesk_tutorial.realtime import stop_all_feeds

_OURS = ("tiledesk-realtime", "tiledesk-forwarder")


@pytest.fixture(autouse=True)
def no_leftover_feed_threads() -> Iterator[None]:
    """Fail a test that leaves a feed's or a forwarder's thread running."""
    before = {t.ident for t in threading.enumerate()}
    yield
    stop_all_feeds()
    leftover = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and t.name.startswith(_OURS)
    ]
    assert not leftover, f"threads left running: {leftover}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a free loopback port, stopped after the test."""
    app = Receiver()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    app.url = f"http://127.0.0.1:{server.port}/webhook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield app
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
