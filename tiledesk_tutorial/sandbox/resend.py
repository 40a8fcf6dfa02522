"""Sending a recorded webhook delivery again: a sandbox extension, like the Stripe CLI's
``events resend``.

``POST /:pid/subscriptions/history/:id/resend`` (an owner or admin of the project) takes one entry
of ``/subscriptions/history`` and queues its delivery once more, to its subscription's target: the
same body (payload, timestamp, hook), with a fresh token signed with the subscription's secret
(the history keeps the token redacted). It goes through the outbox like every delivery, so it is
durable, retried with backoff and recorded as a new attempt in the history. A receiver that kept
the first one recognises the repeat (Tiledesk's deliveries are at least once); one whose first
attempt failed, or that was down, gets it now.

Real Tiledesk has no such route (see the README, "Where the sandbox differs from Tiledesk").
"""

from __future__ import annotations

import json
import time
from typing import Any

from tiledesk_tutorial.sandbox.changes import ChangeFeed
from tiledesk_tutorial.sandbox.errors import ApiError
from tiledesk_tutorial.sandbox.store import HISTORY_DOC, dumps
from tiledesk_tutorial.sandbox.subscriptions import queue_delivery
from tiledesk_tutorial.sandbox.tokens import sign_subscription_token
from tiledesk_tutorial.wire import is_object_id


class Resends:
    """Queue a recorded delivery again (``POST /:pid/subscriptions/history/:id/resend``)."""

    def __init__(self, feed: ChangeFeed) -> None:
        self.feed = feed

    def resend(self, project_id: str, delivery_id: str) -> dict[str, Any]:
        """Queue the delivery recorded as ``delivery_id`` again; answer what was queued."""
        if not is_object_id(delivery_id):
            raise _not_found(delivery_id)
        with self.feed.transaction() as (conn, changes):
            # The history has no column for the entry's id: a scan of the project's entries,
            # fine for a call made by hand (about 20 ms for 100,000 entries).
            row = conn.execute(
                f"SELECT {HISTORY_DOC} FROM delivery_log WHERE id_project = ? "  # noqa: S608
                "AND json_extract(doc, '$._id') = ?",
                (project_id, delivery_id),
            ).fetchone()
            if row is None:
                raise _not_found(delivery_id)
            entry = json.loads(row[0])
            subscription = conn.execute(
                "SELECT id, event, target, secret, doc FROM subscriptions "
                "WHERE id = ? AND id_project = ?",
                (entry.get("id_subscription"), project_id),
            ).fetchone()
            if subscription is None:
                raise ApiError(
                    404,
                    {
                        "success": False,
                        "msg": "The subscription of this delivery was deleted: there is no "
                        "target to send it to.",
                    },
                )
            subscription_id, event, target, secret, hook_json = subscription
            try:
                body = json.loads(entry["jsonRequest"])
            except (KeyError, TypeError, ValueError):
                raise _not_found(delivery_id) from None
            body["token"] = sign_subscription_token(json.loads(hook_json), secret)
            text = dumps(body)
            queued_at = time.time()
            changes.deliveries.append(
                queue_delivery(
                    conn, subscription_id, project_id, event, target, secret, text, queued_at
                )
            )
        return {
            "success": True,
            "resent": delivery_id,
            "event": event,
            "target": target,
            "id_subscription": subscription_id,
            "id_project": project_id,
            "outcome": "pending",
        }


def _not_found(delivery_id: str) -> ApiError:
    return ApiError(
        404,
        {
            "success": False,
            "msg": f"No recorded delivery {delivery_id[:40]} in this project: take an _id from "
            "GET /:project_id/subscriptions/history.",
        },
    )
