"""Who may call what: every protected sandbox route against every kind of caller (contract §2.7)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import jwt
import pytest
from support.sandbox import PASSWORD, World, make_world

from tiledesk_tutorial.sandbox import SandboxHandle

pytestmark = pytest.mark.security

NOT_MEMBER = {"success": False, "msg": "you dont belong to the project."}
ROLE_TOO_LOW = {"success": False, "msg": "you dont have the required role."}


@pytest.fixture(scope="module")
def worlds(sandbox_session: SandboxHandle) -> Iterator[tuple[World, World, str]]:
    """Two projects with their agents and visitors, and a conversation in the first one."""
    first, second = make_world(sandbox_session.url), make_world(sandbox_session.url)
    rid = first.request_id()
    first.send(rid, "hello")
    yield first, second, rid
    first.api.close()
    second.api.close()


def routes(world: World, rid: str) -> list[tuple[str, str, str, dict | None]]:
    """(name, method, path, body) of every project route, with the role each needs."""
    pid = world.project_id
    return [
        ("send message", "POST", f"/{pid}/requests/{rid}/messages", {"text": "hi"}),
        ("list messages", "GET", f"/{pid}/requests/{rid}/messages", None),
        ("my requests", "GET", f"/{pid}/requests/me", None),
        ("list requests", "GET", f"/{pid}/requests", None),
        ("get request", "GET", f"/{pid}/requests/{rid}", None),
        ("close", "PUT", f"/{pid}/requests/{rid}/close", None),
        ("create subscription", "POST", f"/{pid}/subscriptions", {"event": "x", "target": "http://127.0.0.1:9/x"}),
        ("list subscriptions", "GET", f"/{pid}/subscriptions", None),
        ("history", "GET", f"/{pid}/subscriptions/history", None),
        ("get subscription", "GET", f"/{pid}/subscriptions/{'0' * 24}", None),
        ("delete subscription", "DELETE", f"/{pid}/subscriptions/{'0' * 24}", None),
    ]  # fmt: skip


VISITOR_ALLOWED = {"send message", "list messages", "my requests"}


def bad_tokens(world: World) -> dict[str, str | None]:
    """Credentials that must all be refused with Tiledesk's plain-text 401."""
    bare = world.agent_token.removeprefix("JWT ")
    claims = jwt.decode(bare, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-sandbox-key-but-32-bytes-long", algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    wrong_password = base64.b64encode(f"{world.email}:wrong".encode()).decode()
    return {
        "no token": None,
        "garbage": "JWT garbage",
        "Bearer": "Bearer " + bare,
        "raw JWT without scheme": bare,
        "forged signature": "JWT " + forged,
        "alg none": "JWT " + unsigned,
        "wrong Basic password": "Basic " + wrong_password,
    }


BAD_CREDENTIALS = (
    "no token", "garbage", "Bearer", "raw JWT without scheme", "forged signature", "alg none",
    "wrong Basic password",
)  # fmt: skip


@pytest.mark.parametrize("credential", BAD_CREDENTIALS)
def test_bad_credentials_get_401_on_every_route(worlds, credential: str) -> None:
    first, _, rid = worlds
    token = bad_tokens(first)[credential]
    for name, method, path, body in routes(first, rid):
        response = first.api.call(method, path, json=body, token=token)
        assert response.status_code == 401, (name, response.text)
        assert response.text == "Unauthorized", name
    for method, path in (("POST", "/projects"), ("GET", "/projects")):
        assert first.api.call(method, path, json={"name": "x"}, token=token).status_code == 401


def test_visitor_may_only_use_visitor_routes(worlds) -> None:
    first, _, rid = worlds
    for name, method, path, body in routes(first, rid):
        response = first.api.call(method, path, json=body, token=first.visitor_token)
        if name in VISITOR_ALLOWED:
            assert response.status_code == 200, (name, response.text)
        else:
            assert (response.status_code, response.json()) == (403, ROLE_TOO_LOW), name


def test_visitor_of_another_project_does_not_belong(worlds) -> None:
    first, second, rid = worlds
    for name, method, path, body in routes(first, rid):
        response = first.api.call(method, path, json=body, token=second.visitor_token)
        assert (response.status_code, response.json()) == (403, NOT_MEMBER), name


def test_agent_of_another_project_does_not_belong(worlds) -> None:
    first, second, rid = worlds
    for name, method, path, body in routes(first, rid):
        if name == "close":
            continue  # closing here would change the shared conversation for later tests
        response = first.api.call(method, path, json=body, token=second.agent_token)
        assert (response.status_code, response.json()) == (403, NOT_MEMBER), name
    response = first.api.get(f"/projects/{first.project_id}", token=second.agent_token)
    assert (response.status_code, response.json()) == (403, NOT_MEMBER)


def test_owner_may_use_every_route_with_jwt_or_basic(worlds) -> None:
    first, _, rid = worlds
    for credentials in ({"token": first.agent_token}, {"basic": (first.email, PASSWORD)}):
        for name, method, path, body in routes(first, rid):
            if name == "close":
                continue
            response = first.api.call(method, path, json=body, **credentials)
            # Passing every check, an unknown subscription id is then simply not found.
            expected = 404 if name == "get subscription" else 200
            assert response.status_code == expected, (name, response.text)


def test_visitor_cannot_read_or_write_someone_elses_conversation(worlds) -> None:
    """Tiledesk lets any member use any conversation; the sandbox keeps visitors to their own."""
    first, _, rid = worlds
    other_token, _ = first.new_visitor("Eve")
    path = first.messages_path(rid)
    for method, body in (("GET", None), ("POST", {"text": "I am not Vic"})):
        response = first.api.call(method, path, json=body, token=other_token)
        assert response.status_code == 403, response.text
    closeg = first.api.put(f"/{first.project_id}/requests/{rid}/closeg", token=other_token)
    assert closeg.status_code == 403
    own = first.api.get(f"/{first.project_id}/requests/me", token=other_token).json()
    assert own["count"] == 0


def test_visitor_cannot_speak_for_someone_else(worlds) -> None:
    first, _, rid = worlds
    response = first.api.post(
        first.messages_path(rid),
        json={"text": "I am the agent", "sender": first.agent_id},
        token=first.visitor_token,
    )
    assert response.status_code == 403


def test_header_with_two_spaces_is_refused_like_tiledesk(worlds) -> None:
    first, _, rid = worlds
    doubled = first.agent_token.replace("JWT ", "JWT  ")
    response = first.api.get(first.messages_path(rid), token=doubled)
    assert (response.status_code, response.json()) == (
        403,
        {"success": False, "msg": "Unauthorized."},
    )


def test_lowercase_jwt_scheme_is_accepted(worlds) -> None:
    first, _, rid = worlds
    lower = first.agent_token.replace("JWT ", "jwt ")
    assert first.api.get(first.messages_path(rid), token=lower).status_code == 200


def test_webhook_token_works_only_on_its_own_project(worlds) -> None:
    """A delivery's token is usable as ``JWT <token>`` on routes that admit subscriptions."""
    first, second, _ = worlds
    subscription = first.subscribe("http://127.0.0.1:9/hook-token")
    hook = {k: v for k, v in subscription.items() if k not in ("secret", "global")}
    audience = f"https://tiledesk.com/subscriptions/{hook['_id']}"
    claims = {**hook, "aud": audience, "iss": "https://tiledesk.com", "sub": "subscription"}
    token = jwt.encode(claims, subscription["secret"], algorithm="HS256")
    own = first.api.get(f"/{first.project_id}/requests", token="JWT " + token)
    assert own.status_code == 200
    assert (
        first.api.get(f"/{first.project_id}/subscriptions", token="JWT " + token).status_code == 403
    )
    other = first.api.get(f"/{second.project_id}/requests", token="JWT " + token)
    assert (other.status_code, other.json()) == (403, NOT_MEMBER)
    first.api.delete(f"/{first.project_id}/subscriptions/{hook['_id']}", token=first.agent_token)
    gone = first.api.get(f"/{first.project_id}/requests", token="JWT " + token)
    assert gone.status_code == 401


def test_agent_not_participant_cannot_close(sandbox: SandboxHandle) -> None:
    world = make_world(sandbox.url)
    rid = world.request_id()
    world.send(rid, "hello")
    # Only an owner/admin or a participant agent may close; a visitor uses closeg instead.
    response = world.api.put(f"/{world.project_id}/requests/{rid}/close", token=world.visitor_token)
    assert (response.status_code, response.json()) == (403, ROLE_TOO_LOW)
    own = world.api.put(f"/{world.project_id}/requests/{rid}/closeg", token=world.visitor_token)
    assert own.status_code == 200 and own.json()["status"] == 1000
    world.api.close()
