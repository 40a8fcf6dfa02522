"""Who may call what: every protected route against every kind of caller, in one table.

Callers: no token, garbage, ``Bearer``, a JWT forged with another key, an unsigned JWT, a bare JWT
without its scheme, a wrong HTTP Basic password, a visitor and an agent of another project, and in
the project itself a visitor, an agent, a supervisor, an admin (made with
``sandbox.accounts.add_member``), the owner (JWT and Basic), and a webhook subscription's token.
Each cell is the status (and body) the real server gives: 401 plain ``Unauthorized`` for bad
credentials, 403 "you dont belong to the project." for outsiders, 403 "you dont have the required
role." below the route's role, and the route's success otherwise. Both the root and ``/v3``.
Then the rules the table cannot show: a visitor's own conversations, the Authorization header's
exact form, and a delivery token's reach.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jwt
import pytest
from support.sandbox import PASSWORD, Api, World, make_world, sign_up_agent

from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox

pytestmark = pytest.mark.security

NOT_MEMBER = {"success": False, "msg": "you dont belong to the project."}
ROLE_TOO_LOW = {"success": False, "msg": "you dont have the required role."}
NOT_PARTICIPANT = {
    "success": False,
    "error": "You must be among the participants to close a conversation.",
}
RANK = {"guest": 0, "agent": 3, "supervisor": 4, "admin": 5, "owner": 6}


@dataclass
class Caller:
    """One kind of caller: its Authorization header and where it stands in the project."""

    name: str
    header: str | None
    standing: str  # "bad" (401), "outsider" (403 not member), "subscription", or a role
    user: bool = False  # a registered user (may create projects), not a guest
    user_id: str | None = None


@dataclass
class Setup:
    """The project under test, its members' tokens, and a way to make fresh objects."""

    sandbox: SandboxHandle
    world: World
    other: World
    callers: dict[str, Caller]
    conversation: str
    _uploaded: str | None = None

    def fresh_conversation(self) -> tuple[str, list[str]]:
        """A new conversation started by the visitor; returns its id and its participants."""
        rid = self.world.request_id()
        answer = self.world.send(rid, "hello")
        return rid, answer["request"]["participants"]

    def fresh_subscription(self) -> str:
        """A new subscription made by the owner; returns its id."""
        target = f"http://127.0.0.1:9/{self.world.request_id()}"
        return self.world.subscribe(target)["_id"]

    def uploaded_file(self) -> str:
        """The filename of a chat file the owner uploaded (one is uploaded the first time)."""
        if self._uploaded is None:
            answer = self.world.api.post(
                f"/{self.world.project_id}/files/chat",
                files={"file": ("shared.txt", b"a shared note", "text/plain")},
                token=self.world.agent_token,
            )
            assert answer.status_code == 201, answer.text
            self._uploaded = answer.json()["filename"]
        return self._uploaded

    def recorded_delivery(self) -> str:
        """The id of an attempt in the project's delivery history (one is made if none is)."""
        history = f"/{self.world.project_id}/subscriptions/history"
        deadline = time.monotonic() + 10
        self.world.send(self.world.request_id(), "a delivery to record")
        while time.monotonic() < deadline:
            entries = self.world.api.get(history, token=self.world.agent_token).json()
            if entries:
                return entries[0]["_id"]
            time.sleep(0.05)
        raise AssertionError("no delivery was recorded")


