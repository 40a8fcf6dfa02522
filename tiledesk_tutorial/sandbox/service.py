"""What the sandbox does: the tutorial's subset of Tiledesk, on top of the store.

Each public method is one API operation. It takes the already authenticated caller and the parsed
body, checks everything before writing, writes in one transaction (webhook deliveries included)
and returns the JSON the real server would return, or raises :class:`ApiError` with its answer.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tiledesk_tutorial.sandbox import documents as docs
from tiledesk_tutorial.sandbox.access import Authenticator, Membership, Principal
from tiledesk_tutorial.sandbox.errors import (
    ApiError,
    forbidden,
    object_not_found,
    role_too_low,
    validation,
)
from tiledesk_tutorial.sandbox.ids import (
    epoch_ms,
    is_object_id,
    iso,
    new_object_id,
    new_uuid,
    now,
    parse_iso,
)
from tiledesk_tutorial.sandbox.passwords import hash_password, verify_password
from tiledesk_tutorial.sandbox.store import Store, dumps
from tiledesk_tutorial.sandbox.tokens import (
    sign_guest_token,
    sign_subscription_token,
    sign_user_token,
)

STATUS_CLOSED = 1000
HIDDEN_BY_DEFAULT = (50, 150)  # TEMP and ABANDONED requests are not listed unless asked for
EVENTS = ("message.create", "request.create", "request.update", "request.close")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MAX_REQUEST_ID = 256
_MAX_TEXT_FIELD = 200
_TEAM_ROLES = ("agent", "supervisor", "admin", "owner")  # roles add_member can give


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery waiting in the outbox: a body for one subscription's target.

    The secret and the body (which carries the delivery token) are left out of the ``repr``.
    """

    seq: int
    subscription_id: str
    id_project: str
    event: str
    target: str
    secret: str = field(repr=False)
    body: str = field(repr=False)
    attempts: int = 0
    next_attempt_at: float = 0.0


