"""SQL injection strings in every text field: stored and returned verbatim, nothing else changed.

Every field the sandbox stores (names, emails, passwords, project names, message text and its
attributes, request ids, subscription events and targets) and every query parameter and path id
gets classic injection strings. Each one must come back exactly as sent; the schema, and every row
of a bystander project, must be unchanged; and no injected credential may sign anyone in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from support.faults import table_rows
from support.sandbox import PASSWORD, Api, World, make_world

from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox

pytestmark = pytest.mark.security

INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "'; DROP TABLE messages; --",
    '"; DROP TABLE users; --',
    "Robert'); DROP TABLE requests;--",
    "1; DELETE FROM project_users WHERE 1=1",
    "' UNION SELECT password_hash, doc FROM users --",
    "%' OR 'x' LIKE '%",
    "admin'/*",
    "*/ OR 1=1 /*",
    "\\'; UPDATE users SET doc = '{}' --",
    "?",
    ":id",
    "$1",
    "x\x00'; DROP TABLE leads; --",
    '{"$gt": ""}',
    "'||(SELECT hex(randomblob(8)))||'",
    "') ON CONFLICT DO UPDATE SET doc = 'x' --",
]


def _bystander(sandbox: SandboxHandle, project_id: str) -> dict[str, list]:
    """Every row that belongs to one project (and its owner), plus the schema."""
    with sandbox.store.reading() as conn:
        rows = {
            table: conn.execute(
                f"SELECT * FROM {table} WHERE id_project = ? ORDER BY 1",  # noqa: S608
                (project_id,),
            ).fetchall()
            for table in (
                "project_users",
                "departments",
                "leads",
                "requests",
                "messages",
                "subscriptions",
            )
        }
        rows["projects"] = conn.execute(
            "SELECT * FROM projects WHERE id = ?", (project_id,)
        ).fetchall()
        rows["schema"] = conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()
    return rows


@pytest.fixture(scope="module")
def bystander() -> Iterator[tuple[SandboxHandle, World, str]]:
    """A sandbox with a project that no injection may touch: its rows are compared each time."""
    with start_sandbox() as sandbox:
        world = make_world(sandbox.url)
        rid = world.request_id()
        world.send(rid, "a message that must not change")
        world.subscribe("http://127.0.0.1:9/bystander")
        yield sandbox, world, rid
        world.api.close()


@pytest.mark.parametrize("payload", INJECTIONS, ids=lambda p: re.sub(r"\W+", "_", p)[:24])
def test_injection_strings_are_stored_verbatim_and_change_nothing_else(
    bystander: tuple[SandboxHandle, World, str], payload: str
) -> None:
    sandbox, bystander_world, bystander_rid = bystander
    before = _bystander(sandbox, bystander_world.project_id)
    with sandbox.store.reading() as conn:
        users_before = table_rows(conn, ["users"])["users"]

    api = Api(sandbox.url)
    # -- an account whose every field is the payload ------------------------------------------
    email = "inj." + re.sub(r"[\s@/\\\x00]", "", payload) + "@example.com"
    account = {"email": email, "password": payload, "firstname": payload, "lastname": payload}
    signup = api.post("/auth/signup", json=account)
    assert signup.status_code == 200, signup.text
    assert signup.json()["user"]["email"] == email.lower()
    signin = api.post("/auth/signin", json={"email": email, "password": payload})
    assert signin.status_code == 200
    user = signin.json()["user"]
    assert (user["firstname"], user["lastname"]) == (payload, payload)
    token = signin.json()["token"]
    # The payload as an email or password signs nobody in, however it is sent. Every payload
    # tries the bystander's account: forget its earlier failures, or the guessing guard answers 429.
    sandbox.auth.guard.succeeded(bystander_world.email)
    for body in (
        {"email": f"{payload}@example.com", "password": payload},
        {"email": bystander_world.email, "password": payload},
        {"email": bystander_world.email + payload, "password": PASSWORD},
    ):
        assert api.post("/auth/signin", json=body).status_code in (401, 422), body
    assert api.get("/projects", basic=(payload, payload)).status_code == 401
    assert api.get("/projects", basic=(bystander_world.email, payload)).status_code == 401

    # -- a project, a visitor and a conversation full of it ----------------------------------
    project = api.post("/projects", json={"name": payload}, token=token).json()
    pid = project["_id"]
    assert api.get(f"/projects/{pid}", token=token).json()["name"] == payload
    visitor = api.post(
        "/auth/signinAnonymously",
        json={
            "id_project": pid,
            "firstname": payload,
            "lastname": payload,
            "email": payload,
            "attributes": {payload: payload},
        },
    ).json()
    assert visitor["user"]["fullName"] == f"{payload} {payload}"
    rid = "support-group-" + re.sub(r"[/\\]", "", payload)
    path = f"/{pid}/requests/{quote(rid, safe='')}"
    message = {
        "text": payload,
        "senderFullname": payload,
        "language": payload,
        "type": "text",
        "attributes": {payload: payload, "nested": [payload]},
        "metadata": {payload: payload},
        "channel": {"name": payload},
        "subject": payload,
        "sourcePage": payload,
    }
    sent = api.post(path + "/messages", json=message, token=visitor["token"])
    assert sent.status_code == 200, sent.text
    assert sent.json()["request"]["request_id"] == rid
    reply = api.post(path + "/messages", json={"text": payload}, token=token)
    assert reply.status_code == 200
    listed = api.get(path + "/messages", token=token).json()
    assert [m["text"] for m in listed] == [payload, payload]
    first = listed[0]
    for field in ("text", "senderFullname", "language"):
        assert first[field] == payload, field
    assert first["attributes"] == {payload: payload, "nested": [payload]}
    assert first["metadata"] == {payload: payload}
    assert first["channel"] == {"name": payload}
    request = api.get(path, token=token).json()
    assert (request["request_id"], request["first_text"], request["subject"]) == (
        rid,
        payload,
        payload,
    )
    assert request["lead"]["fullname"] == payload
    mine = api.get(f"/{pid}/requests/me", token=visitor["token"]).json()
    assert [r["request_id"] for r in mine["requests"]] == [rid]

    # -- query parameters and path ids ---------------------------------------------------------
    for name in ("status", "sort", "direction", "page", "limit", "preflight"):
        answer = api.get(f"/{pid}/requests", params={name: payload}, token=token)
        assert answer.status_code in (200, 400), (name, answer.text)
    assert api.get(f"/{pid}/subscriptions/{quote(payload, safe='')}", token=token).status_code in (
        404,
        400,
    )
    assert api.get(f"/{quote(payload, safe='')}/requests", token=token).status_code in (400, 404)

    # -- a subscription named after it ----------------------------------------------------------
    target = "http://127.0.0.1:9/hook?q=" + payload
    created = api.post(
        f"/{pid}/subscriptions", json={"event": payload, "target": target}, token=token
    )
    assert created.status_code == 200, created.text
    fetched = api.get(f"/{pid}/subscriptions/{created.json()['_id']}", token=token).json()
    assert (fetched["event"], fetched["target"]) == (payload, target)

    closed = api.put(path + "/close", token=token)
    assert closed.status_code == 200
    lines = closed.json()["transcript"].split("\r\n")
    assert len(lines) == 2 and all(line.endswith(f"{payload}: {payload}") for line in lines)

    # -- and nothing else changed --------------------------------------------------------------
    assert _bystander(sandbox, bystander_world.project_id) == before
    with sandbox.store.reading() as conn:
        users_after = table_rows(conn, ["users"])["users"]
    assert set(users_before) <= set(users_after)  # no user changed or gone
    assert len(users_after) == len(users_before) + 1  # and one was added
    still = bystander_world.api.get(
        bystander_world.messages_path(bystander_rid), token=bystander_world.agent_token
    )
    assert [m["text"] for m in still.json()] == ["a message that must not change"]
    api.close()
