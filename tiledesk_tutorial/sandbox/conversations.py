"""Conversations: messages and requests, their listing, and closing them.

Each public method is one API operation: it takes the authenticated caller, their membership and
the parsed body, checks everything before writing, and writes in one transaction that also
announces the change (webhook deliveries and realtime frames, see :mod:`.changes`).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from tiledesk_tutorial.sandbox import documents as docs
from tiledesk_tutorial.sandbox.access import Membership, Principal
from tiledesk_tutorial.sandbox.changes import ChangeFeed, Changes
from tiledesk_tutorial.sandbox.errors import ApiError, forbidden, object_not_found, validation
from tiledesk_tutorial.sandbox.store import Store, dumps
from tiledesk_tutorial.wire import (
    MESSAGE_TYPES,
    RATING_MAX,
    RATING_MIN,
    STATUS_ASSIGNED,
    STATUS_CLOSED,
    STATUS_UNASSIGNED,
    iso,
    new_object_id,
    now,
    parse_time,
)

MAX_REQUEST_ID = 256
_MAX_TEXT_FIELD = 200
#: Who sees every request of a project; other members see those they take part in.
SEES_EVERY_REQUEST = ("owner", "admin", "subscription")


class Conversations:
    """Requests and their messages. Thread-safe: every write goes through the store's lock."""

    def __init__(self, store: Store, feed: ChangeFeed) -> None:
        self.store = store
        self.feed = feed

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
        if not request_id or len(request_id) > MAX_REQUEST_ID:
            raise ApiError(
                400, {"success": False, "msg": f"request_id must be 1 to {MAX_REQUEST_ID} chars"}
            )
        project_id = project["_id"]
        sender = body.get("sender")
        if sender is not None and sender != caller.id and not member.at_least("agent"):
            # Tiledesk lets anyone pass any sender; the sandbox lets only agents speak for others.
            raise forbidden("Only agents can send a message on behalf of another sender.")
        at = now()
        with self.feed.transaction() as (conn, changes):
            row = conn.execute(
                "SELECT doc FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            if row is None:
                request, sender_member = self._create_request(
                    conn, changes, caller, member, project, request_id, body, at
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
            changes.emit(
                conn,
                "message.create",
                {**message, "request": embedded},
                at,
                request=request,
                message=message,
            )
            if not created:
                self._after_message(conn, changes, request, message, sender, at)
        response_request = docs.render_request(request)
        if created:
            response_request["snapshot"]["agents"] = []
        return {**message, "request": response_request}

    def _create_request(
        self,
        conn: sqlite3.Connection,
        changes: Changes,
        caller: Principal,
        member: Membership,
        project: dict[str, Any],
        request_id: str,
        body: dict[str, Any],
        at: datetime,
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
        changes.emit(conn, "request.create", docs.lean_request(request), at, request=request)
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
        changes: Changes,
        request: dict[str, Any],
        message: dict[str, Any],
        explicit_sender: str | None,
        at: datetime,
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
            updated["waiting_time"] = _milliseconds(_time(updated["createdAt"]), at)
        self._save_request(conn, updated)
        if first_reply:
            changes.emit(conn, "request.update", docs.lean_request(updated), at, request=updated)

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

    def get_request(self, project_id: str, request_id: str) -> dict[str, Any]:
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
        page = int_param(query, "page", 0, minimum=0)
        limit = int_param(query, "limit", 40, minimum=1)
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
        elif member.role not in SEES_EVERY_REQUEST:
            clauses.append("(' ' || participants || ' ') LIKE ?")
            params.append(f"% {caller.id} %")
        if not include_preflight:
            clauses.append("NOT coalesce(json_extract(doc, '$.preflight'), 0)")
        where = " AND ".join(clauses)
        sort_field = query.get("sort", "createdAt")
        if sort_field == "createdAt":
            # The page in SQL, along the (id_project, seq) index: a page of 100 out of 1,000
            # conversations reads 100 documents, not 1,000 (createdAt follows seq).
            with self.store.reading() as conn:
                (count,) = conn.execute(
                    f"SELECT COUNT(*) FROM requests WHERE {where}",  # noqa: S608
                    tuple(params),
                ).fetchone()
                window = [
                    json.loads(row[0])
                    for row in conn.execute(
                        f"SELECT doc FROM requests WHERE {where} "  # noqa: S608
                        f"ORDER BY seq {direction} LIMIT ? OFFSET ?",
                        (*params, limit, min(page * limit, 2**62)),  # SQLite's integers are 64-bit
                    )
                ]
        else:  # another field (rare, by hand): sorted as Tiledesk compares them, in Python
            rows = self.store.docs(
                f"SELECT doc FROM requests WHERE {where} ORDER BY seq {direction}",  # noqa: S608
                tuple(params),
            )
            rows.sort(key=lambda r: str(r.get(sort_field, "")), reverse=direction == "DESC")
            count, window = len(rows), rows[page * limit : (page + 1) * limit]
        return {
            "perPage": limit,
            "count": count,
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
        with self.feed.transaction() as (conn, changes):
            request = self._locked_request(conn, project_id, request_id)
            if as_visitor:
                self._check_conversation_access(caller, member, request)
            elif member.role not in SEES_EVERY_REQUEST and caller.id not in (
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
                changes.emit(
                    conn, "request.close", _close_payload(request, messages), at, request=request
                )
            else:
                request = self._close(conn, changes, caller, request, messages, at)
        return docs.render_request(request)

    def reopen_request(
        self, caller: Principal, member: Membership, project_id: str, request_id: str
    ) -> dict[str, Any]:
        """``PUT .../reopen``: a closed conversation is open again (agents).

        Emits ``request.update`` then the system message "Chat reopened" (``message.create``).
        Reopening an open conversation changes nothing and announces nothing.
        """
        at = now()
        with self.feed.transaction() as (conn, changes):
            request = self._locked_request(conn, project_id, request_id)
            if request["status"] != STATUS_CLOSED:
                return docs.render_request(request)
            request = dict(request)
            request["status"] = (
                STATUS_ASSIGNED if request.get("participantsAgents") else STATUS_UNASSIGNED
            )
            request["updatedAt"] = iso(at)
            self._save_request(conn, request)
            changes.emit(conn, "request.update", docs.lean_request(request), at, request=request)
            self._system_message(
                conn,
                changes,
                request,
                "Chat reopened",
                {
                    "subtype": "info/support",
                    "updateconversation": True,
                    "messagelabel": {"key": "CHAT_REOPENED"},
                },
                at,
            )
        return docs.render_request(request)

    def rate_request(
        self,
        caller: Principal,
        member: Membership,
        project_id: str,
        request_id: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """``PATCH .../rating``: the visitor's rating (1-5) and comment; ``request.update``."""
        rating, comment = _check_rating(body)
        at = now()
        with self.feed.transaction() as (conn, changes):
            # The rating route names its error "msg", as recorded (rich/51b).
            request = self._locked_request(conn, project_id, request_id, error_key="msg")
            self._check_conversation_access(caller, member, request)
            request["rating"] = rating
            if comment is not None:
                request["rating_message"] = comment
            request["updatedAt"] = iso(at)
            self._save_request(conn, request)
            changes.emit(conn, "request.update", docs.lean_request(request), at, request=request)
        return docs.render_request(request)

    def _locked_request(
        self,
        conn: sqlite3.Connection,
        project_id: str,
        request_id: str,
        *,
        error_key: str = "error",
    ) -> dict[str, Any]:
        row = conn.execute(
            "SELECT doc FROM requests WHERE id_project = ? AND request_id = ?",
            (project_id, request_id),
        ).fetchone()
        if row is None:
            raise ApiError(404, {"success": False, error_key: "Request not found"})
        return json.loads(row[0])

    def _system_message(
        self,
        conn: sqlite3.Connection,
        changes: Changes,
        request: dict[str, Any],
        text: str,
        attributes: dict[str, Any],
        at: datetime,
    ) -> None:
        info = docs.message_doc(
            new_object_id(),
            request["id_project"],
            request["request_id"],
            "system",
            "Bot",
            "system",
            at,
            {"text": text, "attributes": attributes},
        )
        conn.execute(
            "INSERT INTO messages (id, id_project, recipient, doc) VALUES (?, ?, ?, ?)",
            (info["_id"], request["id_project"], request["request_id"], dumps(info)),
        )
        changes.emit(
            conn,
            "message.create",
            {**info, "request": docs.lean_request(request)},
            at,
            request=request,
            message=info,
        )

    def _close(
        self,
        conn: sqlite3.Connection,
        changes: Changes,
        caller: Principal,
        request: dict[str, Any],
        messages: list[dict[str, Any]],
        at: datetime,
    ) -> dict[str, Any]:
        request = dict(request)
        request["status"] = STATUS_CLOSED
        request["updatedAt"] = iso(at)
        changes.emit(conn, "request.update", docs.lean_request(request), at, request=dict(request))
        request["transcript"] = "\r\n".join(_transcript_line(m) for m in messages)
        request["duration"] = _milliseconds(_time(request["createdAt"]), at)
        request["closed_by"] = caller.id
        request["closed_at"] = iso(at)
        self._save_request(conn, request)
        changes.emit(conn, "request.close", _close_payload(request, messages), at, request=request)
        self._system_message(
            conn,
            changes,
            request,
            "Chat closed",
            {
                "subtype": "info/support",
                "updateconversation": False,
                "messagelabel": {"key": "CHAT_CLOSED"},
            },
            at,
        )
        return request


def _check_rating(body: dict[str, Any]) -> tuple[int, str | None]:
    rating = body.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, int | float) or rating != int(rating):
        raise validation(
            "rating", rating, f"Must be a whole number from {RATING_MIN} to {RATING_MAX}"
        )
    if not RATING_MIN <= rating <= RATING_MAX:
        raise validation("rating", rating, f"Must be from {RATING_MIN} to {RATING_MAX}")
    message = body.get("rating_message")
    if message is not None and not isinstance(message, str):
        raise validation("rating_message", message, "Must be a string")
    return int(rating), message


def _check_message_body(body: dict[str, Any]) -> None:
    for name in ("text", "type", "senderFullname", "sender", "language"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise validation(name, value, "Must be a string")
    if body.get("type") is not None and body["type"] not in MESSAGE_TYPES:
        # Tiledesk stores any type string; a widget then shows it as nothing. Refused here.
        raise validation("type", body["type"][:40], f"Must be one of {', '.join(MESSAGE_TYPES)}")
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
    stamp = _time(message["createdAt"]).astimezone(UTC).strftime("%d/%m/%Y, %H:%M:%S")
    return f"{stamp} {message.get('senderFullname', '')}: {message.get('text', '')}"


def _milliseconds(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds() * 1000)


def int_param(query: dict[str, str], name: str, default: int, *, minimum: int) -> int:
    """A whole-number query parameter, or the 400 answer that says what is wrong with it."""
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


def _time(stamp: str) -> datetime:
    """A time the sandbox stored itself (always well-formed)."""
    moment = parse_time(stamp)
    assert moment is not None, stamp
    return moment