class SandboxService:
    """The sandbox's API operations. Thread-safe: all writes go through the store's lock."""

    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        global_secret: str,
        on_deliveries: Callable[[list[Delivery]], None] = lambda rows: None,
    ) -> None:
        self.store = store
        self.auth = auth
        self._secret = global_secret
        self._on_deliveries = on_deliveries
        # Read on every call and never changed in place: projects, and who subscribes to what.
        self._projects: dict[str, dict[str, Any]] = {}
        self._hooks: dict[tuple[str, str], list[tuple[str, str, str, str, dict[str, Any]]]] = {}

    # ----------------------------------------------------------------------------------- auth

    def signup(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /auth/signup``: create an account; no token is returned (sign in next)."""
        email = body.get("email")
        if not isinstance(email, str) or not _EMAIL_RE.match(email.strip()):
            raise validation("email", email)
        for name in ("firstname", "lastname"):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                raise validation(name, value)
            if len(value) > _MAX_TEXT_FIELD:
                raise validation(name, value, f"Must be at most {_MAX_TEXT_FIELD} characters")
        password = body.get("password")
        if password is None or password == "":
            return {"success": False, "msg": "Please pass email and password."}
        if not isinstance(password, str):
            raise validation("password", "***", "Must be a string")
        email = email.strip().lower()
        user = docs.user_doc(new_object_id(), email, body["firstname"], body["lastname"], now())
        password_hash = hash_password(password)
        try:
            with self.store.transaction() as conn:
                conn.execute(
                    "INSERT INTO users (id, email, password_hash, doc) VALUES (?, ?, ?, ?)",
                    (user["_id"], email, password_hash, dumps(user)),
                )
        except sqlite3.IntegrityError:
            raise ApiError(403, {"success": False, "message": "Email already registered"}) from None
        return {"success": True, "msg": "Successfully created new user.", "user": user}

    def signin(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /auth/signin``: check email and password, return ``JWT <token>`` and the user."""
        email = body.get("email")
        if not isinstance(email, str) or not _EMAIL_RE.match(email.strip()):
            raise validation("email", email)
        password = body.get("password")
        if not isinstance(password, str) or not password:
            raise validation("password", "***" if password else password)
        row = self.store.query_one(
            "SELECT password_hash, doc FROM users WHERE email = ?", (email.strip().lower(),)
        )
        if row is None or json.loads(row[1]).get("status") != 100:
            raise ApiError(401, {"success": False, "msg": "Authentication failed. User not found."})
        if not verify_password(password, row[0]):
            raise ApiError(401, {"success": False, "msg": "Authentication failed. Wrong password."})
        user = json.loads(row[1])
        public = {key: user[key] for key in ("_id", "email", "firstname", "lastname")}
        public["emailverified"] = user["emailverified"]
        return {"success": True, "token": sign_user_token(public, self._secret), "user": public}

    def signin_anonymously(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /auth/signinAnonymously``: a new guest identity in one project."""
        project_id = body.get("id_project")
        if not isinstance(project_id, str) or not project_id:
            raise validation("id_project", project_id)
        if not is_object_id(project_id):
            raise ApiError(400, {"success": False, "msg": f"Invalid project id: {project_id}"})
        for name in ("firstname", "lastname", "email"):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > _MAX_TEXT_FIELD):
                raise validation(name, value)
        attributes = body.get("attributes")
        if attributes is not None and not isinstance(attributes, dict):
            raise validation("attributes", attributes, "Must be an object")
        uid = new_uuid()
        firstname = body.get("firstname") or f"guest#{uid[:4]}"
        user: dict[str, Any] = {"_id": uid, "firstname": firstname}
        if body.get("lastname"):
            user["lastname"] = body["lastname"]
        if body.get("email"):
            user["email"] = body["email"]
        if attributes:
            user["attributes"] = attributes
        user["id"] = uid
        user["fullName"] = f"{firstname} {body.get('lastname') or ''}"
        # As on Tiledesk, an unknown (but well-formed) project still gets a token; it is useless
        # there, since every project route answers "Project not found". No membership is stored.
        if self._project(project_id) is not None:
            member = docs.project_user_doc(
                new_object_id(), project_id, "guest", now(), uuid_user=uid
            )
            with self.store.transaction() as conn:
                conn.execute(
                    "INSERT INTO project_users (id, id_project, user_key, doc) VALUES (?, ?, ?, ?)",
                    (member["_id"], project_id, uid, dumps(member)),
                )
        return {"success": True, "token": sign_guest_token(user, self._secret), "user": user}

    # ------------------------------------------------------------------------------- projects

    def resolve_project(self, project_id: str) -> dict[str, Any]:
        """The project pre-check every ``/:project_id/...`` route runs before authentication."""
        if not is_object_id(project_id):
            raise ApiError(400, {"error": f"Invalid project id: {project_id}"})
        project = self._project(project_id)
        if project is None or project.get("status") != 100:
            raise ApiError(400, {"error": f"Project not found with id: {project_id}"})
        return project

    def _project(self, project_id: str) -> dict[str, Any] | None:
        project = self._projects.get(project_id)
        if project is None:
            project = self.store.doc("SELECT doc FROM projects WHERE id = ?", (project_id,))
            if project is not None:
                self._projects[project_id] = project
        return project

    def create_project(self, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /projects``: the caller becomes owner, with a default department."""
        if caller.kind != "user":
            raise role_too_low()
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise validation("name", name, "A project needs a name")
        if len(name) > _MAX_TEXT_FIELD:
            raise validation("name", name, f"Must be at most {_MAX_TEXT_FIELD} characters")
        at = now()
        project = docs.project_doc(new_object_id(), name, caller.id, at)
        owner = docs.project_user_doc(
            new_object_id(), project["_id"], "owner", at, id_user=caller.id
        )
        department = docs.department_doc(new_object_id(), project["_id"], caller.id, at)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO projects (id, doc) VALUES (?, ?)", (project["_id"], dumps(project))
            )
            conn.execute(
                "INSERT INTO project_users (id, id_project, user_key, doc) VALUES (?, ?, ?, ?)",
                (owner["_id"], project["_id"], caller.id, dumps(owner)),
            )
            conn.execute(
                "INSERT INTO departments (id, id_project, doc) VALUES (?, ?, ?)",
                (department["_id"], project["_id"], dumps(department)),
            )
        return docs.render_project(project, at)

    def list_projects(self, caller: Principal) -> list[dict[str, Any]]:
        """``GET /projects``: the caller's agent memberships, each with its project populated."""
        if caller.kind != "user":
            return []
        rows = self.store.query_all(
            "SELECT pu.doc, p.doc FROM project_users pu JOIN projects p ON p.id = pu.id_project "
            "WHERE pu.user_key = ?",
            (caller.id,),
        )
        at = now()
        result = []
        for member_json, project_json in rows:
            member = json.loads(member_json)
            if member.get("roleType") != 1 or member.get("status") != "active":
                continue
            member["id_project"] = docs.render_project(json.loads(project_json), at)
            result.append(docs.render_project_user(member))
        result.sort(key=lambda m: m["id_project"]["updatedAt"], reverse=True)
        return result

    def get_project(self, caller: Principal, project_id: str) -> dict[str, Any]:
        """``GET /projects/:id``: agents and up (and the project's subscriptions)."""
        if not is_object_id(project_id):
            raise ApiError(400, {"error": f"Invalid project id: {project_id}"})
        self.auth.require(caller, project_id, "agent", subscription_allowed=True)
        project = self._project(project_id)
        if project is None or project.get("status") != 100:
            raise object_not_found()
        return docs.render_project(project, now())

    def add_member(self, project_id: str, user_id: str, role: str) -> dict[str, Any]:
        """Make an existing user an active member of a project with ``role``; return the member.

        The sandbox has no invite route (Tiledesk's ``POST /:pid/project_users/invite``), so a
        workshop or a test adds teammates from Python: ``sandbox.service.add_member(pid, uid,
        "agent")``. ``role`` is one of ``agent``, ``supervisor``, ``admin`` or ``owner``. If the
        user is already a member, their role is changed and the membership made active again.

        Raises:
            ValueError: an unknown project or user, or a role that is not a teammate's role.
        """
        if role not in _TEAM_ROLES:
            raise ValueError(f"role must be one of {', '.join(_TEAM_ROLES)}, not {role!r}")
        if self._project(project_id) is None:
            raise ValueError(f"no project with id {project_id!r} in this sandbox")
        if self.store.query_one("SELECT 1 FROM users WHERE id = ?", (user_id,)) is None:
            raise ValueError(f"no user with id {user_id!r}: sign the user up first")
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM project_users WHERE id_project = ? AND user_key = ?",
                (project_id, user_id),
            ).fetchone()
            if row is None:
                member = docs.project_user_doc(
                    new_object_id(), project_id, role, now(), id_user=user_id
                )
                conn.execute(
                    "INSERT INTO project_users (id, id_project, user_key, doc) VALUES (?, ?, ?, ?)",
                    (member["_id"], project_id, user_id, dumps(member)),
                )
            else:
                member = {**json.loads(row[0]), "role": role, "roleType": 1, "status": "active"}
                member["updatedAt"] = iso(now())
                conn.execute(
                    "UPDATE project_users SET doc = ? WHERE id = ?", (dumps(member), member["_id"])
                )
            self.auth.forget_membership(project_id, user_id)
        return docs.render_project_user(member)

    # ------------------------------------------------------------------------------- messages

    def send_message(
        self,
        caller: Principal,
        member: Membership,
        project: dict[str, Any],
        request_id: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """``POST /:pid/requests/:rid/messages``; the first message creates the request."""
        _check_message_body(body)
        if not request_id or len(request_id) > _MAX_REQUEST_ID:
            raise ApiError(
                400, {"success": False, "msg": f"request_id must be 1 to {_MAX_REQUEST_ID} chars"}
            )
        project_id = project["_id"]
        sender = body.get("sender")
        if sender is not None and sender != caller.id and not member.at_least("agent"):
            # Tiledesk lets anyone pass any sender; the sandbox lets only agents speak for others.
            raise forbidden("Only agents can send a message on behalf of another sender.")
        at = now()
        pending: list[Delivery] = []
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            if row is None:
                request, sender_member = self._create_request(
                    conn, caller, member, project, request_id, body, at, pending
                )
                created = True
            else:
                request = json.loads(row[0])
                if request["id_project"] != project_id:
                    raise ApiError(
                        409,
                        {
                            "success": False,
                            "msg": "Error creating request",
                            "err": "This request_id is already used by another project: "
                            "choose a new one (see new_request_id).",
                        },
                    )
                self._check_conversation_access(caller, member, request)
                sender_member = None
                created = False
            sender_id = sender or caller.id
            fullname = body.get("senderFullname") or (
                _member_fullname(conn, sender_member) if sender_member else None
            )
            message = docs.message_doc(
                new_object_id(),
                project_id,
                request_id,
                sender_id,
                fullname or caller.fullname or "Guest",
                caller.id,
                at,
                body,
            )
            conn.execute(
                "INSERT INTO messages (id, id_project, recipient, doc) VALUES (?, ?, ?, ?)",
                (message["_id"], project_id, request_id, dumps(message)),
            )
            embedded = docs.lean_request(request)
            self._emit(
                conn, project_id, "message.create", {**message, "request": embedded}, at, pending
            )
            if not created:
                self._after_message(conn, request, message, sender, at, pending)
        self._on_deliveries(pending)
        response_request = docs.render_request(request)
        if created:
            response_request["snapshot"]["agents"] = []
        return {**message, "request": response_request}

    def _create_request(
        self,
        conn: sqlite3.Connection,
        caller: Principal,
        member: Membership,
        project: dict[str, Any],
        request_id: str,
        body: dict[str, Any],
        at: datetime,
        pending: list[Delivery],
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        project_id = project["_id"]
        sender = body.get("sender")
        row = conn.execute(
            "SELECT doc FROM project_users WHERE id_project = ? AND user_key = ?",
            (project_id, sender if sender is not None else caller.id),
        ).fetchone()
        requester = json.loads(row[0]) if row else None
        if sender is not None and (requester is None or requester.get("status") != "active"):
            raise forbidden(f"Unauthorized. Project_user not found with user id  : {sender}")
        if requester is None:
            raise ApiError(
                422,
                {
                    "success": False,
                    "msg": "Error creating request",
                    "err": "A subscription token must pass the `sender` of a new conversation.",
                },
            )
        lead_id = sender or caller.id
        fullname = body.get("senderFullname") or (
            caller.fullname if lead_id == caller.id else _member_fullname(conn, requester)
        )
        lead = self._upsert_lead(conn, project_id, lead_id, fullname, caller, body, at)
        department = json.loads(
            conn.execute(
                "SELECT doc FROM departments WHERE id_project = ? ORDER BY rowid LIMIT 1",
                (project_id,),
            ).fetchone()[0]
        )
        agents = [
            json.loads(doc)
            for (doc,) in conn.execute(
                "SELECT doc FROM project_users WHERE id_project = ? ORDER BY rowid", (project_id,)
            )
        ]
        available = [
            a
            for a in agents
            if a.get("roleType") == 1 and a.get("user_available") and a.get("status") == "active"
        ]
        stamp = iso(at)
        request: dict[str, Any] = {
            "status": 100,
            "preflight": bool(body.get("preflight", False)),
            "hasBot": False,
            "participants": [],
            "priority": body.get("priority") or "medium",
            "followers": [],
            "participantsAgents": [],
            "participantsBots": [],
            "_id": new_object_id(),
            "request_id": request_id,
            "requester": requester,
            "lead": lead,
            "first_text": body.get("text", ""),
        }
        for optional in ("subject", "language", "sourcePage", "userAgent"):
            if isinstance(body.get(optional), str):
                request[optional] = body[optional]
        request["department"] = department
        participating_agents: list[dict[str, Any]] = []
        if available:
            chosen = min(available, key=lambda a: a.get("number_assigned_requests", 0))
            chosen["number_assigned_requests"] = chosen.get("number_assigned_requests", 0) + 1
            chosen["updatedAt"] = stamp
            conn.execute(
                "UPDATE project_users SET doc = ? WHERE id = ?", (dumps(chosen), chosen["_id"])
            )
            agent_id = chosen["id_user"]
            request["status"] = 200
            request["participants"] = [agent_id]
            request["participantsAgents"] = [agent_id]
            request["assigned_at"] = stamp
            user = conn.execute("SELECT doc FROM users WHERE id = ?", (agent_id,)).fetchone()
            if user:
                participating_agents.append(json.loads(user[0]))
        request.update(
            id_project=project_id,
            createdBy=caller.id,
            channel=body.get("channel")
            if isinstance(body.get("channel"), dict)
            else {"name": "chat21"},
            tags=[],
            notes=[],
            createdAt=stamp,
            snapshot={
                "department": department,
                "availableAgentsCount": len(available),
                "requester": requester,
                "lead": lead,
            },
            channelOutbound={"name": "chat21"},
            smartAssignment=True,
            updatedAt=stamp,
            ticket_id=self.store.next_counter(conn, f"ticket:{project_id}"),
            __v=0,
        )
        if isinstance(body.get("attributes"), dict):
            request["attributes"] = dict(body["attributes"])
        request["participatingAgents"] = participating_agents
        request["participatingBots"] = []
        self._save_request(conn, request, insert=True)
        self._emit(conn, project_id, "request.create", docs.lean_request(request), at, pending)
        return request, requester

    def _upsert_lead(
        self,
        conn: sqlite3.Connection,
        project_id: str,
        lead_id: str,
        fullname: str,
        caller: Principal,
        body: dict[str, Any],
        at: datetime,
    ) -> dict[str, Any]:
        row = conn.execute(
            "SELECT doc FROM leads WHERE id_project = ? AND lead_id = ?", (project_id, lead_id)
        ).fetchone()
        if row:
            return json.loads(row[0])
        email = body.get("email") if isinstance(body.get("email"), str) else caller.email
        attributes = body.get("attributes") if isinstance(body.get("attributes"), dict) else None
        lead = docs.lead_doc(
            new_object_id(),
            project_id,
            lead_id,
            fullname,
            at,
            email=email if lead_id == caller.id else None,
            attributes=attributes or caller.attributes,
        )
        conn.execute(
            "INSERT INTO leads (id, id_project, lead_id, doc) VALUES (?, ?, ?, ?)",
            (lead["_id"], project_id, lead_id, dumps(lead)),
        )
        return lead

    def _after_message(
        self,
        conn: sqlite3.Connection,
        request: dict[str, Any],
        message: dict[str, Any],
        explicit_sender: str | None,
        at: datetime,
        pending: list[Delivery],
    ) -> None:
        """Update the request after a message to an existing conversation, as Tiledesk does."""
        updated = dict(request)
        attributes = dict(updated.get("attributes") or {})
        attributes["last_message"] = message
        updated["attributes"] = attributes
        updated["updatedAt"] = iso(at)
        first_reply = (
            explicit_sender is not None
            and explicit_sender in updated.get("participants", [])
            and "first_response_at" not in updated
        )
        if first_reply:
            updated["first_response_at"] = iso(at)
            updated["waiting_time"] = _milliseconds(parse_iso(updated["createdAt"]), at)
        self._save_request(conn, updated)
        if first_reply:
            self._emit(
                conn,
                request["id_project"],
                "request.update",
                docs.lean_request(updated),
                at,
                pending,
            )

    def _check_conversation_access(
        self, caller: Principal, member: Membership, request: dict[str, Any]
    ) -> None:
        """A visitor may only read and write their own conversations (Tiledesk does not check)."""
        if member.role == "subscription" or member.at_least("agent"):
            return
        if (
            request["lead"]["lead_id"] != caller.id
            and request["requester"].get("uuid_user") != caller.id
        ):
            raise forbidden("you dont belong to the conversation.")

    def list_messages(
        self, caller: Principal, member: Membership, project_id: str, request_id: str
    ) -> list[dict[str, Any]]:
        """``GET /:pid/requests/:rid/messages``: every message, oldest first, as a bare array."""
        request = self._request(project_id, request_id)
        if request is not None:
            self._check_conversation_access(caller, member, request)
        return self.store.docs(
            "SELECT doc FROM messages WHERE id_project = ? AND recipient = ? ORDER BY seq",
            (project_id, request_id),
        )

    # ------------------------------------------------------------------------------- requests

    def _request(self, project_id: str, request_id: str) -> dict[str, Any] | None:
        return self.store.doc(
            "SELECT doc FROM requests WHERE id_project = ? AND request_id = ?",
            (project_id, request_id),
        )

    def _save_request(
        self, conn: sqlite3.Connection, request: dict[str, Any], insert: bool = False
    ) -> None:
        requester = request["requester"]
        requester_key = requester.get("uuid_user") or requester.get("id_user") or ""
        values = (
            request["id_project"],
            request["status"],
            requester_key,
            " ".join(request.get("participants", [])),
            dumps(request),
        )
        if insert:
            conn.execute(
                "INSERT INTO requests (id, request_id, id_project, status, requester_key, "
                "participants, doc) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request["_id"], request["request_id"], *values),
            )
        else:
            conn.execute(
                "UPDATE requests SET id_project = ?, status = ?, requester_key = ?, "
                "participants = ?, doc = ? WHERE id = ?",
                (*values, request["_id"]),
            )

    def get_request(self, member: Membership, project_id: str, request_id: str) -> dict[str, Any]:
        """``GET /:pid/requests/:rid``: agents and up."""
        request = self._request(project_id, request_id)
        if request is None:
            raise object_not_found()
        return docs.render_request(request)

    def list_requests(
        self,
        caller: Principal,
        member: Membership,
        project_id: str,
        query: dict[str, str],
        *,
        mine: bool = False,
    ) -> dict[str, Any]:
        """``GET /:pid/requests`` (agents) and ``GET /:pid/requests/me`` (the caller's own)."""
        page = _int_param(query, "page", 0, minimum=0)
        limit = _int_param(query, "limit", 40, minimum=1)
        if limit > 100:
            limit = 40  # as on Tiledesk: a limit above 100 silently falls back to the default
        direction = "ASC" if query.get("direction") == "1" else "DESC"
        status_filter = query.get("status")
        include_preflight = query.get("preflight") == "true"
        clauses = ["id_project = ?"]
        params: list[Any] = [project_id]
        if status_filter is None:
            clauses.append(f"status < {STATUS_CLOSED}")
            if not mine:
                clauses.append("status NOT IN (50, 150)")
        elif status_filter != "all":
            try:
                statuses = [int(s) for s in status_filter.split(",") if s.strip()]
            except ValueError:
                raise ApiError(
                    400,
                    {"success": False, "msg": "status must be a number, a list or 'all'"},
                ) from None
            # SQLite integers are 64-bit: a status beyond that matches nothing, as on Tiledesk.
            statuses = [s for s in statuses if -(2**63) <= s < 2**63]
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if mine:
            clauses.append("requester_key = ?")
            params.append(caller.id)
        elif member.role not in ("owner", "admin", "subscription"):
            clauses.append("(' ' || participants || ' ') LIKE ?")
            params.append(f"% {caller.id} %")
        where = " AND ".join(clauses)
        rows = self.store.docs(
            f"SELECT doc FROM requests WHERE {where} ORDER BY seq {direction}",  # noqa: S608
            tuple(params),
        )
        if not include_preflight:
            rows = [r for r in rows if not r.get("preflight")]
        sort_field = query.get("sort", "createdAt")
        if sort_field != "createdAt":
            rows.sort(key=lambda r: str(r.get(sort_field, "")), reverse=direction == "DESC")
        window = rows[page * limit : (page + 1) * limit]
        return {
            "perPage": limit,
            "count": len(rows),
            "requests": [docs.render_request(r) for r in window],
        }

    def close_request(
        self,
        caller: Principal,
        member: Membership,
        project_id: str,
        request_id: str,
        *,
        as_visitor: bool,
    ) -> dict[str, Any]:
        """``PUT .../close`` (agents) and ``PUT .../closeg`` (visitors): close a conversation.

        Emits ``request.update`` then ``request.close`` (with the messages), and adds the system
        message "Chat closed", which is a ``message.create`` like any other.
        """
        at = now()
        pending: list[Delivery] = []
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM requests WHERE id_project = ? AND request_id = ?",
                (project_id, request_id),
            ).fetchone()
            if row is None:
                raise ApiError(404, {"success": False, "error": "Request not found"})
            request = json.loads(row[0])
            if as_visitor:
                self._check_conversation_access(caller, member, request)
            elif member.role not in ("owner", "admin", "subscription") and caller.id not in (
                request.get("participantsAgents") or []
            ):
                raise ApiError(
                    403,
                    {
                        "success": False,
                        "error": "You must be among the participants to close a conversation.",
                    },
                )
            messages = [
                json.loads(doc)
                for (doc,) in conn.execute(
                    "SELECT doc FROM messages WHERE id_project = ? AND recipient = ? ORDER BY seq",
                    (project_id, request_id),
                )
            ]
            if request["status"] == STATUS_CLOSED:
                # Re-closing changes nothing but, as on Tiledesk, announces the close again.
                self._emit(
                    conn,
                    project_id,
                    "request.close",
                    _close_payload(request, messages),
                    at,
                    pending,
                )
            else:
                request = self._close(conn, caller, request, messages, at, pending)
        self._on_deliveries(pending)
        return docs.render_request(request)

    def _close(
        self,
        conn: sqlite3.Connection,
        caller: Principal,
        request: dict[str, Any],
        messages: list[dict[str, Any]],
        at: datetime,
        pending: list[Delivery],
    ) -> dict[str, Any]:
        project_id = request["id_project"]
        request = dict(request)
        request["status"] = STATUS_CLOSED
        request["updatedAt"] = iso(at)
        self._emit(conn, project_id, "request.update", docs.lean_request(request), at, pending)
        request["transcript"] = "\r\n".join(_transcript_line(m) for m in messages)
        request["duration"] = _milliseconds(parse_iso(request["createdAt"]), at)
        request["closed_by"] = caller.id
        request["closed_at"] = iso(at)
        self._save_request(conn, request)
        self._emit(
            conn, project_id, "request.close", _close_payload(request, messages), at, pending
        )
        info = docs.message_doc(
            new_object_id(),
            project_id,
            request["request_id"],
            "system",
            "Bot",
            "system",
            at,
            {
                "text": "Chat closed",
                "attributes": {
                    "subtype": "info/support",
                    "updateconversation": False,
                    "messagelabel": {"key": "CHAT_CLOSED"},
                },
            },
        )
        conn.execute(
            "INSERT INTO messages (id, id_project, recipient, doc) VALUES (?, ?, ?, ?)",
            (info["_id"], project_id, request["request_id"], dumps(info)),
        )
        self._emit(
            conn,
            project_id,
            "message.create",
            {**info, "request": docs.lean_request(request)},
            at,
            pending,
        )
        return request

    # -------------------------------------------------------------------------- subscriptions

    def create_subscription(
        self, caller: Principal, project_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``POST /:pid/subscriptions``: returns the subscription with its secret, once."""
        event = body.get("event")
        target = body.get("target")
        if not isinstance(event, str) or not event.strip():
            raise validation("event", event, f"An event name is required, e.g. {EVENTS[0]}")
        if len(event) > _MAX_TEXT_FIELD:
            raise validation("event", event, f"Must be at most {_MAX_TEXT_FIELD} characters")
        if not isinstance(target, str) or not re.match(r"^https?://[^\s/]+", target):
            raise validation("target", target, "The target must be an http:// or https:// URL")
        if len(target) > 2048:
            raise validation("target", target[:50] + "…", "Must be at most 2048 characters")
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT secret, doc FROM subscriptions WHERE id_project = ? AND event = ? "
                "AND target = ?",
                (project_id, event, target),
            ).fetchone()
            if row:
                # Subscribing twice answers the existing subscription, secret included.
                secret, hook = row[0], json.loads(row[1])
            else:
                secret = new_uuid() + "-" + secrets.token_hex(8)
                hook = docs.subscription_doc(
                    new_object_id(), project_id, event, target, caller.id, now()
                )
                conn.execute(
                    "INSERT INTO subscriptions (id, id_project, event, target, secret, doc) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (hook["_id"], project_id, event, target, secret, dumps(hook)),
                )
                self._hooks.pop((project_id, event), None)
        return {"secret": secret, "global": False, **hook}

    def list_subscriptions(self, project_id: str) -> list[dict[str, Any]]:
        """``GET /:pid/subscriptions``: never with the secrets."""
        return self.store.docs(
            "SELECT doc FROM subscriptions WHERE id_project = ? ORDER BY seq", (project_id,)
        )

    def get_subscription(self, project_id: str, subscription_id: str) -> dict[str, Any]:
        """``GET /:pid/subscriptions/:id``."""
        doc = self.store.doc(
            "SELECT doc FROM subscriptions WHERE id = ? AND id_project = ?",
            (subscription_id, project_id),
        )
        if doc is None:
            raise object_not_found()
        return doc

    def delete_subscription(self, project_id: str, subscription_id: str) -> dict[str, Any] | None:
        """``DELETE /:pid/subscriptions/:id``: the deleted subscription, or ``null``."""
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM subscriptions WHERE id = ? AND id_project = ?",
                (subscription_id, project_id),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,))
            self._hooks.pop((project_id, json.loads(row[0])["event"]), None)
            conn.execute(
                "UPDATE outbox SET state = 'cancelled' WHERE subscription_id = ? "
                "AND state = 'pending'",
                (subscription_id,),
            )
        return json.loads(row[0])

    def subscription_history(self, project_id: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """``GET /:pid/subscriptions/history``: every delivery attempt, newest first, 40 a page."""
        page = _int_param(query, "page", 0, minimum=0)
        return self.store.docs(
            "SELECT doc FROM delivery_log WHERE id_project = ? ORDER BY seq DESC LIMIT 40 OFFSET ?",
            (project_id, page * 40),
        )

    # --------------------------------------------------------------------------------- events

    def _emit(
        self,
        conn: sqlite3.Connection,
        project_id: str,
        event: str,
        payload: dict[str, Any],
        at: datetime,
        pending: list[Delivery],
    ) -> None:
        """Queue one delivery per matching subscription, in the caller's transaction."""
        subscriptions = self._hooks.get((project_id, event))
        if subscriptions is None:
            rows = conn.execute(
                "SELECT id, secret, target, doc FROM subscriptions "
                "WHERE id_project = ? AND event = ? ORDER BY seq",
                (project_id, event),
            ).fetchall()
            # The hook is kept both as stored (to splice into bodies) and parsed (to sign).
            subscriptions = [(*row, json.loads(row[3])) for row in rows]
            self._hooks[(project_id, event)] = subscriptions
        if not subscriptions:
            return
        payload_json = dumps(payload)
        timestamp = epoch_ms(at)
        now_s = at.timestamp()
        for subscription_id, secret, target, hook_json, hook in subscriptions:
            token = sign_subscription_token(hook, secret)
            body = (
                f'{{"timestamp":{timestamp},"payload":{payload_json},'
                f'"hook":{hook_json},"token":"{token}"}}'
            )
            cursor = conn.execute(
                "INSERT INTO outbox (subscription_id, id_project, event, target, secret, body, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (subscription_id, project_id, event, target, secret, body, now_s),
            )
            pending.append(
                Delivery(
                    seq=cursor.lastrowid or 0,
                    subscription_id=subscription_id,
                    id_project=project_id,
                    event=event,
                    target=target,
                    secret=secret,
                    body=body,
                    next_attempt_at=now_s,
                )
            )


def _check_message_body(body: dict[str, Any]) -> None:
    for name in ("text", "type", "senderFullname", "sender", "language"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise validation(name, value, "Must be a string")
    for name in ("attributes", "metadata", "channel"):
        value = body.get(name)
        if value is not None and not isinstance(value, dict):
            raise validation(name, value, "Must be an object")
    if body.get("senderFullname") is not None and len(body["senderFullname"]) > _MAX_TEXT_FIELD:
        raise validation("senderFullname", body["senderFullname"][:20] + "…", "Too long")


def _member_fullname(conn: sqlite3.Connection, member: dict[str, Any]) -> str | None:
    user_id = member.get("id_user")
    if not user_id:
        return None
    row = conn.execute("SELECT doc FROM users WHERE id = ?", (user_id,)).fetchone()
    if not row:
        return None
    user = json.loads(row[0])
    return f"{user.get('firstname', '')} {user.get('lastname', '')}".strip()


def _close_payload(request: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    ordered_messages = sorted(messages, key=lambda m: m.get("updatedAt", ""))
    return {**docs.lean_request(request), "messages": ordered_messages}


def _transcript_line(message: dict[str, Any]) -> str:
    stamp = parse_iso(message["createdAt"]).astimezone(UTC).strftime("%d/%m/%Y, %H:%M:%S")
    return f"{stamp} {message.get('senderFullname', '')}: {message.get('text', '')}"


def _milliseconds(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds() * 1000)


def _int_param(query: dict[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, {"success": False, "msg": f"{name} must be a number"}) from None
    if value < minimum:
        raise ApiError(400, {"success": False, "msg": f"{name} must be at least {minimum}"})
    return min(value, 10**6)
