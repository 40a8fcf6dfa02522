"""Every client operation against the real server's recorded answers, over real HTTP.

The replay server answers with what Tiledesk 2.19.16 answered (tests/transcripts/); the tests check
what the client sent and what it made of the answer.
"""

from __future__ import annotations

import base64
import re

import pytest
from support.client import (
    AGENT_EMAIL,
    AGENT_PASSWORD,
    AGENT_TOKEN,
    MESSAGES_PATH,
    PROJECT_ID,
    REQUEST_ID,
    SUBSCRIPTION_SECRET,
    VISITOR_TOKEN,
    assert_no_secret,
)
from support.replay_server import ReplayServer, Reply, load_transcript

from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.config import Config
from tiledesk_tutorial.models import Message, Request, RequestPage, Subscription

SUB_ID = "6b0690cd0ed30d16ca8ddcd0"


def test_sign_up_sends_the_account_and_returns_the_user(replay: ReplayServer) -> None:
    recorded = replay.replay("01-signup")
    client = TiledeskClient(replay.url)
    user = client.sign_up(
        recorded_email := "agent1795592393@example.com", AGENT_PASSWORD, "Ada", "Agent"
    )
    assert (user.id, user.email, user.full_name) == (
        "6b0690ca0ed30d16ca8ddbed",
        recorded_email,
        "Ada Agent",
    )
    sent = replay.received[-1]
    assert sent.json == {
        "email": recorded_email,
        "password": AGENT_PASSWORD,
        "firstname": "Ada",
        "lastname": "Agent",
    }
    assert "Authorization" not in sent.headers
    assert client.token is None  # sign-up gives no token
    assert '"password": "***"' in (client.last_curl or "")
    assert_no_secret(client.last_curl or "")
    assert recorded.path == "/auth/signup"


def test_sign_in_keeps_the_token_and_sends_it_verbatim(replay: ReplayServer) -> None:
    replay.replay("02-signin")
    replay.replay("03-create-project")
    client = TiledeskClient(replay.url)
    result = client.sign_in(AGENT_EMAIL, AGENT_PASSWORD)
    assert result.token == AGENT_TOKEN and client.token == AGENT_TOKEN
    assert result.claims["sub"] == "user" and not result.is_visitor
    assert client.user is not None and client.user.full_name == "Ada Agent"
    assert client.auth_scheme == "jwt"
    assert_no_secret(repr(result) + repr(client))

    project = client.create_project("Tutorial Project")
    assert (project.id, project.name, project.status) == (PROJECT_ID, "Tutorial Project", 100)
    sent = replay.requests_to("POST", "/projects")[0]
    assert sent.headers["Authorization"] == AGENT_TOKEN
    assert sent.json == {"name": "Tutorial Project"}
    assert "Authorization: JWT eyJh…(" in (client.last_curl or "")


def test_sign_in_uses_the_credentials_the_client_was_made_with(replay: ReplayServer) -> None:
    replay.replay("02-signin")
    config = Config(api_url=replay.url, email=AGENT_EMAIL, password=AGENT_PASSWORD)
    client = TiledeskClient.from_config(config)
    client.sign_in()
    assert replay.received[-1].json == {"email": AGENT_EMAIL, "password": AGENT_PASSWORD}
    assert client.token == AGENT_TOKEN
    assert AGENT_PASSWORD not in repr(client)


def test_visitor_signs_in_anonymously_and_starts_a_conversation(
    replay: ReplayServer, agent: TiledeskClient
) -> None:
    replay.replay("04-signin-anonymously")
    replay.replay("05-visitor-first-message")
    visitor = agent.as_visitor(PROJECT_ID, firstname="Visitor Vic")

    assert replay.received[0].json == {"id_project": PROJECT_ID, "firstname": "Visitor Vic"}
    assert "Authorization" not in replay.received[0].headers
    assert visitor.is_visitor and not agent.is_visitor
    assert visitor.token == VISITOR_TOKEN and agent.token == AGENT_TOKEN
    assert visitor.project_id == PROJECT_ID
    assert visitor.user is not None and visitor.user.full_name == "Visitor Vic"
    assert visitor._session is agent._session  # one connection pool for both

    message = visitor.send_message(REQUEST_ID, "Hello, I need help with my order")
    sent = replay.requests_to("POST", MESSAGES_PATH)[0]
    assert sent.headers["Authorization"] == VISITOR_TOKEN
    assert sent.json == {"text": "Hello, I need help with my order"}
    assert message.text == "Hello, I need help with my order"
    assert message.role == "visitor"
    assert message.request_id == REQUEST_ID
    assert message.status == 0
    assert message.sender_fullname == "Visitor Vic"  # trailing space of Tiledesk removed
    assert message.raw["senderFullname"] == "Visitor Vic "
    assert message.created_at is not None and message.created_at.year == 2026
    assert isinstance(message.request, Request)
    assert message.request.status_name == "ASSIGNED"
    assert message.request.first_text == "Hello, I need help with my order"
    assert message.request.lead_name == "Visitor Vic"
    assert message.request.participants == ["6b0690ca0ed30d16ca8ddbed"]


