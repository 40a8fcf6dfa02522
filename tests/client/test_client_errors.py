"""Every error class, raised from the real server's recorded answers (or the documented shapes).

Each test drives the client as a learner would, then checks the exception's class, that its message
quotes the server and gives the right hint, and that no secret shows in it.
"""

from __future__ import annotations

import pytest
import urllib3.util.retry
from support.client import (
    AGENT_EMAIL,
    AGENT_PASSWORD,
    AGENT_TOKEN,
    MESSAGES_PATH,
    PROJECT_ID,
    REQUEST_ID,
    assert_no_secret,
)
from support.replay_server import ReplayServer, Reply, load_transcript

from tiledesk_tutorial import session
from tiledesk_tutorial.client import TiledeskClient
from tiledesk_tutorial.errors import (
    AuthenticationError,
    EmailAlreadyRegisteredError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TiledeskConnectionError,
    TiledeskError,
    TiledeskTimeoutError,
    UnexpectedResponseError,
    ValidationError,
)

OTHER_PROJECT = "5f0000000000000000000000"


def checked(exc: TiledeskError, *phrases: str) -> str:
    """The error's text, after checking it has each phrase and no secret."""
    text = str(exc)
    for phrase in phrases:
        assert phrase.lower() in text.lower(), f"{phrase!r} not in {text!r}"
    assert_no_secret(text + repr(exc) + (exc.curl or ""))
    return text


# --- 401 ---------------------------------------------------------------------------------------


def test_wrong_password(replay: ReplayServer) -> None:
    replay.replay("20-err-signin-bad-password")
    client = TiledeskClient(replay.url)
    with pytest.raises(AuthenticationError) as info:
        client.sign_in(AGENT_EMAIL, "wrong-password")
    checked(
        info.value, "401", "Authentication failed. Wrong password.", "password given to sign_in()"
    )
    assert "wrong-password" not in str(info.value)
    assert info.value.status == 401 and info.value.method == "POST"
    assert info.value.body == {"success": False, "msg": "Authentication failed. Wrong password."}
    assert client.token is None


def test_unknown_email(replay: ReplayServer) -> None:
    replay.replay("21-err-signin-unknown-email")
    with pytest.raises(AuthenticationError) as info:
        TiledeskClient(replay.url).sign_in("nobody@example.com", "whatever")
    checked(info.value, "User not found", "sign up first")


@pytest.mark.parametrize("recording", ["22-err-missing-token-messages"])
def test_missing_token_on_a_project_route(replay: ReplayServer, recording: str) -> None:
    replay.replay(recording)
    client = TiledeskClient(replay.url, project_id=PROJECT_ID)
    with pytest.raises(AuthenticationError) as info:
        client.send_message(REQUEST_ID, "no token")
    text = checked(info.value, "401", "sign in first")
    assert "plain text" in text
    assert info.value.body == "Unauthorized"


def test_missing_token_when_creating_a_project(replay: ReplayServer) -> None:
    replay.replay("23-err-missing-token-create-project")
    with pytest.raises(AuthenticationError) as info:
        TiledeskClient(replay.url).create_project("x")
    checked(info.value, "needs credentials")


def test_rejected_token(replay: ReplayServer) -> None:
    replay.replay("24-err-garbage-token")
    client = TiledeskClient(replay.url, token="JWT not.a.jwt", project_id=PROJECT_ID)
    with pytest.raises(AuthenticationError) as info:
        client.list_messages(REQUEST_ID)
    checked(info.value, "did not accept the token", "JWT <token>", "not `Bearer", "sign in again")
    assert replay.received[-1].headers["Authorization"] == "JWT not.a.jwt"


def test_rejected_basic_credentials(replay: ReplayServer) -> None:
    replay.replay("24-err-garbage-token", path=f"/{PROJECT_ID}/subscriptions")
    client = TiledeskClient(replay.url, project_id=PROJECT_ID)
    client.use_basic_auth(AGENT_EMAIL, AGENT_PASSWORD)
    with pytest.raises(AuthenticationError) as info:
        client.list_subscriptions()
    checked(info.value, "email and password")


