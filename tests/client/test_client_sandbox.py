"""Every client operation, and the errors a learner meets, against the sandbox over HTTP."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator

import pytest
from support.client import assert_no_secret
from support.replay_server import Received, ReplayServer, Reply

from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.config import Config
from tiledesk_tutorial.errors import (
    AuthenticationError,
    EmailAlreadyRegisteredError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    TiledeskConnectionError,
    TiledeskError,
    ValidationError,
)
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.models import Message, Request
from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox

EMAIL = "ada@example.com"
PASSWORD = "Passw0rd!-sandbox"
UNKNOWN_PROJECT = "5f0000000000000000000000"


@pytest.fixture(params=["root", "v3"])
def base_url(request: pytest.FixtureRequest, sandbox: SandboxHandle) -> str:
    """The sandbox at its root and under /v3, as the cloud is."""
    return sandbox.url + ("" if request.param == "root" else "/v3")


@pytest.fixture
def agent(base_url: str) -> Iterator[TiledeskClient]:
    """A signed-up, signed-in agent who owns a fresh project."""
    client = TiledeskClient(base_url, backoff_factor=0.01)
    client.sign_up(EMAIL, PASSWORD, "Ada", "Agent")
    client.sign_in(EMAIL, PASSWORD)
    client.project_id = client.create_project("Tutorial").id
    yield client
    client.close()


def test_the_whole_tutorial_flow(agent: TiledeskClient) -> None:
    project_id = agent.project_id
    assert project_id is not None
    assert [(m.role, m.project.id) for m in agent.list_projects()] == [("owner", project_id)]
    assert agent.get_project().name == "Tutorial"

    visitor = agent.as_visitor(project_id, firstname="John")
    assert visitor.is_visitor and visitor.user is not None and visitor.user.firstname == "John"
    request_id = new_request_id(project_id)

    first = visitor.send_message(request_id, "Hello, I need help")
    assert (first.text, first.role, first.request_id) == (
        "Hello, I need help",
        "visitor",
        request_id,
    )
    assert isinstance(first.request, Request) and first.request.status_name == "ASSIGNED"
    assert first.request.lead_name == "John"

    reply = agent.send_message(request_id, "Hi John, how can I help?")
    assert reply.role == "agent"

    for reader in (visitor, agent):
        messages = reader.list_messages(request_id)
        assert [m.text for m in messages] == ["Hello, I need help", "Hi John, how can I help?"]
        assert [m.role for m in messages] == ["visitor", "agent"]
        assert all(isinstance(m, Message) for m in messages)

    assert [r.request_id for r in agent.list_requests()] == [request_id]
    assert [r.request_id for r in visitor.list_my_requests()] == [request_id]
    assert agent.get_request(request_id).first_text == "Hello, I need help"

    closed = agent.close_request(request_id)
    assert closed.is_closed and closed.closed_at is not None
    assert agent.close_request(request_id).is_closed  # closing twice is allowed
    assert agent.list_requests().requests == []  # closed ones are hidden by default
    assert [r.request_id for r in agent.list_requests(status="closed")] == [request_id]


def test_visitor_closes_its_own_conversation(agent: TiledeskClient) -> None:
    visitor = agent.as_visitor(firstname="Vic")
    request_id = visitor.new_request_id()
    visitor.send_message(request_id, "Thanks, that's all")
    assert visitor.close_request_as_visitor(request_id).is_closed
    assert visitor.list_my_requests().requests == []
    assert [r.request_id for r in visitor.list_my_requests(status="all")] == [request_id]


def test_extra_message_fields_and_images(agent: TiledeskClient) -> None:
    visitor = agent.as_visitor()
    request_id = visitor.new_request_id()
    message = visitor.send_message(
        request_id, "hi", attributes={"order": 4242}, sender_fullname="Johnny", language="en"
    )
    assert (message.attributes, message.sender_fullname) == ({"order": 4242}, "Johnny")
    assert message.raw["language"] == "en"
    picture = {"src": "https://example.com/a.png", "width": 10, "height": 10}
    image = visitor.send_message(request_id, type="image", metadata=picture)
    assert (image.type, image.text, image.metadata) == ("image", None, picture)
    assert [(m.type, m.text) for m in agent.list_messages(request_id)] == [
        ("text", "hi"),
        ("image", None),
    ]


def test_paging_through_requests(agent: TiledeskClient) -> None:
    visitor = agent.as_visitor()
    ids = {visitor.new_request_id() for _ in range(3)}
    for request_id in ids:
        visitor.send_message(request_id, "hello")
    page = agent.list_requests(limit=2)
    assert (len(page), page.count, page.has_more) == (2, 3, True)
    assert {r.request_id for r in agent.iter_requests(limit=2)} == ids


def test_subscriptions_and_the_secret_in_deliveries(agent: TiledeskClient) -> None:
    with ReplayServer() as receiver:
        receiver.add("POST", "/hook", Reply.json(200, {"ok": True}))
        subscription = agent.create_subscription(receiver.url + "/hook")
        assert subscription.secret and subscription.event == "message.create"
        assert_no_secret(repr(subscription), subscription.secret)

        listed = agent.list_subscriptions()
        assert [(s.id, s.secret) for s in listed] == [(subscription.id, None)]
        assert agent.get_subscription(subscription.id).target == receiver.url + "/hook"

        visitor = agent.as_visitor()
        visitor.send_message(visitor.new_request_id(), "Is anyone there?")
        delivery = wait_for_delivery(receiver, "Is anyone there?")
        assert delivery.headers["X-Hook-Secret"] == subscription.secret

        assert isinstance(agent.subscription_history(), list)
        assert agent.delete_subscription(subscription.id) is not None
        assert agent.list_subscriptions() == []


def test_subscription_history_can_wait_for_the_deliveries_to_be_recorded(
    agent: TiledeskClient,
) -> None:
    with WebhookListener() as listener:
        listener.add_secret(agent.create_subscription(listener.url).secret)
        visitor = agent.as_visitor(firstname="John")
        rid = new_request_id(agent.project_id)
        visitor.send_message(rid, "one")
        agent.send_message(rid, "two")
        history = agent.wait_for_subscription_history(2)
        assert [(h.event, h.status_code) for h in history] == [("message.create", 200)] * 2
        # More than will ever come: it gives up after the timeout with what there is.
        assert len(agent.wait_for_subscription_history(99, timeout=0.3)) == 2


def wait_for_delivery(receiver: ReplayServer, text: str, within: float = 10.0) -> Received:
    """The delivery of the message ``text`` (deliveries are asynchronous, so wait for it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for delivery in receiver.requests_to("POST", "/hook"):
            if (delivery.json or {}).get("payload", {}).get("text") == text:
                return delivery
        time.sleep(0.02)
    raise AssertionError(f"no delivery of {text!r} within {within} s")


def test_basic_auth_for_the_webhook_section(base_url: str, agent: TiledeskClient) -> None:
    basic = TiledeskClient(base_url, project_id=agent.project_id)
    basic.use_basic_auth(EMAIL, PASSWORD)
    subscription = basic.create_subscription("https://example.com/hook", "request.close")
    assert subscription.secret
    assert [s.event for s in basic.list_subscriptions()] == ["request.close"]
    assert PASSWORD not in (basic.last_curl or "") and f"-u '{EMAIL}:***'" in (
        basic.last_curl or ""
    )


# --- the errors a learner meets, from the sandbox ----------------------------------------------


def check(error: TiledeskError, *phrases: str, secrets: tuple[str, ...] = ()) -> None:
    text = str(error)
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    for secret in (PASSWORD, *secrets):
        assert secret not in text + repr(error) + (error.curl or "")


def test_authentication_errors(base_url: str, agent: TiledeskClient) -> None:
    token = agent.token or ""
    with pytest.raises(AuthenticationError) as info:
        TiledeskClient(base_url).sign_in(EMAIL, "wrong")
    check(info.value, "Wrong password", "check the password given to sign_in()")
    assert "TILEDESK_PASSWORD" not in str(info.value)  # the sandbox's learner never set it
    with pytest.raises(AuthenticationError) as info:
        TiledeskClient(base_url, email=EMAIL, password="wrong").sign_in()
    check(info.value, "Wrong password", "check the password the client was made with")
    config = Config(api_url=base_url, email=EMAIL, password="wrong")
    with pytest.raises(AuthenticationError) as info:
        TiledeskClient.from_config(config).sign_in()
    check(info.value, "Wrong password", "check TILEDESK_PASSWORD")
    with pytest.raises(AuthenticationError) as info:
        TiledeskClient(base_url).sign_in("nobody@example.com", PASSWORD)
    check(info.value, "User not found")
    with pytest.raises(AuthenticationError) as info:
        TiledeskClient(base_url, project_id=agent.project_id).list_requests()
    check(info.value, "sign in first")
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(AuthenticationError) as info:
        TiledeskClient(base_url, token=forged, project_id=agent.project_id).list_requests()
    check(info.value, "did not accept the token", "not `Bearer", secrets=(token[4:], forged[4:]))


def test_permission_errors(base_url: str, agent: TiledeskClient) -> None:
    visitor = agent.as_visitor(firstname="John")
    request_id = visitor.new_request_id()
    visitor.send_message(request_id, "hello")
    token = visitor.token or ""
    with pytest.raises(PermissionDeniedError) as info:
        visitor.get_request(request_id)
    check(info.value, "you dont have the required role.", "agent role", secrets=(token[4:],))
    with pytest.raises(PermissionDeniedError) as info:
        visitor.create_subscription("https://example.com/hook")
    check(info.value, "admin role", "anonymous visitor")

    other = TiledeskClient(base_url, token=agent.token).create_project("Other")
    with pytest.raises(PermissionDeniedError) as info:
        visitor.list_messages(request_id, project_id=other.id)
    check(info.value, "you dont belong to the project.", "anonymous tokens are valid in one")

    with pytest.raises(EmailAlreadyRegisteredError) as info:
        TiledeskClient(base_url).sign_up(EMAIL, PASSWORD, "Ada", "Again")
    check(info.value, "Email already registered", "sign in instead")


def test_not_found_and_wrong_base_urls(
    base_url: str, agent: TiledeskClient, sandbox: SandboxHandle
) -> None:
    with pytest.raises(NotFoundError) as info:
        agent.list_requests(project_id=UNKNOWN_PROJECT)
    check(info.value, f"Project not found with id: {UNKNOWN_PROJECT}", "TILEDESK_PROJECT_ID")

    # /v2 is not served: the sandbox reads "v2" as a project id, as a root-mounted Tiledesk does.
    with pytest.raises(ValidationError) as info:
        TiledeskClient(sandbox.url + "/v2").sign_in(EMAIL, PASSWORD)
    check(info.value, "Invalid project id: v2", "remove '/v2'")


def test_sandbox_not_running() -> None:
    with start_sandbox() as stopped:
        url = stopped.url
    with pytest.raises(TiledeskConnectionError) as info:
        TiledeskClient(url, retries=0).sign_in(EMAIL, PASSWORD)
    check(info.value, "connection refused", "sandbox, it is not running", "start_sandbox()")


def test_the_request_path_is_one_function_a_learner_can_read() -> None:
    """Opening client.py to see how a call is made: the requests call, its curl and the error it
    becomes are in one short function."""
    source = inspect.getsource(TiledeskClient._call)
    for step in ("requests.Request(", "curl_for_prepared(", ".send(", "check_answer("):
        assert step in source, step
    assert "error_for_transport_failure(" in source
    assert len(source.splitlines()) <= 60


def test_a_runnable_curl_runs_in_a_shell_without_showing_the_token(
    agent: TiledeskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runnable_curl(): the last call, the token read from $TILEDESK_TOKEN, run by bash."""
    import json
    import os
    import subprocess

    monkeypatch.delenv("TILEDESK_TOKEN", raising=False)
    with pytest.raises(InvalidInputError, match="no call made yet"):
        TiledeskClient(agent.base_url).runnable_curl()
    with pytest.raises(InvalidInputError, match="environment variable's name"):
        agent.runnable_curl("NOT A NAME")
    request_id = new_request_id(agent.project_id)
    agent.send_message(request_id, "sent from Python")
    posted = agent.runnable_curl()
    assert agent.token is not None and agent.token[4:] not in posted
    assert os.environ["TILEDESK_TOKEN"] == agent.token
    shell = subprocess.run(
        ["bash", "-c", posted.replace("sent from Python", "sent by curl") + " --silent --fail"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert json.loads(shell.stdout)["text"] == "sent by curl"
    assert [m.text for m in agent.list_messages(request_id)][:2] == [
        "sent from Python",
        "sent by curl",
    ]
