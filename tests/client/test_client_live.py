"""The client against a real Tiledesk named by ``TILEDESK_API_URL`` (marker ``live``).

Run with ``pytest -m live`` after setting ``TILEDESK_API_URL`` (e.g. https://api.tiledesk.com/v3),
``TILEDESK_EMAIL`` and ``TILEDESK_PASSWORD`` in the environment or a ``.env`` file. The project is
``TILEDESK_PROJECT_ID``, or else the first project where the account is owner or admin; no project
or account is created. The tests leave nothing behind but one closed conversation per run (the
subscription they create is deleted). Skipped, with the reason, when a variable is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tiledesk_tutorial.client import TiledeskClient
from tiledesk_tutorial.config import Config, load_config
from tiledesk_tutorial.errors import AuthenticationError, NotFoundError, PermissionDeniedError


def _live_config() -> tuple[Config | None, str]:
    try:
        config = load_config()
    except ValueError as exc:
        return None, f"the live configuration is malformed: {exc}"
    missing = [
        var
        for var, value in (
            ("TILEDESK_API_URL", config.api_url),
            ("TILEDESK_EMAIL", config.email),
            ("TILEDESK_PASSWORD", config.password),
        )
        if not value
    ]
    if missing:
        return None, "live tests need a real Tiledesk: set " + ", ".join(missing)
    return config, ""


CONFIG, SKIP_REASON = _live_config()

pytestmark = [pytest.mark.live, pytest.mark.skipif(CONFIG is None, reason=SKIP_REASON)]


@pytest.fixture(scope="module")
def agent() -> Iterator[TiledeskClient]:
    """The account of the configuration, signed in, with a project it administers."""
    assert CONFIG is not None
    client = TiledeskClient.from_config(CONFIG, timeout=30)
    client.sign_in()
    if client.project_id is None:
        admin = [m for m in client.list_projects() if m.role in ("owner", "admin")]
        if not admin:
            pytest.skip("the account administers no project: set TILEDESK_PROJECT_ID")
        client.project_id = admin[0].project.id
    yield client
    client.close()


def test_sign_in_and_projects(agent: TiledeskClient) -> None:
    assert agent.token is not None and agent.token.startswith("JWT ")
    assert agent.user is not None and agent.user.email == CONFIG.email.lower()  # type: ignore[union-attr]
    assert agent.project_id in {m.project.id for m in agent.list_projects()}
    assert agent.get_project().id == agent.project_id


def test_conversation_between_a_visitor_and_the_agent(agent: TiledeskClient) -> None:
    visitor = agent.as_visitor(firstname="Tutorial test")
    request_id = visitor.new_request_id()
    try:
        first = visitor.send_message(request_id, "Hello from the tiledesk-tutorial live tests")
        assert first.request_id == request_id and first.role == "visitor"
        assert first.request is not None and first.request.request_id == request_id
        reply = agent.send_message(request_id, "Hello, this is the agent")
        assert reply.role == "agent"
        texts = [m.text for m in visitor.list_messages(request_id)]
        assert "Hello from the tiledesk-tutorial live tests" in texts
        assert "Hello, this is the agent" in texts
        assert agent.get_request(request_id).request_id == request_id
        assert request_id in {r.request_id for r in visitor.list_my_requests()}
        assert request_id in {r.request_id for r in agent.iter_requests()}
        with pytest.raises(PermissionDeniedError):
            visitor.get_request(request_id)
    finally:
        closed = agent.close_request(request_id)
    assert closed.is_closed


def test_subscription_lifecycle(agent: TiledeskClient) -> None:
    target = "https://example.com/tiledesk-tutorial-live-test"
    subscription = agent.create_subscription(target, "request.close")
    try:
        assert subscription.secret
        assert subscription.id in {s.id for s in agent.list_subscriptions()}
        assert agent.get_subscription(subscription.id).target == target
        assert isinstance(agent.subscription_history(), list)
    finally:
        agent.delete_subscription(subscription.id)
    assert subscription.id not in {s.id for s in agent.list_subscriptions()}


def test_errors_from_the_real_server(agent: TiledeskClient) -> None:
    assert CONFIG is not None
    with pytest.raises(AuthenticationError):
        TiledeskClient(agent.base_url).sign_in(CONFIG.email, (CONFIG.password or "") + "-wrong")
    with pytest.raises(NotFoundError):
        agent.list_messages("support-group-x", project_id="5f0000000000000000000000")
    with pytest.raises(PermissionDeniedError):  # registered already (or a reCAPTCHA refusal)
        TiledeskClient(agent.base_url).sign_up(CONFIG.email or "", "x-Passw0rd", "A", "B")
