"""Who sent a message: the visitor, an agent, a bot or the system (contract §5.7)."""

from __future__ import annotations

from typing import Any, Literal

SenderRole = Literal["visitor", "agent", "bot", "system"]


def sender_role(message: dict[str, Any]) -> SenderRole:
    """Classify a Tiledesk message (a REST message or a webhook ``payload``) by who sent it.

    The rules are the ones the real server uses: the visitor is the request's lead
    (``sender == request.lead.lead_id``), bots have ``bot_`` ids, system and info messages come from
    ``system`` or carry an ``attributes.subtype`` starting with ``info``; anyone else is an agent.
    A message without an embedded request (a REST listing) falls back to ``requester_id`` when given
    by the caller through ``message["request"]``; with no request at all, a sender id that is not a
    24-hex ObjectId (a UUID) is a visitor.
    """
    sender = str(message.get("sender") or "")
    attributes = message.get("attributes") or {}
    subtype = attributes.get("subtype") if isinstance(attributes, dict) else None
    if sender == "system" or (isinstance(subtype, str) and subtype.startswith("info")):
        return "system"
    if sender.startswith("bot_"):
        return "bot"
    request = message.get("request")
    if isinstance(request, dict):
        lead = request.get("lead")
        lead_id = lead.get("lead_id") if isinstance(lead, dict) else None
        if lead_id is not None:
            return "visitor" if sender == lead_id else "agent"
    return "agent" if _is_object_id(sender) else "visitor"


def _is_object_id(value: str) -> bool:
    return len(value) == 24 and all(c in "0123456789abcdef" for c in value.lower())