def test_send_message_passes_extra_fields_through(
    replay: ReplayServer, agent: TiledeskClient
) -> None:
    replay.replay("10-agent-reply")
    message = agent.send_message(
        REQUEST_ID,
        "Hi Vic",
        attributes={"order": 4242},
        sender_fullname="Ada from support",
        language="en",
    )
    assert replay.received[-1].json == {
        "text": "Hi Vic",
        "attributes": {"order": 4242},
        "senderFullname": "Ada from support",
        "language": "en",
    }
    assert message.role == "agent"
    assert message.sender == "6b0690ca0ed30d16ca8ddbed"


def test_send_message_without_text_is_allowed_for_other_types(
    replay: ReplayServer, visitor: TiledeskClient
) -> None:
    replay.replay("10-agent-reply")
    image = {"src": "https://example.com/a.png", "width": 10, "height": 10}
    visitor.send_message(REQUEST_ID, type="image", metadata=image)
    assert replay.received[-1].json == {"type": "image", "metadata": image}


def test_list_messages_returns_them_in_order(replay: ReplayServer, visitor: TiledeskClient) -> None:
    replay.replay("06-get-messages-as-visitor")
    messages = visitor.list_messages(REQUEST_ID)
    assert [type(m) for m in messages] == [Message]
    assert messages[0].text == "Hello, I need help with my order"
    assert messages[0].role == "visitor"  # a UUID sender, no embedded request
    assert replay.received[-1].headers["Authorization"] == VISITOR_TOKEN


def test_request_id_without_project_id_is_accepted(
    replay: ReplayServer, visitor: TiledeskClient
) -> None:
    recorded = replay.replay("16-visitor-message-short-request-id")
    rid = recorded.path.split("/")[3]
    message = visitor.send_message(rid, "request id without project id")
    assert message.request_id == rid == "support-group-bc09bf93-217c-4402-8694-6ae7f8b5bf34"


