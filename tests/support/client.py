"""Fixtures and constants shared by the client's tests (import the fixtures into a test module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.replay_server import ReplayServer, load_transcript
from tiledesk_tutorial.client import TiledeskClient

# Ids and secrets of the recorded run (tests/transcripts/): a throw-away local server.
PROJECT_ID = "6b0690cb0ed30d16ca8ddc1a"
REQUEST_ID = f"support-group-{PROJECT_ID}-0e5e69ddfda4415f9a78cbaf3333804e"
AGENT_EMAIL = "agent1795592393@example.com"
AGENT_PASSWORD = "Passw0rd!123"
AGENT_TOKEN = load_transcript("02-signin").response_json["token"]
VISITOR_TOKEN = load_transcript("04-signin-anonymously").response_json["token"]
SUBSCRIPTION_SECRET = load_transcript("11-subscribe-webhook").response_json["secret"]
MESSAGES_PATH = f"/{PROJECT_ID}/requests/{REQUEST_ID}/messages"


def bare(token: str) -> str:
    """The JWT without its ``JWT `` prefix."""
    return token.split(" ", 1)[1]


def assert_no_secret(text: str, *extra: str) -> None:
    """Fail if ``text`` shows a token, the password or the webhook secret of the recordings."""
    for secret in (bare(AGENT_TOKEN), bare(VISITOR_TOKEN), AGENT_PASSWORD, SUBSCRIPTION_SECRET):
        assert secret not in text
    for secret in extra:
        assert secret not in text
    # No JWT signature part either (the last segment is what makes a token usable).
    assert bare(AGENT_TOKEN).rsplit(".", 1)[1] not in text


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
