"""SQLite persistence for the sandbox: one database file in the data folder, in WAL mode.

Each entity is kept as the JSON document the API returns, beside the few columns that queries need.
Every API call that writes does so in one transaction, webhook deliveries included (a transactional
outbox), so nothing acknowledged is lost when the process stops, even by SIGKILL.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("tiledesk_tutorial.sandbox.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS project_users (
    id TEXT PRIMARY KEY, id_project TEXT NOT NULL, user_key TEXT NOT NULL, doc TEXT NOT NULL,
    UNIQUE (id_project, user_key));
CREATE INDEX IF NOT EXISTS project_users_by_user ON project_users (user_key);
CREATE TABLE IF NOT EXISTS departments (
    id TEXT PRIMARY KEY, id_project TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS departments_by_project ON departments (id_project);
CREATE TABLE IF NOT EXISTS leads (
    id TEXT PRIMARY KEY, id_project TEXT NOT NULL, lead_id TEXT NOT NULL, doc TEXT NOT NULL,
    UNIQUE (id_project, lead_id));
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, request_id TEXT NOT NULL UNIQUE,
    id_project TEXT NOT NULL, status INTEGER NOT NULL, requester_key TEXT NOT NULL,
    participants TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS requests_by_project ON requests (id_project, seq);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, id_project TEXT NOT NULL,
    recipient TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_request ON messages (id_project, recipient, seq);
CREATE TABLE IF NOT EXISTS subscriptions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, id_project TEXT NOT NULL,
    event TEXT NOT NULL, target TEXT NOT NULL, secret TEXT NOT NULL, doc TEXT NOT NULL,
    UNIQUE (id_project, event, target));
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, subscription_id TEXT NOT NULL, id_project TEXT NOT NULL,
    event TEXT NOT NULL, target TEXT NOT NULL, secret TEXT NOT NULL, body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending');
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, seq);
CREATE TABLE IF NOT EXISTS delivery_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id_project TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS delivery_log_by_project ON delivery_log (id_project, seq);
CREATE TABLE IF NOT EXISTS files (
    filename TEXT PRIMARY KEY, id_project TEXT NOT NULL, disk_name TEXT NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_project ON files (id_project);
CREATE TABLE IF NOT EXISTS delivery_bodies (
    id INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


#: A delivery attempt's history document, its request body (stored once in ``delivery_bodies``
#: for every attempt of a delivery, not once per attempt) put back in place. Rows written before
#: that table existed keep their body in the document.
HISTORY_DOC = (
    "CASE WHEN delivery_log.body_id IS NULL THEN delivery_log.doc ELSE json_set(delivery_log.doc, "
    "'$.jsonRequest', (SELECT body FROM delivery_bodies WHERE id = delivery_log.body_id)) END"
)


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's ``SQLITE_FULL``, or a file write's ``ENOSPC`` or ``EDQUOT`` (a chat
    upload's): the disk is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(exc, sqlite3.Error):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_FULL") or "disk is full" in str(exc)


def dumps(doc: Any) -> str:
    """Serialise a document compactly, keeping its key order."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


class Store:
    """A thread-safe handle on the sandbox database.

    One connection is shared by every thread and guarded by a lock: SQLite serialises writers
    anyway, and a single connection avoids lock contention between readers and writers in-process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30
        )
        try:
            self._prepare()
        except BaseException:
            self._conn.close()
            raise
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="sandbox-store-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _prepare(self) -> None:
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL keeps every committed transaction across a process crash (SIGKILL); only an
        # operating-system crash or power loss could lose the last few.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=OFF")
        # Checkpoints (copying the WAL into the database, with an fsync) happen in a background
        # thread, on its own connection, instead of inside whichever call's COMMIT crosses the
        # threshold: that call would otherwise wait for the disk.
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        with self._lock:
            self._conn.executescript(SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(delivery_log)")}
            if "body_id" not in columns:  # a data folder from before delivery_bodies
                self._conn.execute("ALTER TABLE delivery_log ADD COLUMN body_id INTEGER")
            self._conn.execute(
                "CREATE INDEX IF NOT EXISTS delivery_log_by_body ON delivery_log (body_id)"
            )

    def _checkpoint_loop(self, every: float = 1.0) -> None:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        try:
            while not self._stop_checkpoints.wait(every):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # busy now: the next round catches up
                    log.debug("background checkpoint skipped: %s", exc)
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the body in one write transaction, committed on success, rolled back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does that).
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Hold the connection for a consistent series of reads."""
        with self._lock:
            yield self._conn

    def query_one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        """Run a query and return its first row, or None."""
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def query_all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return every row."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def doc(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        """Run a query whose first column is a JSON document; return it decoded, or None."""
        row = self.query_one(sql, params)
        return json.loads(row[0]) if row else None

    def docs(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Run a query whose first column is a JSON document; return every document."""
        return [json.loads(row[0]) for row in self.query_all(sql, params)]

    def meta(self, key: str, default_factory: Any) -> str:
        """Return a persistent setting, creating it with ``default_factory()`` the first time."""
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row:
                return row[0]
            value = default_factory()
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            return value

    def next_counter(self, conn: sqlite3.Connection, name: str) -> int:
        """Increment and return a named counter inside the caller's transaction."""
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1",
            (name,),
        )
        return conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    def close_quietly(self) -> None:
        """Close without the final checkpoint: for a database found damaged, left as it is."""
        self._stop_checkpoints.set()
        self._checkpointer.join(5)
        with self._lock:
            self._conn.close()

    def close(self) -> None:
        """Checkpoint the WAL and close the connection."""
        self._stop_checkpoints.set()
        self._checkpointer.join(5)
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