def test_get_request_as_agent(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.replay("08-get-request-as-agent")
    request = agent.get_request(REQUEST_ID)
    assert request.request_id == REQUEST_ID
    assert request.id == "6b0690cc0ed30d16ca8ddc59"
    assert (request.status, request.status_name, request.is_closed) == (200, "ASSIGNED", False)
    assert request.ticket_id == 1
    assert request.department == "Default Department"
    assert request.lead_id == "cfd3818e-8374-47be-a9b1-340b59697934"


def test_list_requests_sends_paging_and_status(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.replay("17-list-requests-as-agent")
    page = agent.list_requests(status=["assigned", 100], limit=10, sort="createdAt")
    assert isinstance(page, RequestPage)
    assert (page.per_page, page.count, len(page)) == (40, 2, 2)
    assert not page.has_more
    assert {r.request_id for r in page} == {
        "support-group-bc09bf93-217c-4402-8694-6ae7f8b5bf34",
        REQUEST_ID,
    }
    assert replay.received[-1].query == {
        "page": "0",
        "limit": "10",
        "status": "200,100",
        "sort": "createdAt",
    }
    assert "status=200,100" in (agent.last_curl or "")


@pytest.mark.parametrize(
    ("status", "sent"),
    [(None, None), ("all", "all"), ("closed", "1000"), (1000, "1000"), ("CLOSED", "1000")],
)
def test_list_requests_status_forms(
    replay: ReplayServer, agent: TiledeskClient, status: object, sent: str | None
) -> None:
    replay.replay("17-list-requests-as-agent")
    agent.list_requests(status=status)  # type: ignore[arg-type]
    assert replay.received[-1].query.get("status") == sent


def test_iter_requests_walks_every_page(replay: ReplayServer, agent: TiledeskClient) -> None:
    listing = load_transcript("17-list-requests-as-agent").response_json
    first, second = listing["requests"]
    replay.add(
        "GET",
        f"/{PROJECT_ID}/requests",
        Reply.json(200, {"perPage": 1, "count": 2, "requests": [first]}),
        Reply.json(200, {"perPage": 1, "count": 2, "requests": [second]}),
    )
    ids = [r.request_id for r in agent.iter_requests(limit=1, status="all")]
    assert ids == [first["request_id"], second["request_id"]]
    assert [r.query["page"] for r in replay.received] == ["0", "1"]


def test_list_my_requests_and_close_as_visitor(
    replay: ReplayServer, visitor: TiledeskClient
) -> None:
    closed = load_transcript("19-close-request").response_json
    replay.add(
        "GET",
        f"/{PROJECT_ID}/requests/me",
        Reply.json(200, {"perPage": 40, "count": 1, "requests": [closed]}),
    )
    replay.add("PUT", f"/{PROJECT_ID}/requests/{REQUEST_ID}/closeg", Reply.json(200, closed))
    mine = visitor.list_my_requests(status="all")
    assert [r.request_id for r in mine] == [REQUEST_ID]
    assert replay.received[-1].query == {"page": "0", "limit": "40", "status": "all"}
    result = visitor.close_request_as_visitor(REQUEST_ID)
    assert result.is_closed
    assert replay.received[-1].method == "PUT"
    assert replay.received[-1].headers["Authorization"] == VISITOR_TOKEN


def test_close_request_as_agent(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.replay("19-close-request")
    request = agent.close_request(REQUEST_ID)
    assert (request.status, request.status_name, request.is_closed) == (1000, "CLOSED", True)
    assert request.closed_at is not None
    assert request.closed_by == "6b0690ca0ed30d16ca8ddbed"
    assert replay.received[-1].method == "PUT" and replay.received[-1].body == b""
    agent.close_request(REQUEST_ID, force=True)
    assert replay.received[-1].json == {"force": True}


def test_projects_list_and_get(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.replay("18-list-projects")
    project_json = load_transcript("03-create-project").response_json
    replay.add("GET", f"/projects/{PROJECT_ID}", Reply.json(200, project_json))
    memberships = agent.list_projects()
    assert [(m.role, m.project.id, m.project.name) for m in memberships] == [
        ("owner", PROJECT_ID, "Tutorial Project")
    ]
    assert memberships[0].user_id == "6b0690ca0ed30d16ca8ddbed"
    assert agent.get_project().name == "Tutorial Project"


def test_subscription_lifecycle(replay: ReplayServer, agent: TiledeskClient) -> None:
    replay.replay("11-subscribe-webhook")
    replay.replay("14-list-subscriptions")
    listed = load_transcript("14-list-subscriptions").response_json[0]
    path = f"/{PROJECT_ID}/subscriptions/{SUB_ID}"
    replay.add("GET", path, Reply.json(200, listed))
    replay.add("DELETE", path, Reply.json(200, listed), Reply.json(200, None))

    sub = agent.create_subscription("http://127.0.0.1:8099/hook")
    assert replay.received[-1].json == {
        "event": "message.create",
        "target": "http://127.0.0.1:8099/hook",
    }
    assert (sub.id, sub.event, sub.secret) == (SUB_ID, "message.create", SUBSCRIPTION_SECRET)
    assert_no_secret(repr(sub))

    assert [s.id for s in agent.list_subscriptions()] == [SUB_ID]
    assert agent.list_subscriptions()[0].secret is None  # never listed again
    assert agent.get_subscription(SUB_ID).target == "http://127.0.0.1:8099/hook"
    deleted = agent.delete_subscription(SUB_ID)
    assert isinstance(deleted, Subscription) and deleted.id == SUB_ID
    assert agent.delete_subscription(SUB_ID) is None  # Tiledesk answers null for a missing id


def test_subscription_secret_from_header_when_body_lacks_it(
    replay: ReplayServer, agent: TiledeskClient
) -> None:
    body = load_transcript("11-subscribe-webhook").response_json
    del body["secret"]
    replay.add(
        "POST",
        f"/{PROJECT_ID}/subscriptions",
        Reply.json(200, body, headers={"x-hook-secret": SUBSCRIPTION_SECRET}),
    )
    sub = agent.create_subscription("https://example.com/hook", "request.close")
    assert sub.secret == SUBSCRIPTION_SECRET


def test_subscription_history(replay: ReplayServer, agent: TiledeskClient) -> None:
    entry = {
        "_id": "6b0690cd0ed30d16ca8ddd00",
        "event": "message.create",
        "target": "http://127.0.0.1:8099/hook",
        "response": '{"statusCode":200,"request":{"headers":{"x-hook-secret":"s3cr3t-s3cr3t"}}}',
        "body": '{"ok":true}',
        "jsonRequest": '{"hook":{},"payload":{"text":"hi"}}',
        "err": None,
        "id_project": PROJECT_ID,
        "createdAt": "2026-11-25T07:39:57.900Z",
    }
    replay.add("GET", f"/{PROJECT_ID}/subscriptions/history", Reply.json(200, [entry]))
    (log,) = agent.subscription_history(page=2)
    assert replay.received[-1].query == {"page": "2"}
    assert (log.event, log.status_code, log.ok, log.error) == ("message.create", 200, True, None)
    assert log.request_body == {"hook": {}, "payload": {"text": "hi"}}
    assert log.response_body == {"ok": True}
    assert "s3cr3t-s3cr3t" not in repr(log)


def test_base_url_with_version_prefix(replay: ReplayServer) -> None:
    recorded = load_transcript("02-signin")
    replay.add("POST", "/v3/auth/signin", recorded.reply)
    client = TiledeskClient(replay.url + "/v3/")
    client.sign_in(AGENT_EMAIL, AGENT_PASSWORD)
    assert client.base_url == replay.url + "/v3"
    assert replay.received[-1].path == "/v3/auth/signin"


def test_token_forms_are_normalised(replay: ReplayServer) -> None:
    replay.replay("06-get-messages-as-visitor")
    jwt_only = VISITOR_TOKEN.split(" ", 1)[1]
    for form in (VISITOR_TOKEN, jwt_only, "jwt " + jwt_only, f"  JWT {jwt_only}\n"):
        client = TiledeskClient(replay.url, token=form, project_id=PROJECT_ID)
        client.list_messages(REQUEST_ID)
        assert replay.received[-1].headers["Authorization"] == VISITOR_TOKEN


def test_basic_auth_like_the_tutorials_webhook_section(replay: ReplayServer) -> None:
    replay.replay("14-list-subscriptions")
    client = TiledeskClient(replay.url, project_id=PROJECT_ID)
    client.use_basic_auth(AGENT_EMAIL, AGENT_PASSWORD)
    assert client.auth_scheme == "basic"
    client.list_subscriptions()
    expected = base64.b64encode(f"{AGENT_EMAIL}:{AGENT_PASSWORD}".encode()).decode()
    assert replay.received[-1].headers["Authorization"] == f"Basic {expected}"
    assert f"-u '{AGENT_EMAIL}:***'" in (client.last_curl or "")
    assert_no_secret((client.last_curl or "") + repr(client), expected)


def test_show_curl_prints_each_call(
    replay: ReplayServer, capsys: pytest.CaptureFixture[str]
) -> None:
    replay.replay("04-signin-anonymously")
    replay.replay("05-visitor-first-message")
    client = TiledeskClient(replay.url, show_curl=True)
    visitor = client.as_visitor(PROJECT_ID, firstname="Visitor Vic")
    visitor.send_message(REQUEST_ID, "Hello, I need help with my order")
    out = capsys.readouterr().out
    assert "curl -X POST " + replay.url + "/auth/signinAnonymously" in out
    assert f"curl -X POST {replay.url}{MESSAGES_PATH}" in out
    assert '-d \'{"text": "Hello, I need help with my order"}\'' in out
    assert_no_secret(out)


def test_cookies_from_the_server_are_not_sent_back(
    replay: ReplayServer, agent: TiledeskClient
) -> None:
    replay.replay("14-list-subscriptions")  # the recording sets a connect.sid cookie
    agent.list_subscriptions()
    agent.list_subscriptions()
    assert all("Cookie" not in r.headers for r in replay.received)


def test_logs_show_calls_but_no_secrets(
    replay: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    replay.replay("02-signin")
    replay.replay("14-list-subscriptions")
    with caplog.at_level("DEBUG", logger="tiledesk_tutorial"):
        client = TiledeskClient(replay.url, project_id=PROJECT_ID)
        client.sign_in(AGENT_EMAIL, AGENT_PASSWORD)
        client.list_subscriptions()
    text = caplog.text
    assert "/auth/signin" in text and "/subscriptions" in text
    assert_no_secret(text)


def test_new_request_id_format() -> None:
    rid = new_request_id(PROJECT_ID)
    assert re.fullmatch(rf"support-group-{PROJECT_ID}-[0-9a-f]{{32}}", rid)
    assert rid != new_request_id(PROJECT_ID)
    client = TiledeskClient("http://127.0.0.1:9", project_id=PROJECT_ID)
    assert client.new_request_id().startswith(f"support-group-{PROJECT_ID}-")
