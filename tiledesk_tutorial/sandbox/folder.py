"""The sandbox's data folder: one running sandbox per folder, and its faults as one-line errors.

Two sandboxes on one folder would each send the other's pending deliveries (twice the webhooks
after a restart) and never see the other's new subscriptions, so the first one takes an exclusive
``flock`` on ``<folder>/sandbox.lock`` for as long as it runs, and writes its pid and URL there for
the second one's error. The kernel drops the lock when the process ends, however it ends: a lock
file left by a ``kill -9`` never blocks the next start.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
from pathlib import Path

from tiledesk_tutorial.sandbox import wal
from tiledesk_tutorial.sandbox.errors import SandboxError
from tiledesk_tutorial.sandbox.store import Store

log = logging.getLogger("tiledesk_tutorial.sandbox.folder")

LOCK_NAME = "sandbox.lock"
DB_NAME = "sandbox.sqlite3"


class DataFolderError(SandboxError):
    """The data folder cannot be used: another sandbox runs on it, it cannot be written, its disk
    is full, or its database is damaged."""


def describe_os_error(folder: Path, exc: OSError) -> DataFolderError:
    """An operating-system error on the data folder, as one line naming the folder."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataFolderError(
            f"The data folder {folder} cannot be written ({exc.strerror}).",
            hint="Give the sandbox a folder you can write to (--data FOLDER, "
            "start_sandbox(data_dir=...)), or fix its permissions.",
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataFolderError(
            f"The disk of the data folder {folder} is full.",
            hint="Free some space on that disk, or use a folder on another one.",
        )
    return DataFolderError(
        f"The data folder {folder} cannot be used: {exc.strerror or exc}.",
        hint="Give the sandbox another folder (--data FOLDER).",
    )


class FolderLock:
    """The exclusive lock on a data folder, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, url: str) -> None:
        """Take the lock and record this process's pid and ``url`` in it.

        Raises :class:`DataFolderError` when another sandbox holds it (naming its URL) or when the
        folder cannot be created or written.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise describe_os_error(self.folder, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataFolderError(
                f"Another sandbox is already running on the data folder {self.folder}"
                f"{f' ({holder})' if holder else ''}.",
                hint="Use that one, stop it first, or give this one another folder "
                "(--data FOLDER).",
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} {url}\n".encode(), 0)
            if not os.access(self.folder, os.W_OK):  # the lock file was there already
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self.folder))
        except OSError as exc:
            os.close(fd)
            raise describe_os_error(self.folder, exc) from None
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: removing it could race with the next sandbox)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    parts = text.split()
    if len(parts) == 3 and parts[0] == "pid":
        return f"process {parts[1]}, {parts[2]}"
    return ""


def open_store(folder: Path, *, repair: bool = False) -> Store:
    """Open the folder's database after checking it; every fault is one :class:`DataFolderError`.

    A WAL whose tail is damaged is refused (SQLite would drop the damaged transactions without a
    word) unless ``repair``: then the damaged file moves aside and its good prefix is kept. The
    database itself is checked with ``PRAGMA quick_check`` (a few ms for a workshop's data).
    """
    folder = Path(folder)
    path = folder / DB_NAME
    wal_path = folder / f"{DB_NAME}-wal"
    try:
        found = wal.check(wal_path)
    except OSError as exc:
        raise describe_os_error(folder, exc) from None
    if found is not None and found.damaged:
        if not repair:
            raise DataFolderError(
                f"The database's write-ahead log in the data folder {folder} is damaged "
                f"(after {found.frames} good frames): some saved data may be missing.",
                hint="Start once with --repair (start_sandbox(repair=True)) to keep what is intact "
                "and move the damaged file aside, or use another folder.",
            )
        aside = wal.repair(wal_path)
        log.warning("moved the damaged write-ahead log aside to %s; kept its good part", aside)
    try:
        store = Store(path)
    except sqlite3.DatabaseError as exc:
        raise describe_database_error(folder, exc) from None
    except OSError as exc:
        raise describe_os_error(folder, exc) from None
    try:
        problems = [row[0] for row in store.query_all("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        store.close_quietly()
        raise describe_database_error(folder, exc) from None
    if problems != ["ok"]:
        store.close_quietly()
        raise damaged(folder, problems[0])
    return store


def damaged(folder: Path, detail: str) -> DataFolderError:
    """The database of ``folder`` is damaged."""
    return DataFolderError(
        f"The database in the data folder {folder} is damaged ({detail[:120]}).",
        hint="Move that folder aside and start with an empty one (--data NEW_FOLDER); "
        "`sqlite3 sandbox.sqlite3 .recover` may save its data.",
    )


def describe_database_error(folder: Path, exc: sqlite3.DatabaseError) -> DataFolderError:
    """A SQLite error on the folder's database, as one line naming the folder."""
    text = str(exc)
    code = getattr(exc, "sqlite_errorname", "")
    if code.startswith("SQLITE_READONLY") or "readonly" in text:
        return describe_os_error(folder, PermissionError(errno.EACCES, "read-only database"))
    if code.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM")):
        return describe_os_error(folder, PermissionError(errno.EACCES, "cannot open database"))
    if code.startswith("SQLITE_FULL") or "disk is full" in text:
        return describe_os_error(folder, OSError(errno.ENOSPC, "disk full"))
    return damaged(folder, text)