def _member(sandbox: SandboxHandle, api: Api, world: World, role: str) -> Caller:
    _, token, user_id = sign_up_agent(api, firstname=role.title(), lastname="Member")
    member = sandbox.accounts.add_member(world.project_id, user_id, role)
    assert (member["role"], member["status"], member["roleType"]) == (role, "active", 1)
    return Caller(role, token, role, user=True, user_id=user_id)


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with start_sandbox() as sandbox:
        world, other = make_world(sandbox.url), make_world(sandbox.url)
        conversation = world.request_id()
        world.send(conversation, "the conversation under test")
        claims = jwt.decode(world.agent_token[4:], options={"verify_signature": False})
        forged = jwt.encode(claims, "another-key-that-is-32-bytes-long!", algorithm="HS256")
        unsigned = jwt.encode(claims, None, algorithm="none")
        hook = world.subscribe("http://127.0.0.1:9/hook")
        hook_claims = {k: v for k, v in hook.items() if k not in ("secret", "global")}
        hook_claims |= {
            "aud": f"https://tiledesk.com/subscriptions/{hook['_id']}",
            "iss": "https://tiledesk.com",
            "sub": "subscription",
        }
        webhook_token = jwt.encode(hook_claims, hook["secret"], algorithm="HS256")
        callers = [
            Caller("no token", None, "bad"),
            Caller("garbage", "JWT garbage", "bad"),
            Caller("Bearer", "Bearer " + world.agent_token[4:], "bad"),
            Caller("forged JWT", "JWT " + forged, "bad"),
            Caller("unsigned JWT", "JWT " + unsigned, "bad"),
            Caller("raw JWT without scheme", world.agent_token[4:], "bad"),
            # Wrong passwords for the owner's own e-mail would make the owner's Basic wait (see
            # test_sandbox_auth_limits.py); these guesses go to an account of their own.
            Caller("wrong Basic password", _basic(other.email, "wrong"), "bad"),
            Caller("visitor of another project", other.visitor_token, "outsider"),
            Caller("agent of another project", other.agent_token, "outsider", user=True),
            Caller("visitor", world.visitor_token, "guest"),
            _member(sandbox, world.api, world, "agent"),
            _member(sandbox, world.api, world, "supervisor"),
            _member(sandbox, world.api, world, "admin"),
            Caller("owner", world.agent_token, "owner", user=True, user_id=world.agent_id),
            Caller("owner with Basic", _basic(world.email), "owner", user=True),
            Caller("webhook token", "JWT " + webhook_token, "subscription"),
        ]
        yield Setup(sandbox, world, other, {c.name: c for c in callers}, conversation)
        world.api.close()
        other.api.close()


