"""The recorded run's ids and secrets (tests/transcripts/), and a check that none is shown."""

from __future__ import annotations

from support.replay_server import load_transcript
from tiledesk_tutorial.wire import bare_token

# Ids and secrets of the recorded run (tests/transcripts/): a throw-away local server.
PROJECT_ID = "6b0690cb0ed30d16ca8ddc1a"
REQUEST_ID = f"support-group-{PROJECT_ID}-0e5e69ddfda4415f9a78cbaf3333804e"
AGENT_EMAIL = "agent1795592393@example.com"
AGENT_PASSWORD = "Passw0rd!123"
AGENT_TOKEN = load_transcript("02-signin").response_json["token"]
VISITOR_TOKEN = load_transcript("04-signin-anonymously").response_json["token"]
SUBSCRIPTION_SECRET = load_transcript("11-subscribe-webhook").response_json["secret"]
MESSAGES_PATH = f"/{PROJECT_ID}/requests/{REQUEST_ID}/messages"


def assert_no_secret(text: str, *extra: str) -> None:
    """Fail if ``text`` shows a token, the password or the webhook secret of the recordings."""
    for secret in (
        bare_token(AGENT_TOKEN),
        bare_token(VISITOR_TOKEN),
        AGENT_PASSWORD,
        SUBSCRIPTION_SECRET,
    ):
        assert secret not in text
    for secret in extra:
        assert secret not in text
    # No JWT signature part either (the last segment is what makes a token usable).
    assert bare_token(AGENT_TOKEN).rsplit(".", 1)[1] not in text
