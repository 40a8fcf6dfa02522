"""Accounts and projects: sign-up, sign-in (agents and anonymous visitors), projects and members.

Each public method is one API operation: it takes the authenticated caller and the parsed body,
checks everything before writing, writes in one transaction, and returns the JSON the real server
returns, or raises :class:`ApiError` with its answer.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from tiledesk_tutorial.sandbox import documents as docs
from tiledesk_tutorial.sandbox.access import Authenticator, Principal
from tiledesk_tutorial.sandbox.errors import ApiError, object_not_found, role_too_low, validation
from tiledesk_tutorial.sandbox.passwords import hash_password, verify_password_or_decoy
from tiledesk_tutorial.sandbox.store import Store, dumps
from tiledesk_tutorial.sandbox.tokens import sign_guest_token, sign_user_token
from tiledesk_tutorial.wire import is_object_id, iso, new_object_id, new_uuid, now

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_TEXT_FIELD = 200  # characters of a name, an e-mail or an event name
TEAM_ROLES = ("agent", "supervisor", "admin", "owner")  # the roles add_member can give


class Accounts:
    """Users, projects and memberships. Thread-safe: every write goes through the store's lock."""

    def __init__(self, store: Store, auth: Authenticator, global_secret: str) -> None:
        self.store = store
        self.auth = auth
        self._secret = global_secret

    # --------------------------------------------------------------------------------- sign-in

    def signup(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /auth/signup``: create an account; no token is returned (sign in next).

        Hashing the password takes about 75 ms of CPU: call it off the event loop.
        """
        email = body.get("email")
        if not isinstance(email, str) or not EMAIL_RE.match(email.strip()):
            raise validation("email", email)
        for name in ("firstname", "lastname"):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                raise validation(name, value)
            if len(value) > MAX_TEXT_FIELD:
                raise validation(name, value, f"Must be at most {MAX_TEXT_FIELD} characters")
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

    def signin(self, body: dict[str, Any], address: str | None = None) -> dict[str, Any]:
        """``POST /auth/signin``: check e-mail and password, return ``JWT <token>`` and the user.

        Checking the password takes about 75 ms of CPU: call it off the event loop. Repeated
        failures for the e-mail (or from ``address``) are answered ``429`` for a while (see
        :mod:`tiledesk_tutorial.sandbox.guessing`).
        """
        email = body.get("email")
        if not isinstance(email, str) or not EMAIL_RE.match(email.strip()):
            raise validation("email", email)
        password = body.get("password")
        if not isinstance(password, str) or not password:
            raise validation("password", "***" if password else password)
        guard = self.auth.guard
        guard.check(email, address)
        row = self.store.query_one(
            "SELECT password_hash, doc FROM users WHERE email = ?", (email.strip().lower(),)
        )
        known = row is not None and json.loads(row[1]).get("status") == 100
        if not verify_password_or_decoy(password, row[0] if known else None):
            guard.failed(email, address)
            msg = "Wrong password." if known else "User not found."
            raise ApiError(401, {"success": False, "msg": f"Authentication failed. {msg}"})
        guard.succeeded(email)
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
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT_FIELD):
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
        if self.project(project_id) is not None:
            member = docs.project_user_doc(
                new_object_id(), project_id, "guest", now(), uuid_user=uid
            )
            with self.store.transaction() as conn:
                conn.execute(
                    "INSERT INTO project_users (id, id_project, user_key, doc) VALUES (?, ?, ?, ?)",
                    (member["_id"], project_id, uid, dumps(member)),
                )
        return {"success": True, "token": sign_guest_token(user, self._secret), "user": user}

    # -------------------------------------------------------------------------------- projects

    def project(self, project_id: str) -> dict[str, Any] | None:
        """The stored project, or None."""
        return self.store.doc("SELECT doc FROM projects WHERE id = ?", (project_id,))

    def resolve_project(self, project_id: str) -> dict[str, Any]:
        """The project pre-check every ``/:project_id/...`` route runs before authentication."""
        if not is_object_id(project_id):
            raise ApiError(400, {"error": f"Invalid project id: {project_id}"})
        project = self.project(project_id)
        if project is None or project.get("status") != 100:
            raise ApiError(400, {"error": f"Project not found with id: {project_id}"})
        return project

    def create_project(self, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /projects``: the caller becomes owner, with a default department."""
        if caller.kind != "user":
            raise role_too_low()
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise validation("name", name, "A project needs a name")
        if len(name) > MAX_TEXT_FIELD:
            raise validation("name", name, f"Must be at most {MAX_TEXT_FIELD} characters")
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
        project = self.project(project_id)
        if project is None or project.get("status") != 100:
            raise object_not_found()
        return docs.render_project(project, now())

    def add_member(self, project_id: str, user_id: str, role: str) -> dict[str, Any]:
        """Make an existing user an active member of a project with ``role``; return the member.

        The sandbox has no invite route (Tiledesk's ``POST /:pid/project_users/invite``), so a
        workshop or a test adds teammates from Python: ``sandbox.accounts.add_member(pid, uid,
        "agent")``. ``role`` is one of ``agent``, ``supervisor``, ``admin`` or ``owner``. If the
        user is already a member, their role is changed and the membership made active again.

        Raises:
            ValueError: an unknown project or user, or a role that is not a teammate's role.
        """
        if role not in TEAM_ROLES:
            raise ValueError(f"role must be one of {', '.join(TEAM_ROLES)}, not {role!r}")
        if self.project(project_id) is None:
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
        return docs.render_project_user(member)