def _basic(email: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()


@dataclass(frozen=True)
class Route:
    """A protected route: the role it needs, whether a webhook token may use it, and its call."""

    name: str
    method: str
    path: Callable[[Setup], str]
    role: str  # minimum role in the project ("user": any registered user, "any": any caller)
    subscription: bool = False
    body: dict | None = None
    success: int = 200
    files: dict | None = None  # a multipart body instead of JSON


def _pid(s: Setup) -> str:
    return s.world.project_id


ROUTES = [
    Route("send message", "POST", lambda s: f"/{_pid(s)}/requests/{s.conversation}/messages",
          "guest", subscription=True, body={"text": "hi"}),
    Route("list messages", "GET", lambda s: f"/{_pid(s)}/requests/{s.conversation}/messages",
          "guest", subscription=True),
    Route("my requests", "GET", lambda s: f"/{_pid(s)}/requests/me", "guest"),
    Route("list requests", "GET", lambda s: f"/{_pid(s)}/requests", "agent", subscription=True),
    Route("get request", "GET", lambda s: f"/{_pid(s)}/requests/{s.conversation}", "agent",
          subscription=True),
    Route("close", "PUT", lambda s: f"/{_pid(s)}/requests/{{fresh}}/close", "agent",
          subscription=True),
    Route("close as visitor", "PUT", lambda s: f"/{_pid(s)}/requests/{{fresh}}/closeg", "guest"),
    Route("reopen", "PUT", lambda s: f"/{_pid(s)}/requests/{{fresh}}/reopen", "agent",
          subscription=True),
    Route("rate", "PATCH", lambda s: f"/{_pid(s)}/requests/{{fresh}}/rating", "guest",
          body={"rating": 4, "rating_message": "ok"}),
    Route("upload a chat file", "POST", lambda s: f"/{_pid(s)}/files/chat", "guest",
          files={"file": ("note.txt", b"hello", "text/plain")}, success=201),
    Route("download a file", "GET", lambda s: f"/{_pid(s)}/files?path={{file}}", "guest",
          subscription=True),
    Route("create subscription", "POST", lambda s: f"/{_pid(s)}/subscriptions", "admin",
          body={"event": "message.create", "target": "http://127.0.0.1:9/created"}),
    Route("list subscriptions", "GET", lambda s: f"/{_pid(s)}/subscriptions", "admin"),
    Route("history", "GET", lambda s: f"/{_pid(s)}/subscriptions/history", "admin"),
    Route("resend a delivery", "POST",
          lambda s: f"/{_pid(s)}/subscriptions/history/{{delivery}}/resend", "admin"),
    Route("get subscription", "GET", lambda s: f"/{_pid(s)}/subscriptions/{{subscription}}",
          "admin"),
    Route("delete subscription", "DELETE",
          lambda s: f"/{_pid(s)}/subscriptions/{{subscription}}", "admin"),
    Route("get project", "GET", lambda s: f"/projects/{_pid(s)}", "agent", subscription=True),
    Route("list my projects", "GET", lambda s: "/projects", "any", subscription=True),
    Route("create project", "POST", lambda s: "/projects", "user", body={"name": "Mine"}),
]  # fmt: skip


def expected(route: Route, caller: Caller, participants: list[str]) -> tuple[int, object]:
    """The real server's answer for this caller on this route: (status, JSON body or text)."""
    if caller.standing == "bad":
        return 401, "Unauthorized"
    if route.role == "any":
        return 200, None
    if route.role == "user":
        return (200, None) if caller.user else (403, ROLE_TOO_LOW)
    if caller.standing == "outsider":
        return 403, NOT_MEMBER
    if caller.standing == "subscription":
        return (200, None) if route.subscription else (403, ROLE_TOO_LOW)
    if RANK[caller.standing] < RANK[route.role]:
        return 403, ROLE_TOO_LOW
    if route.name == "close" and caller.standing in ("agent", "supervisor"):
        # Below admin, only a participant of the conversation may close it.
        return (200, None) if caller.user_id in participants else (403, NOT_PARTICIPANT)
    return route.success, None


CELLS = [(route, name) for route in ROUTES for name in (
    "no token", "garbage", "Bearer", "forged JWT", "unsigned JWT", "raw JWT without scheme",
    "wrong Basic password", "visitor of another project", "agent of another project",
    "visitor", "agent", "supervisor", "admin", "owner", "owner with Basic", "webhook token",
)]  # fmt: skip


@pytest.mark.parametrize("prefix", ["", "/v3"])
def test_every_route_against_every_caller(setup: Setup, prefix: str) -> None:
    failures = []
    participants: list[str] = []
    for route, name in CELLS:
        caller = setup.callers[name]
        path = route.path(setup)
        if "{fresh}" in path:
            rid, participants = setup.fresh_conversation()
            path = path.replace("{fresh}", rid)
        if "{subscription}" in path:
            path = path.replace("{subscription}", setup.fresh_subscription())
        if "{delivery}" in path:
            path = path.replace("{delivery}", setup.recorded_delivery())
        if "{file}" in path:
            path = path.replace("{file}", setup.uploaded_file())
        if name == "wrong Basic password":
            # One wrong guess per call is what the table checks, not the wait after five.
            setup.sandbox.auth.guard.succeeded(setup.other.email)
        response = setup.world.api.call(
            route.method, prefix + path, json=route.body, files=route.files, token=caller.header
        )
        status, body = expected(route, caller, participants)
        got_body: object = response.text if status == 401 else None
        if body is not None and status != 401:
            got_body = response.json()
        if (response.status_code, got_body if body is not None else None) != (status, body):
            failures.append(f"{route.name} as {name}: {response.status_code} {response.text[:80]}")
        if status == 401:
            assert "Content-Type" not in response.headers  # passport's bare text answer
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Users"'
    assert failures == [], "\n".join(failures)


def test_the_table_covers_every_project_route(setup: Setup) -> None:
    """A route added to the sandbox without a row here fails this test."""
    from tiledesk_tutorial.sandbox.api import GLOBAL_ROUTES, PROJECT_ROUTES

    served = {
        (method, rule.rule)
        for table in (GLOBAL_ROUTES, PROJECT_ROUTES)
        for rule in table.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    public = {("GET", "/"), ("POST", "/auth/signup"), ("POST", "/auth/signin"),
              ("POST", "/auth/signinAnonymously"), ("GET", "/projects/")}  # fmt: skip
    tested = set()
    for route in ROUTES:
        path = route.path(setup).replace(setup.conversation, "<rid>").replace("{fresh}", "<rid>")
        path = path.replace(setup.world.project_id, "<pid>").replace("{subscription}", "<sid>")
        path = path.replace("{delivery}", "<hid>").split("?", 1)[0]
        tested.add((route.method, path.replace("/projects/<pid>", "/projects/<project_id>")))
    assert served - public == tested


def test_an_agent_sees_only_the_conversations_they_take_part_in(setup: Setup) -> None:
    """Owner and admin see every request; an agent or supervisor only those they are in."""
    listed = {}
    for name in ("owner", "admin", "agent", "supervisor"):
        caller = setup.callers[name]
        listed[name] = {}
        for page in range(100):
            answer = setup.world.api.get(
                f"/{_pid(setup)}/requests",
                params={"status": "all", "limit": 100, "page": page},
                token=caller.header,
            ).json()
            listed[name].update((r["request_id"], r["participants"]) for r in answer["requests"])
            if len(listed[name]) == answer["count"]:
                break
    assert len(listed["owner"]) > 1
    assert listed["admin"] == listed["owner"]
    for name in ("agent", "supervisor"):
        user_id = setup.callers[name].user_id
        assert listed[name] == {
            rid: people for rid, people in listed["owner"].items() if user_id in people
        }


def test_add_member_refuses_what_it_cannot_do(setup: Setup) -> None:
    service = setup.sandbox.accounts
    with pytest.raises(ValueError, match="role must be one of"):
        service.add_member(_pid(setup), setup.world.agent_id, "guest")
    with pytest.raises(ValueError, match="no project"):
        service.add_member("0" * 24, setup.world.agent_id, "agent")
    with pytest.raises(ValueError, match="sign the user up first"):
        service.add_member(_pid(setup), "0" * 24, "agent")


def test_add_member_again_changes_the_role(sandbox: SandboxHandle) -> None:
    world = make_world(sandbox.url)
    _, token, user_id = sign_up_agent(world.api, firstname="Sam")
    path = f"/{world.project_id}/subscriptions"
    sandbox.accounts.add_member(world.project_id, user_id, "agent")
    assert world.api.get(path, token=token).json() == ROLE_TOO_LOW
    again = sandbox.accounts.add_member(world.project_id, user_id, "admin")
    assert again["role"] == "admin"
    assert world.api.get(path, token=token).status_code == 200
    projects = world.api.get("/projects", token=token).json()
    assert [(p["id_project"]["_id"], p["role"]) for p in projects] == [(world.project_id, "admin")]
    world.api.close()


def test_visitor_cannot_read_or_write_someone_elses_conversation(setup: Setup) -> None:
    """Tiledesk lets any member use any conversation; the sandbox keeps visitors to their own."""
    first, rid = setup.world, setup.conversation
    other_token, _ = first.new_visitor("Eve")
    path = first.messages_path(rid)
    for method, body in (("GET", None), ("POST", {"text": "I am not Vic"})):
        response = first.api.call(method, path, json=body, token=other_token)
        assert response.status_code == 403, response.text
    closeg = first.api.put(f"/{first.project_id}/requests/{rid}/closeg", token=other_token)
    assert closeg.status_code == 403
    own = first.api.get(f"/{first.project_id}/requests/me", token=other_token).json()
    assert own["count"] == 0


def test_visitor_cannot_speak_for_someone_else(setup: Setup) -> None:
    first, rid = setup.world, setup.conversation
    response = first.api.post(
        first.messages_path(rid),
        json={"text": "I am the agent", "sender": first.agent_id},
        token=first.visitor_token,
    )
    assert response.status_code == 403


def test_header_with_two_spaces_is_refused_like_tiledesk(setup: Setup) -> None:
    first, rid = setup.world, setup.conversation
    doubled = first.agent_token.replace("JWT ", "JWT  ")
    response = first.api.get(first.messages_path(rid), token=doubled)
    assert (response.status_code, response.json()) == (
        403,
        {"success": False, "msg": "Unauthorized."},
    )


def test_lowercase_jwt_scheme_is_accepted(setup: Setup) -> None:
    first, rid = setup.world, setup.conversation
    lower = first.agent_token.replace("JWT ", "jwt ")
    assert first.api.get(first.messages_path(rid), token=lower).status_code == 200


def test_webhook_token_works_only_on_its_own_project(setup: Setup) -> None:
    """A delivery's token is usable as ``JWT <token>`` on routes that admit subscriptions."""
    first, second = setup.world, setup.other
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