def test_bearer_is_refused_before_sending(replay: ReplayServer) -> None:
    with pytest.raises(ValueError, match=r"Bearer.*JWT") as info:
        TiledeskClient(replay.url, token="Bearer " + AGENT_TOKEN.split(" ", 1)[1])
    assert_no_secret(str(info.value))
    assert replay.received == []


# --- 403 ---------------------------------------------------------------------------------------


def test_visitor_on_an_agent_route(replay: ReplayServer, visitor: TiledeskClient) -> None:
    replay.replay("09-get-request-as-visitor")
    with pytest.raises(PermissionDeniedError) as info:
        visitor.get_request(REQUEST_ID)
    checked(
        info.value,
        "you dont have the required role.",
        "anonymous visitor",
        "agent role",
        "list_my_requests",
    )


def test_visitor_on_the_subscriptions_route(replay: ReplayServer, visitor: TiledeskClient) -> None:
    replay.replay("31-err-visitor-token-subscriptions")
    with pytest.raises(PermissionDeniedError) as info:
        visitor.create_subscription("http://127.0.0.1:8099/hook")
    checked(info.value, "admin role", "anonymous visitor")


def test_agent_with_a_role_too_low(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.replay("31-err-visitor-token-subscriptions")
    with pytest.raises(PermissionDeniedError) as info:
        agent.create_subscription("http://127.0.0.1:8099/hook")
    text = checked(info.value, "admin role", "your account's role is lower")
    assert "visitor" not in text


def test_visitor_token_from_another_project(replay: ReplayServer, visitor: TiledeskClient) -> None:
    # The real server answers this with ADMIN_EMAIL set, as any deployment has (README, "Where the
    # sandbox differs").
    path = f"/{OTHER_PROJECT}/requests/{REQUEST_ID}/messages"
    body = {"success": False, "msg": "you dont belong to the project."}
    replay.add("GET", path, Reply.json(403, body))
    with pytest.raises(PermissionDeniedError) as info:
        visitor.list_messages(REQUEST_ID, project_id=OTHER_PROJECT)
    checked(info.value, "you dont belong to the project.", "another project", OTHER_PROJECT)


def test_account_not_member_of_the_project(replay: ReplayServer, agent: TiledeskClient) -> None:
    path = f"/{OTHER_PROJECT}/requests"
    replay.add(
        "GET", path, Reply.json(403, {"success": False, "msg": "you dont belong to the project."})
    )
    with pytest.raises(PermissionDeniedError) as info:
        agent.list_requests(project_id=OTHER_PROJECT)
    checked(info.value, "not a member", "TILEDESK_PROJECT_ID")


def test_malformed_authorization_header(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.add("GET", MESSAGES_PATH, Reply.json(403, {"success": False, "msg": "Unauthorized."}))
    with pytest.raises(PermissionDeniedError) as info:
        agent.list_messages(REQUEST_ID)
    checked(info.value, "exactly `JWT <token>`")


@pytest.mark.parametrize("recording", ["29-err-signup-duplicate-email", "00-signup-fails"])
def test_email_already_registered(replay: ReplayServer, recording: str) -> None:
    replay.replay(recording)
    with pytest.raises(EmailAlreadyRegisteredError) as info:
        TiledeskClient(replay.url).sign_up(AGENT_EMAIL, AGENT_PASSWORD, "Ada", "Agent")
    assert isinstance(info.value, PermissionDeniedError)
    checked(info.value, "403", "Email already registered", "sign in instead", "phone=")


# --- 400 / 404 ---------------------------------------------------------------------------------


def test_project_not_found(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.replay("25-err-wrong-project-id-valid-objectid")
    with pytest.raises(NotFoundError) as info:
        agent.send_message(REQUEST_ID, "wrong project", project_id=OTHER_PROJECT)
    checked(info.value, "400", f"Project not found with id: {OTHER_PROJECT}", "TILEDESK_PROJECT_ID")


def test_anonymous_sign_in_to_an_unknown_project_fails_at_the_next_call(
    replay: ReplayServer,
) -> None:
    replay.replay("32-anon-signin-unknown-project")
    replay.replay("33-err-visitor-token-other-project")
    client = TiledeskClient(replay.url)
    client.sign_in_anonymously(OTHER_PROJECT, firstname="X")  # Tiledesk does not check
    with pytest.raises(NotFoundError) as info:
        client.list_messages(REQUEST_ID)
    checked(info.value, "Project not found", "sandbox does not exist on a real Tiledesk")


def test_base_url_with_a_prefix_the_server_does_not_have(replay: ReplayServer) -> None:
    # A root-mounted Tiledesk reads the first path segment as a project id (recording 26).
    replay.replay("26-err-wrong-project-id-not-objectid", path="/not-a-project/auth/signin")
    client = TiledeskClient(replay.url + "/not-a-project")
    with pytest.raises(ValidationError) as info:
        client.sign_in(AGENT_EMAIL, AGENT_PASSWORD)
    checked(info.value, "Invalid project id: not-a-project", "remove '/not-a-project'")


def test_html_404_means_a_wrong_base_url(replay: ReplayServer) -> None:
    client = TiledeskClient(replay.url + "/v3")
    with pytest.raises(NotFoundError) as info:
        client.sign_in(AGENT_EMAIL, AGENT_PASSWORD)
    text = checked(info.value, "404", "Cannot POST /v3/auth/signin", "wrong base URL", "root")
    assert "<html" not in text
    client = TiledeskClient(replay.url)
    with pytest.raises(NotFoundError) as info:
        client.sign_in(AGENT_EMAIL, AGENT_PASSWORD)
    checked(info.value, "https://api.tiledesk.com/v3")


def test_json_404(replay: ReplayServer, agent: TiledeskClient) -> None:
    path = f"/{PROJECT_ID}/requests/{REQUEST_ID}"
    replay.add("GET", path, Reply.json(404, {"success": False, "msg": "Object not found."}))
    with pytest.raises(NotFoundError) as info:
        agent.get_request(REQUEST_ID)
    checked(info.value, "Object not found.", "check the id")


# --- validation --------------------------------------------------------------------------------


def test_signup_without_password_is_a_200_that_failed(replay: ReplayServer) -> None:
    replay.replay("30-err-signup-missing-password")
    with pytest.raises(ValidationError) as info:
        TiledeskClient(replay.url).sign_up("nopass@example.com", "x", "B", "C")
    checked(info.value, "200", "Please pass email and password.", "needs both")


def test_first_message_without_text_422(replay: ReplayServer, visitor: TiledeskClient) -> None:
    # Shape from the server's code; the running 2.19.16 accepts empty text instead (transcript 27).
    replay.add("POST", MESSAGES_PATH, Reply.json(422, {"errors": ["text field is required"]}))
    with pytest.raises(ValidationError) as info:
        visitor.send_message(REQUEST_ID, "…")
    checked(info.value, "422", "text field is required")


def test_express_validator_errors_never_echo_values(replay: ReplayServer) -> None:
    body = {
        "errors": [
            {"value": "S3cret-value", "msg": "Invalid value", "param": "email", "location": "body"}
        ]
    }
    replay.add("POST", "/auth/signup", Reply.json(422, body))
    with pytest.raises(ValidationError) as info:
        TiledeskClient(replay.url).sign_up("a@b.c", "S3cret-value", "A", "B")
    checked(info.value, "email: Invalid value")
    assert "S3cret-value" not in str(info.value)


def test_payload_too_large(replay: ReplayServer, agent: TiledeskClient) -> None:
    body = {"err": "Request entity too large", "limit": "500kb"}
    replay.add("POST", MESSAGES_PATH, Reply.json(413, body))
    with pytest.raises(ValidationError) as info:
        agent.send_message(REQUEST_ID, "x" * 10)
    checked(info.value, "413", "too large")


# --- 429 / 5xx and retries ---------------------------------------------------------------------


def test_get_is_retried_after_503_and_succeeds(replay: ReplayServer, agent: TiledeskClient) -> None:
    ok = load_transcript("07-get-messages-as-agent").reply
    replay.add("GET", MESSAGES_PATH, Reply.json(503, {"err": "busy"}), ok)
    assert [m.text for m in agent.list_messages(REQUEST_ID)] == ["Hello, I need help with my order"]
    assert len(replay.requests_to("GET", MESSAGES_PATH)) == 2


def test_send_message_is_never_repeated(replay: ReplayServer, agent: TiledeskClient) -> None:
    ok = load_transcript("10-agent-reply").reply
    replay.add("POST", MESSAGES_PATH, Reply.json(503, {"err": "busy"}), ok)
    with pytest.raises(ServerError) as info:
        agent.send_message(REQUEST_ID, "Hi Vic")
    checked(info.value, "503", "busy")
    assert len(replay.requests_to("POST", MESSAGES_PATH)) == 1


def test_close_is_not_repeated(replay: ReplayServer, agent: TiledeskClient) -> None:
    path = f"/{PROJECT_ID}/requests/{REQUEST_ID}/close"
    replay.add("PUT", path, Reply.json(502, {}), load_transcript("19-close-request").reply)
    with pytest.raises(ServerError):
        agent.close_request(REQUEST_ID)
    assert len(replay.requests_to("PUT", path)) == 1


def test_retries_give_up_with_the_last_answer(replay: ReplayServer) -> None:
    replay.add("GET", MESSAGES_PATH, Reply.json(502, {"err": "bad gateway"}))
    client = TiledeskClient(
        replay.url, token=AGENT_TOKEN, project_id=PROJECT_ID, retries=2, backoff_factor=0.01
    )
    with pytest.raises(ServerError) as info:
        client.list_messages(REQUEST_ID)
    checked(info.value, "502", "bad gateway", "overloaded")
    assert len(replay.received) == 3  # the call and two retries


def test_500_is_not_retried(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.add("GET", MESSAGES_PATH, Reply.json(500, {"err": "error"}))
    with pytest.raises(ServerError) as info:
        agent.list_messages(REQUEST_ID)
    checked(info.value, "malformed ids")
    assert len(replay.received) == 1


def test_request_creation_failure_hint(replay: ReplayServer, visitor: TiledeskClient) -> None:
    body = {"success": False, "msg": "Error creating request", "err": {}}
    replay.add("POST", MESSAGES_PATH, Reply.json(500, body))
    with pytest.raises(ServerError) as info:
        visitor.send_message(REQUEST_ID, "hello")
    checked(info.value, "unique across all projects", "new_request_id()")


def test_429_honours_retry_after(
    replay: ReplayServer, agent: TiledeskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    class Clock:
        @staticmethod
        def sleep(seconds: float) -> None:
            slept.append(seconds)

        time = staticmethod(__import__("time").time)

    monkeypatch.setattr(urllib3.util.retry, "time", Clock)
    ok = load_transcript("07-get-messages-as-agent").reply
    replay.add("GET", MESSAGES_PATH, Reply.json(429, {}, headers={"Retry-After": "3"}), ok)
    agent.list_messages(REQUEST_ID)
    assert slept == [3.0]
    assert len(replay.received) == 2


def test_429_with_a_long_retry_after_fails_at_once(
    replay: ReplayServer, agent: TiledeskClient
) -> None:
    replay.add("GET", MESSAGES_PATH, Reply.json(429, {}, headers={"Retry-After": "120"}))
    with pytest.raises(RateLimitError) as info:
        agent.list_messages(REQUEST_ID)
    assert info.value.retry_after == 120.0
    checked(info.value, "429", "wait 120 s")
    assert len(replay.received) == 1
    assert session.MAX_RETRY_AFTER < 120


def test_429_on_send_is_not_retried(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.add("POST", MESSAGES_PATH, Reply.json(429, {}, headers={"Retry-After": "0"}))
    with pytest.raises(RateLimitError) as info:
        agent.send_message(REQUEST_ID, "hello")
    assert info.value.retry_after == 0.0
    assert len(replay.received) == 1


# --- not the API, or no answer -----------------------------------------------------------------


def test_a_web_page_instead_of_the_api(replay: ReplayServer) -> None:
    replay.add("POST", "/auth/signin", Reply.text(200, "<!doctype html><html><body>Dashboard"))
    with pytest.raises(UnexpectedResponseError) as info:
        TiledeskClient(replay.url).sign_in(AGENT_EMAIL, AGENT_PASSWORD)
    checked(info.value, "HTML page", "not the dashboard", "https://api.tiledesk.com/v3")


def test_json_of_the_wrong_shape(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.add("GET", MESSAGES_PATH, Reply.json(200, {"messages": []}))
    with pytest.raises(UnexpectedResponseError) as info:
        agent.list_messages(REQUEST_ID)
    checked(info.value, "JSON array was expected")


def test_redirect_is_reported_not_followed(replay: ReplayServer) -> None:
    replay.add(
        "POST",
        "/auth/signin",
        Reply(301, (("Location", "https://api.example.com/auth/signin"),), b""),
    )
    with pytest.raises(UnexpectedResponseError) as info:
        TiledeskClient(replay.url).sign_in(AGENT_EMAIL, AGENT_PASSWORD)
    checked(info.value, "301", "https://api.example.com/auth/signin", "https://")
    assert [r.method for r in replay.received] == ["POST"]


def test_sandbox_not_running() -> None:
    with ReplayServer() as server:
        url = server.url
    client = TiledeskClient(url, retries=0)  # the port is free again: nothing listens there
    with pytest.raises(TiledeskConnectionError) as info:
        client.sign_in(AGENT_EMAIL, AGENT_PASSWORD)
    assert info.value.status is None
    checked(info.value, "connection refused", "sandbox", "start_sandbox()", "make sandbox")


def test_read_timeout_on_send_warns_it_may_have_arrived(replay: ReplayServer) -> None:
    slow = Reply(200, (), b"{}", delay=1.0)
    replay.add("POST", MESSAGES_PATH, slow)
    client = TiledeskClient(replay.url, token=AGENT_TOKEN, project_id=PROJECT_ID, timeout=0.2)
    with pytest.raises(TiledeskTimeoutError) as info:
        client.send_message(REQUEST_ID, "hello")
    assert isinstance(info.value, TiledeskConnectionError)
    checked(info.value, "timeout", "list_messages()", "twice")
    assert len(replay.received) == 1


def test_read_timeout_on_get_is_retried(replay: ReplayServer) -> None:
    slow = Reply(200, (), b"[]", delay=1.0)
    replay.add("GET", MESSAGES_PATH, slow)
    client = TiledeskClient(
        replay.url,
        token=AGENT_TOKEN,
        project_id=PROJECT_ID,
        timeout=0.2,
        retries=1,
        backoff_factor=0,
    )
    with pytest.raises(TiledeskTimeoutError) as info:
        client.list_messages(REQUEST_ID)
    text = checked(info.value, "timeout")
    assert "twice" not in text
    assert len(replay.received) == 2


def test_failed_call_keeps_its_curl(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.replay("25-err-wrong-project-id-valid-objectid")
    with pytest.raises(NotFoundError) as info:
        agent.send_message(REQUEST_ID, "wrong project", project_id=OTHER_PROJECT)
    assert info.value.curl == agent.last_curl
    assert info.value.curl is not None and f"/{OTHER_PROJECT}/requests/" in info.value.curl
