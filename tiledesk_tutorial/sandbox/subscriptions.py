"""Webhook subscriptions, their delivery history, and the outbox that holds what is still to send.

A delivery is written to the outbox in the same transaction as the change it announces (see
:mod:`tiledesk_tutorial.sandbox.changes`), so nothing acknowledged can be lost; the delivery worker
(:mod:`tiledesk_tutorial.sandbox.delivery`) sends it and records each attempt.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tiledesk_tutorial.sandbox import documents as docs
from tiledesk_tutorial.sandbox.access import Principal
from tiledesk_tutorial.sandbox.errors import object_not_found, validation
from tiledesk_tutorial.sandbox.store import HISTORY_DOC, Store, dumps
from tiledesk_tutorial.sandbox.tokens import sign_subscription_token
from tiledesk_tutorial.wire import WEBHOOK_EVENTS, epoch_ms, new_object_id, new_uuid, now

HISTORY_PAGE = 40  # attempts per page of /subscriptions/history
_MAX_EVENT_NAME = 200
_MAX_TARGET = 2048
_TARGET_RE = re.compile(r"^https?://[^\s/]+")


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


def queue_delivery(
    conn: sqlite3.Connection,
    subscription_id: str,
    project_id: str,
    event: str,
    target: str,
    secret: str,
    body: str,
    due_at: float,
) -> Delivery:
    """Insert one delivery into the outbox, inside the caller's transaction, and return it."""
    cursor = conn.execute(
        "INSERT INTO outbox (subscription_id, id_project, event, target, secret, body, "
        "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (subscription_id, project_id, event, target, secret, body, due_at),
    )
    return Delivery(
        seq=cursor.lastrowid or 0,
        subscription_id=subscription_id,
        id_project=project_id,
        event=event,
        target=target,
        secret=secret,
        body=body,
        next_attempt_at=due_at,
    )


class Outbox:
    """Writes the deliveries of a change into the outbox, inside the caller's transaction."""

    def queue(
        self,
        conn: sqlite3.Connection,
        project_id: str,
        event: str,
        payload: dict[str, Any],
        at: datetime,
    ) -> list[Delivery]:
        """One delivery per subscription of ``project_id`` to ``event``, stored and returned."""
        subscriptions = conn.execute(
            "SELECT id, secret, target, doc FROM subscriptions "
            "WHERE id_project = ? AND event = ? ORDER BY seq",
            (project_id, event),
        ).fetchall()
        if not subscriptions:
            return []
        payload_json = dumps(payload)
        timestamp = epoch_ms(at)
        now_s = at.timestamp()
        queued = []
        for subscription_id, secret, target, hook_json in subscriptions:
            token = sign_subscription_token(json.loads(hook_json), secret)
            # The stored hook is spliced in as it is: it keeps its key order and is not re-encoded.
            body = (
                f'{{"timestamp":{timestamp},"payload":{payload_json},'
                f'"hook":{hook_json},"token":"{token}"}}'
            )
            queued.append(
                queue_delivery(
                    conn, subscription_id, project_id, event, target, secret, body, now_s
                )
            )
        return queued


class Subscriptions:
    """``/:pid/subscriptions``: create, list, get, delete, and the delivery history."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, caller: Principal, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /:pid/subscriptions``: returns the subscription with its secret, once."""
        event = body.get("event")
        target = body.get("target")
        if not isinstance(event, str) or not event.strip():
            raise validation("event", event, f"An event name is required, e.g. {WEBHOOK_EVENTS[0]}")
        if len(event) > _MAX_EVENT_NAME:
            raise validation("event", event, f"Must be at most {_MAX_EVENT_NAME} characters")
        if not isinstance(target, str) or not _TARGET_RE.match(target):
            raise validation("target", target, "The target must be an http:// or https:// URL")
        if len(target) > _MAX_TARGET:
            raise validation(
                "target", target[:50] + "…", f"Must be at most {_MAX_TARGET} characters"
            )
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
        return {"secret": secret, "global": False, **hook}

    def list(self, project_id: str) -> list[dict[str, Any]]:
        """``GET /:pid/subscriptions``: never with the secrets."""
        return self.store.docs(
            "SELECT doc FROM subscriptions WHERE id_project = ? ORDER BY seq", (project_id,)
        )

    def get(self, project_id: str, subscription_id: str) -> dict[str, Any]:
        """``GET /:pid/subscriptions/:id``."""
        doc = self.store.doc(
            "SELECT doc FROM subscriptions WHERE id = ? AND id_project = ?",
            (subscription_id, project_id),
        )
        if doc is None:
            raise object_not_found()
        return doc

    def delete(self, project_id: str, subscription_id: str) -> dict[str, Any] | None:
        """``DELETE /:pid/subscriptions/:id``: the deleted subscription, or ``null``.

        Its deliveries still pending are cancelled.
        """
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM subscriptions WHERE id = ? AND id_project = ?",
                (subscription_id, project_id),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,))
            conn.execute(
                "UPDATE outbox SET state = 'cancelled' WHERE subscription_id = ? "
                "AND state = 'pending'",
                (subscription_id,),
            )
        return json.loads(row[0])

    def history(self, project_id: str, page: int) -> list[dict[str, Any]]:
        """``GET /:pid/subscriptions/history``: every delivery attempt, newest first."""
        return self.store.docs(
            f"SELECT {HISTORY_DOC} FROM delivery_log WHERE id_project = ? "  # noqa: S608 - a constant
            "ORDER BY seq DESC LIMIT ? OFFSET ?",
            (project_id, HISTORY_PAGE, page * HISTORY_PAGE),
        )
