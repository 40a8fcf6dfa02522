"""The JSON documents the sandbox stores and returns, shaped and ordered as the real server's.

Documents are stored "lean" (no Mongoose virtuals), which is also how webhook payloads carry them;
:func:`render_request` and friends add the virtuals (``id``, ``isAuthenticated``, ...) that REST
responses include. Field names, order and defaults follow the recorded transcripts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tiledesk_tutorial.wire import iso, parse_time

REQUEST_ORDER = (
    "status", "preflight", "hasBot", "participants", "priority", "followers",
    "participantsAgents", "participantsBots", "_id", "request_id", "requester", "lead",
    "first_text", "subject", "department", "assigned_at", "id_project", "createdBy", "channel",
    "tags", "notes", "language", "sourcePage", "userAgent", "createdAt", "snapshot",
    "channelOutbound", "smartAssignment", "updatedAt", "ticket_id", "__v", "attributes",
    "transcript", "duration", "closed_by", "closed_at", "rating", "rating_message",
)  # fmt: skip
MESSAGE_ORDER = (
    "senderFullname", "type", "channel_type", "status", "_id", "sender", "recipient", "text",
    "id_project", "createdBy", "metadata", "attributes", "language", "channel", "createdAt",
    "updatedAt", "__v",
)  # fmt: skip


def ordered(doc: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """Return ``doc`` with the keys in ``order`` first, then any others as they were."""
    result = {key: doc[key] for key in order if key in doc}
    result.update((key, value) for key, value in doc.items() if key not in result)
    return result


def user_doc(user_id: str, email: str, firstname: str, lastname: str, at: datetime) -> dict:
    """A user, as returned by signup and populated in ``participatingAgents``."""
    stamp = iso(at)
    return {
        "status": 100,
        "_id": user_id,
        "email": email,
        "firstname": firstname,
        "lastname": lastname,
        "emailverified": False,
        "createdAt": stamp,
        "updatedAt": stamp,
        "__v": 0,
    }


def project_doc(project_id: str, name: str, created_by: str, at: datetime) -> dict:
    """A project, as stored (without virtuals)."""
    stamp = iso(at)
    return {
        "status": 100,
        "ipFilterEnabled": False,
        "ipFilter": [],
        "ipFilterDenyEnabled": False,
        "ipFilterDeny": [],
        "_id": project_id,
        "name": name,
        "activeOperatingHours": False,
        "createdBy": created_by,
        "profile": {"trialDays": 14, "name": "Sandbox", "agents": 0, "type": "free"},
        "versions": 20115,
        "channels": [{"name": "chat21"}],
        "bannedUsers": [],
        "createdAt": stamp,
        "updatedAt": stamp,
        "__v": 0,
    }


def render_project(doc: dict, at: datetime) -> dict:
    """A project with the virtuals the REST API adds."""
    elapsed_days = (at - (parse_time(doc["createdAt"]) or at)).days
    return {
        **doc,
        "trialExpired": False,
        # The real server reports -14 for a project created today: elapsed days minus the trial.
        "trialDaysLeft": elapsed_days - doc["profile"]["trialDays"],
        "isActiveSubscription": False,
        "id": doc["_id"],
    }


def project_user_doc(
    member_id: str,
    project_id: str,
    role: str,
    at: datetime,
    *,
    id_user: str | None = None,
    uuid_user: str | None = None,
) -> dict:
    """A project membership (``project_user``): an agent/owner (``id_user``) or a guest."""
    stamp = iso(at)
    doc: dict[str, Any] = {
        "user_available": True,
        "number_assigned_requests": 0,
        "last_login_at": stamp,
        "permissions": [],
        "status": "active",
        "trashed": False,
        "_id": member_id,
        "id_project": project_id,
    }
    if id_user is not None:
        doc["id_user"] = id_user
    else:
        doc["uuid_user"] = uuid_user
    doc.update(
        role=role,
        roleType=1 if role in ("owner", "admin", "supervisor", "agent", "teammate") else 2,
        createdBy=id_user or uuid_user,
        tags=[],
        createdAt=stamp,
        updatedAt=stamp,
        __v=0,
    )
    return doc


def render_project_user(doc: dict) -> dict:
    """A membership with its virtuals."""
    return {**doc, "isAuthenticated": doc["role"] != "guest", "id": doc["_id"]}


def department_doc(department_id: str, project_id: str, created_by: str, at: datetime) -> dict:
    """The project's default department, routing new requests to an available agent."""
    stamp = iso(at)
    return {
        "routing": "assigned",
        "default": True,
        "status": 1,
        "_id": department_id,
        "name": "Default Department",
        "id_project": project_id,
        "createdBy": created_by,
        "groups": [],
        "tags": [],
        "createdAt": stamp,
        "updatedAt": stamp,
        "__v": 0,
    }


