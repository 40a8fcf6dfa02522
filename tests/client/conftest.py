"""Fixtures of the client's tests: a replay server and clients holding the recorded tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.client import AGENT_TOKEN, PROJECT_ID, VISITOR_TOKEN
from support.replay_server import ReplayServer

from tiledesk_tutorial.client import TiledeskClient


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    """A replay server on a free port, stopped after the test."""
    server = ReplayServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def agent(replay: ReplayServer) -> Iterator[TiledeskClient]:
    """A client holding the recorded agent token, with fast retries."""
    client = TiledeskClient(
        replay.url, token=AGENT_TOKEN, project_id=PROJECT_ID, backoff_factor=0.01
    )
    yield client
    client.close()


@pytest.fixture
def visitor(replay: ReplayServer) -> Iterator[TiledeskClient]:
    """A client holding the recorded visitor (guest) token."""
    client = TiledeskClient(
        replay.url, token=VISITOR_TOKEN, project_id=PROJECT_ID, backoff_factor=0.01
    )
    yield client
    client.close()
