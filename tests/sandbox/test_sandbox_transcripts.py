"""The sandbox answers the tutorial flow as the real Tiledesk 2.19.16 did in the recordings.

Each test replays one recorded exchange (tests/transcripts/) against the sandbox, over real HTTP,
and compares the status, the body's structure (every key, recursively, and its JSON type) and,
where the recording's values do not depend on ids or times, the body itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from support.replay_server import load_transcript
from support.sandbox import Receiver, World, make_world, shape

from tiledesk_tutorial.sandbox import SandboxHandle


def recorded(name: str) -> Any:
    """The recorded response body of transcript ``name``."""
    return load_transcript(name).response_json


def recorded_status(name: str) -> int:
    """The recorded response status of transcript ``name``."""
    return load_transcript(name).reply.status


def claims(token: str) -> dict[str, Any]:
    """The claims of a token (``JWT `` prefix or not), without verifying it."""
    return jwt.decode(token.removeprefix("JWT "), options={"verify_signature": False})


def deliveries_recorded() -> list[dict[str, Any]]:
    """The bodies of the webhook deliveries recorded in transcript 15."""
    text = load_transcript.__globals__["TRANSCRIPTS"].joinpath("15-webhook-deliveries.txt")
    parts = re.split(r"^=== .*$", text.read_text(), flags=re.M)[1:]
    return [json.loads(part.split("\n\n", 1)[1]) for part in parts]


@pytest.fixture
def world(sandbox: SandboxHandle) -> Iterator[World]:
    """The recorded cast on a fresh sandbox."""
    w = make_world(sandbox.url)
    yield w
    w.api.close()


def test_signup_answers_the_recorded_shape(sandbox: SandboxHandle) -> None:
    from support.sandbox import Api

    api = Api(sandbox.url)
    body = {"email": "Ada@Example.com", "password": "Passw0rd!123", "firstname": "Ada"}
    response = api.post("/auth/signup", json={**body, "lastname": "Agent"})
    assert response.status_code == 200
    answer = response.json()
    assert list(answer) == list(recorded("01-signup"))
    assert list(answer["user"]) == list(recorded("01-signup")["user"])
    assert answer["user"]["email"] == "ada@example.com"  # lower-cased, as on Tiledesk
    assert "password" not in json.dumps(answer)
    api.close()


def test_signin_token_is_jwt_prefixed_with_the_recorded_claims(world: World) -> None:
    response = world.api.post(
        "/auth/signin", json={"email": world.email.upper(), "password": "Passw0rd!123"}
    )
    answer = response.json()
    assert response.status_code == 200
    assert list(answer) == list(recorded("02-signin"))
    assert list(answer["user"]) == list(recorded("02-signin")["user"])
    assert answer["token"].startswith("JWT ")
    assert list(claims(answer["token"])) == list(claims(recorded("02-signin")["token"]))
    assert jwt.get_unverified_header(answer["token"][4:]) == {"alg": "HS256", "typ": "JWT"}
    assert claims(answer["token"])["sub"] == "user"
    assert "exp" not in claims(answer["token"])


def test_create_project_answers_the_recorded_project(world: World) -> None:
    response = world.api.post(
        "/projects", json={"name": "Tutorial Project"}, token=world.agent_token
    )
    assert response.status_code == 200
    assert shape(response.json()) == shape(recorded("03-create-project"))
    assert list(response.json()) == list(recorded("03-create-project"))
    assert response.json()["createdBy"] == world.agent_id
    assert re.fullmatch(r"[0-9a-f]{24}", response.json()["_id"])


def test_anonymous_signin_answers_a_guest_token(world: World) -> None:
    response = world.api.post(
        "/auth/signinAnonymously", json={"id_project": world.project_id, "firstname": "Visitor Vic"}
    )
    answer = response.json()
    assert response.status_code == 200
    assert shape(answer) == shape(recorded("04-signin-anonymously"))
    assert answer["user"]["fullName"] == "Visitor Vic "  # the real server's trailing space
    assert re.fullmatch(r"[0-9a-f-]{36}", answer["user"]["_id"])
    assert list(claims(answer["token"])) == list(claims(recorded("04-signin-anonymously")["token"]))
    assert claims(answer["token"])["sub"] == "guest"


def test_anonymous_signin_without_firstname_is_guest_hash(world: World) -> None:
    answer = world.api.post("/auth/signinAnonymously", json={"id_project": world.project_id}).json()
    assert answer["user"]["firstname"] == "guest#" + answer["user"]["_id"][:4]


def test_first_message_creates_and_assigns_the_request(world: World) -> None:
    rid = world.request_id()
    answer = world.send(rid, "Hello, I need help with my order")
    expected = recorded("05-visitor-first-message")
    assert shape(answer) == shape(expected)
    assert list(answer) == list(expected)
    assert list(answer["request"]) == list(expected["request"])
    assert answer["status"] == 0
    assert answer["sender"] == world.visitor_id
    assert answer["recipient"] == rid
    request = answer["request"]
    assert request["status"] == 200
    assert request["participants"] == [world.agent_id]
    assert request["requester"]["role"] == "guest"
    assert request["lead"]["lead_id"] == world.visitor_id
    assert request["ticket_id"] == 1
    assert request["participatingAgents"][0]["_id"] == world.agent_id


def test_messages_list_is_a_bare_array_oldest_first(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "first")
    world.send(rid, "second", as_agent=True)
    for token in (world.visitor_token, world.agent_token):
        response = world.api.get(world.messages_path(rid), token=token)
        assert response.status_code == 200
        answer = response.json()
        assert [m["text"] for m in answer] == ["first", "second"]
        assert shape(answer[:1]) == shape(recorded("06-get-messages-as-visitor"))
        assert list(answer[0]) == list(recorded("07-get-messages-as-agent")[0])


def test_unknown_conversation_has_no_messages(world: World) -> None:
    response = world.api.get(world.messages_path(world.request_id()), token=world.agent_token)
    assert (response.status_code, response.json()) == (200, [])


def test_agent_gets_the_request_a_visitor_is_refused(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "Hello")
    path = f"/{world.project_id}/requests/{rid}"
    as_agent = world.api.get(path, token=world.agent_token)
    assert as_agent.status_code == 200
    assert shape(as_agent.json()) == shape(recorded("08-get-request-as-agent"))
    assert list(as_agent.json()) == list(recorded("08-get-request-as-agent"))
    as_visitor = world.api.get(path, token=world.visitor_token)
    assert as_visitor.status_code == recorded_status("09-get-request-as-visitor") == 403
    assert as_visitor.json() == recorded("09-get-request-as-visitor")


def test_agent_reply_embeds_the_request(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "Hello")
    answer = world.send(rid, "Hi Vic, I am Ada.", as_agent=True)
    assert shape(answer) == shape(recorded("10-agent-reply"))
    assert answer["senderFullname"] == "Ada Agent"
    assert answer["sender"] == world.agent_id


def test_subscription_returns_its_secret_once(world: World) -> None:
    response = world.api.post(
        f"/{world.project_id}/subscriptions",
        json={"event": "message.create", "target": "http://127.0.0.1:8099/hook"},
        token=world.agent_token,
    )
    assert response.status_code == 200
    answer = response.json()
    assert list(answer) == list(recorded("11-subscribe-webhook"))
    assert response.headers["x-hook-secret"] == answer["secret"]
    listed = world.api.get(f"/{world.project_id}/subscriptions", token=world.agent_token).json()
    assert shape(listed) == shape(recorded("14-list-subscriptions"))
    assert list(listed[0]) == list(recorded("14-list-subscriptions")[0])
    assert answer["secret"] not in json.dumps(listed)


def test_each_subscription_gets_its_own_secret(world: World) -> None:
    first = world.subscribe("http://127.0.0.1:8099/a")
    second = world.subscribe("http://127.0.0.1:8099/b")
    assert first["secret"] != second["secret"]
    again = world.subscribe("http://127.0.0.1:8099/a")
    assert (again["_id"], again["secret"]) == (first["_id"], first["secret"])


def test_visitor_message_after_reply_carries_last_message(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "Hello")
    world.send(rid, "Hi, I am Ada", as_agent=True)
    answer = world.send(rid, "Order number is 4242")
    assert shape(answer) == shape(recorded("12-visitor-message-after-subscribe"))
    assert answer["request"]["attributes"]["last_message"]["text"] == "Hi, I am Ada"


def test_short_request_id_is_accepted(world: World) -> None:
    answer = world.send("support-group-bc09bf93-217c-4402-8694-6ae7f8b5bf34", "short id")
    assert shape(answer) == shape(recorded("16-visitor-message-short-request-id"))


def test_request_list_wraps_requests(world: World) -> None:
    first, second = world.request_id(), world.request_id()
    world.send(first, "one")
    world.send(second, "two")
    response = world.api.get(f"/{world.project_id}/requests", token=world.agent_token)
    answer = response.json()
    assert response.status_code == 200
    assert shape(answer) == shape(recorded("17-list-requests-as-agent"))
    assert (answer["perPage"], answer["count"]) == (40, 2)
    assert [r["request_id"] for r in answer["requests"]] == [second, first]  # newest first


def test_project_list_is_memberships_with_the_project(world: World) -> None:
    response = world.api.get("/projects", token=world.agent_token)
    answer = response.json()
    assert response.status_code == 200
    assert shape(answer) == shape(recorded("18-list-projects"))
    assert answer[0]["role"] == "owner"
    assert answer[0]["id_project"]["_id"] == world.project_id


def test_close_answers_the_closed_request(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "Hello, I need help with my order")
    world.send(rid, "Hi Vic, I am Ada.", as_agent=True)
    response = world.api.put(f"/{world.project_id}/requests/{rid}/close", token=world.agent_token)
    assert response.status_code == 200
    answer = response.json()
    assert shape(answer) == shape(recorded("19-close-request"))
    assert answer["status"] == 1000
    assert answer["closed_by"] == world.agent_id
    lines = answer["transcript"].split("\r\n")
    assert re.fullmatch(r"\d\d/\d\d/\d{4}, \d\d:\d\d:\d\d Visitor Vic : Hello, I need .*", lines[0])
    assert lines[1].endswith("Ada Agent: Hi Vic, I am Ada.")
    messages = world.api.get(world.messages_path(rid), token=world.agent_token).json()
    assert messages[-1]["text"] == "Chat closed"
    assert messages[-1]["sender"] == "system"
    assert messages[-1]["attributes"]["subtype"] == "info/support"
    listed = world.api.get(f"/{world.project_id}/requests", token=world.agent_token).json()
    assert listed["count"] == 0  # closed requests are hidden by default
    everything = world.api.get(
        f"/{world.project_id}/requests", params={"status": "all"}, token=world.agent_token
    ).json()
    assert everything["count"] == 1


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("20-err-signin-bad-password", {"password": "wrong-password"}),
        ("21-err-signin-unknown-email", {"email": "nobody@example.com", "password": "whatever"}),
    ],
)
def test_signin_errors(world: World, name: str, body: dict[str, str]) -> None:
    response = world.api.post("/auth/signin", json={"email": world.email, **body})
    assert response.status_code == recorded_status(name) == 401
    assert response.json() == recorded(name)


@pytest.mark.parametrize(
    ("name", "method", "path", "token"),
    [
        ("22-err-missing-token-messages", "POST", "{messages}", None),
        ("23-err-missing-token-create-project", "POST", "/projects", None),
        ("24-err-garbage-token", "GET", "{messages}", "JWT garbage"),
    ],
)
def test_unauthenticated_calls_get_plain_text_401(
    world: World, name: str, method: str, path: str, token: str | None
) -> None:
    path = path.format(messages=world.messages_path(world.request_id()))
    response = world.api.call(method, path, json={"text": "no token"}, token=token)
    assert response.status_code == recorded_status(name) == 401
    assert response.text == load_transcript(name).reply.body.decode().strip() == "Unauthorized"
    assert "Content-Type" not in response.headers
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Users"'
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_project_id_errors_come_before_authentication(world: World) -> None:
    rid = world.request_id()
    unknown = world.api.post(
        f"/5f0000000000000000000000/requests/{rid}/messages", json={"text": "wrong project"}
    )
    assert unknown.status_code == recorded_status("25-err-wrong-project-id-valid-objectid")
    assert unknown.json() == recorded("25-err-wrong-project-id-valid-objectid")
    malformed = world.api.post(f"/not-a-project/requests/{rid}/messages", json={"text": "x"})
    assert malformed.status_code == 400
    assert malformed.json() == recorded("26-err-wrong-project-id-not-objectid")
    with_token = world.api.get(
        f"/5f0000000000000000000000/requests/{rid}/messages", token=world.visitor_token
    )
    assert with_token.json() == recorded("33-err-visitor-token-other-project")


@pytest.mark.parametrize(
    ("name", "body"), [("27-err-empty-text", {"text": ""}), ("28-err-missing-text", {})]
)
def test_empty_or_missing_text_is_accepted_as_recorded(
    world: World, name: str, body: dict[str, str]
) -> None:
    rid = world.request_id()
    world.send(rid, "request id without project id")
    response = world.api.post(world.messages_path(rid), json=body, token=world.visitor_token)
    assert response.status_code == recorded_status(name) == 200
    answer, expected = response.json(), recorded(name)
    # Whether the request already has attributes.last_message depends on what came before.
    answer["request"].pop("attributes", None)
    expected["request"].pop("attributes", None)
    assert shape(answer) == shape(expected)
    assert ("text" in response.json()) == ("text" in body)


def test_duplicate_signup_and_missing_password(world: World) -> None:
    duplicate = world.api.post(
        "/auth/signup",
        json={"email": world.email, "password": "x", "firstname": "Ada", "lastname": "Agent"},
    )
    assert duplicate.status_code == recorded_status("29-err-signup-duplicate-email") == 403
    assert duplicate.json() == recorded("29-err-signup-duplicate-email")
    nopass = world.api.post(
        "/auth/signup", json={"email": "nopass@example.com", "firstname": "B", "lastname": "C"}
    )
    assert nopass.status_code == recorded_status("30-err-signup-missing-password") == 200
    assert nopass.json() == recorded("30-err-signup-missing-password")


def test_signup_without_phone_works_on_a_fresh_database(sandbox: SandboxHandle) -> None:
    """Transcript 00: the real server refuses this on a fresh database; the sandbox does not."""
    from support.sandbox import Api

    api = Api(sandbox.url)
    for n in range(2):
        response = api.post(
            "/auth/signup",
            json={
                "email": f"p{n}@example.com",
                "password": "pw",
                "firstname": "A",
                "lastname": "B",
            },
        )
        assert response.status_code == 200 and response.json()["success"], response.text
    api.close()


def test_visitor_cannot_subscribe(world: World) -> None:
    response = world.api.post(
        f"/{world.project_id}/subscriptions",
        json={"event": "message.create", "target": "http://127.0.0.1:8099/hook"},
        token=world.visitor_token,
    )
    assert response.status_code == recorded_status("31-err-visitor-token-subscriptions")
    assert response.json() == recorded("31-err-visitor-token-subscriptions")


def test_anonymous_signin_on_unknown_project_still_answers_a_token(world: World) -> None:
    response = world.api.post(
        "/auth/signinAnonymously", json={"id_project": "5f0000000000000000000000", "firstname": "X"}
    )
    assert response.status_code == 200
    assert shape(response.json()) == shape(recorded("32-anon-signin-unknown-project"))


def test_deliveries_have_the_recorded_headers_body_and_token(world: World) -> None:
    receiver = Receiver()
    try:
        subscription = world.subscribe(receiver.url)
        rid = world.request_id()
        world.send(rid, "Hello")
        world.send(rid, "Hi, I am Ada", as_agent=True)
        world.send(rid, "Order number is 4242")
        deliveries = receiver.wait(3)
    finally:
        receiver.stop()
    recorded_bodies = deliveries_recorded()
    # Up to four deliveries per target are in flight at once (as Tiledesk, which sends each
    # webhook on its own), so they may arrive in any order: each message once, whatever the order.
    by_text = {d.body["payload"]["text"]: d for d in deliveries}
    assert sorted(d.body["payload"]["text"] for d in deliveries) == [
        "Hello",
        "Hi, I am Ada",
        "Order number is 4242",
    ]
    delivery = by_text["Order number is 4242"]
    assert list(delivery.body) == ["timestamp", "payload", "hook", "token"]
    assert shape(delivery.body) == shape(recorded_bodies[0])
    headers = {k.lower(): v for k, v in delivery.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-hook-secret"] == subscription["secret"]
    assert headers["user-agent"] == "tiledesk-webhooks"
    assert headers["accept"] == "application/json"
    assert headers["origin"].startswith("http://127.0.0.1:")
    hook = delivery.body["hook"]
    assert hook == {k: v for k, v in subscription.items() if k not in ("secret", "global")}
    token_claims = jwt.decode(
        delivery.body["token"],
        subscription["secret"],
        algorithms=["HS256"],
        audience=f"https://tiledesk.com/subscriptions/{subscription['_id']}",
        issuer="https://tiledesk.com",
    )
    assert token_claims["sub"] == "subscription"
    assert list(token_claims) == list(claims(recorded_bodies[0]["token"]))
    assert delivery.body["payload"]["request"]["lead"]["lead_id"] == world.visitor_id
    assert "id" not in delivery.body["payload"]["request"]  # lean, as recorded: no virtuals
