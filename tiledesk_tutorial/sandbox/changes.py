"""What a write announces: the one source of the sandbox's events.

Every stored change of a conversation (a request created or updated, a message added, a request
closed) is announced once, inside the transaction that stores it, with :meth:`Changes.emit`. That
one call queues the webhook deliveries (rows of the outbox, in the same transaction) and notes the
Realtime API's publications. Both are handed over only once the transaction has committed
(:meth:`ChangeFeed.committed`): a rolled-back call announces nothing, and a frame never shows what
the database does not hold.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tiledesk_tutorial.sandbox.store import Store
from tiledesk_tutorial.sandbox.subscriptions import Delivery, Outbox

Event = Literal["message.create", "request.create", "request.update", "request.close"]


@dataclass(frozen=True)
class Publication:
    """One change, as the Realtime API publishes it: the event, the request and the message.

    ``request`` is the stored request after the change; ``message`` is set for
    ``message.create``; ``payload`` is what the webhook carries.
    """

    event: Event
    project_id: str
    request: dict[str, Any]
    payload: dict[str, Any]
    message: dict[str, Any] | None = None


@dataclass
class Changes:
    """The announcements of one transaction, collected until it commits."""

    outbox: Outbox
    deliveries: list[Delivery] = field(default_factory=list)
    publications: list[Publication] = field(default_factory=list)

    def emit(
        self,
        conn: sqlite3.Connection,
        event: Event,
        payload: dict[str, Any],
        at: datetime,
        *,
        request: dict[str, Any],
        message: dict[str, Any] | None = None,
    ) -> None:
        """Announce one change: queue its webhooks now, note its realtime publication."""
        project_id = request["id_project"]
        self.deliveries.extend(self.outbox.queue(conn, project_id, event, payload, at))
        self.publications.append(Publication(event, project_id, request, payload, message))


class ChangeFeed:
    """Opens write transactions that announce changes, and hands them over once committed.

    ``on_committed`` receives each committed transaction's :class:`Changes` (the server sends the
    deliveries and publishes the frames on its event loop).
    """

    def __init__(
        self, store: Store, outbox: Outbox, on_committed: Callable[[Changes], None]
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.on_committed = on_committed

    @contextmanager
    def transaction(self) -> Iterator[tuple[sqlite3.Connection, Changes]]:
        """A write transaction and the :class:`Changes` it announces, handed over on commit."""
        changes = Changes(self.outbox)
        with self.store.transaction() as conn:
            yield conn, changes
        if changes.deliveries or changes.publications:
            self.on_committed(changes)