def render_department(doc: dict) -> dict:
    """A department with its virtuals."""
    return {**doc, "hasBot": False, "id": doc["_id"]}


def lead_doc(
    lead_doc_id: str,
    project_id: str,
    lead_id: str,
    fullname: str,
    at: datetime,
    *,
    email: str | None = None,
    attributes: dict | None = None,
) -> dict:
    """The lead (contact) behind a conversation."""
    stamp = iso(at)
    doc: dict[str, Any] = {
        "tags": [],
        "status": 100,
        "_id": lead_doc_id,
        "lead_id": lead_id,
        "fullname": fullname,
    }
    if email:
        doc["email"] = email
    doc["phone"] = None
    if attributes:
        doc["attributes"] = attributes
    doc.update(id_project=project_id, createdBy="system", createdAt=stamp, updatedAt=stamp, __v=0)
    return doc


def render_request(doc: dict) -> dict:
    """A request as the REST API returns it: populated, with virtuals, in the server's order."""
    result = ordered(doc, REQUEST_ORDER)
    result["requester"] = render_project_user(doc["requester"])
    result["department"] = render_department(doc["department"])
    snapshot = dict(doc["snapshot"])
    snapshot["department"] = render_department(snapshot["department"])
    snapshot["requester"] = render_project_user(snapshot["requester"])
    result["snapshot"] = snapshot
    result.pop("participatingAgents", None)
    result.pop("participatingBots", None)
    result["requester_id"] = doc["lead"]["_id"]
    result["participatingAgents"] = doc.get("participatingAgents", [])
    result["participatingBots"] = doc.get("participatingBots", [])
    result["id"] = doc["_id"]
    return result


def render_request_update(doc: dict) -> dict:
    """A request as the Realtime API publishes its ``UPDATE``: populated without virtuals, and a
    ``snapshot`` that holds only the agents (recorded in ws-04)."""
    result = ordered(doc, REQUEST_ORDER)
    result.pop("snapshot", None)
    result.pop("participatingAgents", None)
    result.pop("participatingBots", None)
    result["requester_id"] = doc["lead"]["_id"]
    result["participatingAgents"] = doc.get("participatingAgents", [])
    result["participatingBots"] = doc.get("participatingBots", [])
    result["id"] = doc["_id"]
    result["snapshot"] = {"agents": [{"id_user": a} for a in doc.get("participantsAgents", [])]}
    return result


def lean_request(doc: dict) -> dict:
    """A request as webhook payloads carry it: populated, without virtuals."""
    return ordered(doc, REQUEST_ORDER)


def message_doc(
    message_id: str,
    project_id: str,
    request_id: str,
    sender: str,
    sender_fullname: str,
    created_by: str,
    at: datetime,
    body: dict[str, Any],
) -> dict:
    """A message; optional fields (text, attributes, metadata, language) only when given."""
    stamp = iso(at)
    doc: dict[str, Any] = {
        "senderFullname": sender_fullname,
        "type": body.get("type") or "text",
        "channel_type": "group",
        "status": body.get("status", 0),
        "_id": message_id,
        "sender": sender,
        "recipient": request_id,
    }
    if "text" in body:
        doc["text"] = body["text"]
    doc["id_project"] = project_id
    doc["createdBy"] = created_by
    for optional in ("attributes", "metadata", "language"):
        if body.get(optional) is not None:
            doc[optional] = body[optional]
    doc["channel"] = body.get("channel") or {"name": "chat21"}
    doc.update(createdAt=stamp, updatedAt=stamp, __v=0)
    return ordered(doc, MESSAGE_ORDER)


def subscription_doc(
    subscription_id: str, project_id: str, event: str, target: str, created_by: str, at: datetime
) -> dict:
    """A webhook subscription, without its secret (which is never listed)."""
    stamp = iso(at)
    return {
        "_id": subscription_id,
        "target": target,
        "event": event,
        "id_project": project_id,
        "createdBy": created_by,
        "createdAt": stamp,
        "updatedAt": stamp,
        "__v": 0,
    }
