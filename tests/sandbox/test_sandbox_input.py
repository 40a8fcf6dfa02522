"""Bad input gets a clear 4xx, never a 500 or a traceback, and changes nothing already stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.sandbox import World, make_world

from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.sandbox.delivery import RetryPolicy


@pytest.fixture(scope="module")
def world(sandbox_session: SandboxHandle) -> Iterator[World]:
    """An agent, a project, a visitor and one conversation with one message."""
    w = make_world(sandbox_session.url)
    yield w
    w.api.close()


def snapshot(world: World, rid: str) -> tuple:
    """What is stored, as the API shows it: messages, requests, subscriptions, projects."""
    messages = world.api.get(world.messages_path(rid), token=world.agent_token).json()
    requests = world.api.get(
        f"/{world.project_id}/requests", params={"status": "all"}, token=world.agent_token
    ).json()
    subscriptions = world.api.get(
        f"/{world.project_id}/subscriptions", token=world.agent_token
    ).json()
    projects = world.api.get("/projects", token=world.agent_token).json()
    return messages, requests, subscriptions, projects


def raw(world: World, method: str, path: str, data: bytes, content_type: str, token: str):
    return world.api.call(
        method, path, data=data, headers={"Content-Type": content_type}, token=token
    )


def test_malformed_bodies_are_400_and_change_nothing(world: World) -> None:
    rid = world.request_id()
    world.send(rid, "the only message")
    before = snapshot(world, rid)
    path = world.messages_path(rid)
    cases = [
        (b'{"text": "unterminated', "application/json"),
        (b'["a", "list"]', "application/json"),
        (b'"just a string"', "application/json"),
        (b"42", "application/json"),
        (b'{"text": "\xff\xfe bad utf-8"}', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ]
    for data, content_type in cases:
        response = raw(world, "POST", path, data, content_type, world.visitor_token)
        assert response.status_code == 400, (data[:30], response.text)
        assert "err" in response.json()
    for field, value in [("text", 123), ("text", {"a": 1}), ("attributes", "x"), ("type", [])]:
        response = world.api.post(path, json={field: value}, token=world.visitor_token)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["errors"][0]["param"] == field
    assert snapshot(world, rid) == before


def test_a_body_over_500kb_is_413(world: World) -> None:
    rid = world.request_id()
    big = {"text": "x" * (520 * 1024)}
    response = world.api.post(world.messages_path(rid), json=big, token=world.visitor_token)
    assert response.status_code == 413
    assert response.json()["err"] == "Request entity too large"
    assert world.api.get(world.messages_path(rid), token=world.visitor_token).json() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "not-an-email", "password": "x", "firstname": "A", "lastname": "B"},
        {"email": "a@example.com", "password": "x", "firstname": "", "lastname": "B"},
        {"email": "a@example.com", "password": "x", "firstname": "A", "lastname": 7},
        {"email": ["a@example.com"], "password": "x", "firstname": "A", "lastname": "B"},
        {"email": "b@example.com", "password": 12345, "firstname": "A", "lastname": "B"},
    ],
)
def test_signup_validation_is_422(world: World, body: dict) -> None:
    response = world.api.post("/auth/signup", json=body)
    assert response.status_code == 422
    assert {"value", "msg", "param", "location"} <= set(response.json()["errors"][0])


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/auth/signin", {}, 422),
        ("/auth/signin", {"email": "a@example.com"}, 422),
        ("/auth/signin", {"email": 5, "password": "x"}, 422),
        ("/auth/signinAnonymously", {}, 422),
        ("/auth/signinAnonymously", {"id_project": 5}, 422),
        ("/auth/signinAnonymously", {"id_project": "nope"}, 400),
        ("/auth/signinAnonymously", {"id_project": "0" * 24, "attributes": "x"}, 422),
    ],
)
def test_sign_in_validation(world: World, path: str, body: dict, status: int) -> None:
    assert world.api.post(path, json=body).status_code == status


def test_project_and_subscription_validation(world: World) -> None:
    for body in ({}, {"name": ""}, {"name": 5}, {"name": "x" * 1000}):
        response = world.api.post("/projects", json=body, token=world.agent_token)
        assert response.status_code == 422, body
    path = f"/{world.project_id}/subscriptions"
    for body in (
        {},
        {"event": "message.create"},
        {"target": "http://127.0.0.1:9/x"},
        {"event": "message.create", "target": "ftp://example.com/x"},
        {"event": "message.create", "target": "javascript:alert(1)"},
        {"event": 5, "target": "http://127.0.0.1:9/x"},
    ):
        response = world.api.post(path, json=body, token=world.agent_token)
        assert response.status_code == 422, body
    assert world.api.get(path, token=world.agent_token).json() == []


def test_query_parameters_are_checked(world: World) -> None:
    path = f"/{world.project_id}/requests"
    for params in ({"page": "x"}, {"page": "-1"}, {"limit": "0"}, {"status": "open"}):
        response = world.api.get(path, params=params, token=world.agent_token)
        assert response.status_code == 400, params
    response = world.api.get(path, params={"limit": "500"}, token=world.agent_token)
    assert response.json()["perPage"] == 40  # above 100, Tiledesk falls back to 40


def test_unknown_routes(world: World) -> None:
    response = world.api.get("/auth")
    assert (response.status_code, response.json()) == (400, {"error": "Invalid project id: auth"})
    response = world.api.get(f"/{world.project_id}/nothing-here", token=world.agent_token)
    assert response.status_code == 404
    assert f"Cannot GET /{world.project_id}/nothing-here" in response.text
    assert world.api.post("/").status_code == 404
    v2 = world.api.post("/v2/auth/signin", json={"email": world.email, "password": "x"})
    assert (v2.status_code, v2.json()) == (400, {"error": "Invalid project id: v2"})
    assert world.api.call("PATCH", "/projects", token=world.agent_token).status_code == 400


def test_cors_preflight(world: World) -> None:
    response = world.api.call(
        "OPTIONS",
        "/auth/signin",
        headers={"Access-Control-Request-Headers": "authorization,content-type"},
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Headers"] == "authorization,content-type"


def test_the_health_text_and_the_v3_prefix(world: World) -> None:
    for path in ("/", "/v3", "/v3/"):
        response = world.api.get(path)
        assert response.status_code == 200
        assert response.text.startswith("Hello from Tiledesk server. It's UP.")
    signin = world.api.post("/v3/auth/signin", json={"email": world.email, "password": "x"})
    assert signin.status_code == 401


def test_request_id_reused_in_another_project_is_refused(
    world: World, sandbox_session: SandboxHandle
) -> None:
    other = make_world(sandbox_session.url)
    rid = world.request_id()
    world.send(rid, "mine")
    response = other.api.post(
        other.messages_path(rid), json={"text": "x"}, token=other.visitor_token
    )
    assert response.status_code == 409
    assert "another project" in response.json()["err"]
    other.api.close()


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(retries=8, backoff=1.0, max_backoff=30.0)
    delays = [policy.delay(n) for n in range(1, 9)]
    for delay, base in zip(delays, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert base <= delay <= base * 1.1
    assert policy.delay(1, retry_after=5) == 5
    assert policy.delay(1, retry_after=999) == 30
