"""Chat files: ``POST /:pid/files/chat`` stores an upload, ``GET /:pid/files?path=`` reads it.

A file is written to the data folder and made durable (fsync of the file, then of its folder)
before its row is committed, so an acknowledged upload survives a crash as messages do. The
extension must be on the real server's allow-list, the size within its limit, and the content
must be what the extension declares (a ``.png`` that is not a PNG is refused). A project's
files together are bounded (``project_limit``, 64 MiB): one room's learners cannot fill the disk.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tiledesk_tutorial.sandbox.errors import ApiError
from tiledesk_tutorial.sandbox.store import Store, dumps
from tiledesk_tutorial.wire import UPLOAD_LIMIT, UPLOAD_TYPES, iso, now

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120
_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF-",),
}
#: What one project's chat files may hold together, by default (Tiledesk has no bound).
PROJECT_FILES_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    """One stored upload: where it is on disk and how it is served."""

    filename: str
    content_type: str
    disk_path: Path


class Files:
    """The chat uploads of every project, kept in ``folder`` and indexed in the store."""

    def __init__(
        self,
        store: Store,
        folder: Path,
        limit: int = UPLOAD_LIMIT,
        project_limit: int = PROJECT_FILES_LIMIT,
    ) -> None:
        self.store = store
        self.folder = folder
        self.limit = limit
        self.project_limit = project_limit
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, project_id: str, uploader_id: str, name: str, data: bytes) -> dict[str, Any]:
        """Check and store one upload; the answer is the real server's 201 body."""
        safe = safe_name(name)
        extension = PurePosixPath(safe).suffix.lower()
        content_type = UPLOAD_TYPES.get(extension)
        if content_type is None:
            shown = extension or "(none)"
            raise ApiError(
                403, {"success": False, "error": f"File extension {shown} is not allowed"}
            )
        if len(data) > self.limit:
            raise ApiError(
                413,
                {"success": False, "error": f"File too large: the limit is {self.limit} bytes"},
            )
        if not content_matches(content_type, data):
            raise ApiError(
                400,
                {
                    "success": False,
                    "error": f"The content of {safe} is not {content_type}: "
                    "send the file with the extension of what it is.",
                },
            )
        file_id = str(uuid.uuid4())
        filename = f"uploads/users/{_SAFE_NAME.sub('_', uploader_id)}/files/{file_id}/{safe}"
        disk_path = self.folder / file_id
        doc = {
            "filename": filename,
            "id_project": project_id,
            "content_type": content_type,
            "size": len(data),
            "uploadedBy": uploader_id,
            "createdAt": iso(now()),
        }
        try:  # a full disk raises here (answered 507); a refused upload leaves no file behind
            _write_durably(disk_path, data)
            with self.store.transaction() as conn:
                # Checked in the write transaction: two uploads at once cannot both take the room.
                self._check_room(conn, project_id, len(data))
                conn.execute(
                    "INSERT INTO files (filename, id_project, disk_name, doc) VALUES (?, ?, ?, ?)",
                    (filename, project_id, file_id, dumps(doc)),
                )
        except BaseException:
            disk_path.unlink(missing_ok=True)
            raise
        return {"message": "File uploaded successfully", "filename": filename}

    def stored_bytes(self, project_id: str) -> int:
        """The size of every chat file of this project, together."""
        with self.store.reading() as conn:
            return _stored_bytes(conn, project_id)

    def _check_room(self, conn: sqlite3.Connection, project_id: str, size: int) -> None:
        """507 when this upload would take the project's files past ``project_limit``."""
        if _stored_bytes(conn, project_id) + size > self.project_limit:
            mib = self.project_limit / (1024 * 1024)
            raise ApiError(
                507,
                {
                    "success": False,
                    "error": f"This project's chat files already hold the sandbox's {mib:g} MiB: "
                    "nothing was saved. Start a new project (or a fresh sandbox) to upload more.",
                },
            )

    def get(self, project_id: str, filename: str) -> StoredFile:
        """The stored file ``filename`` of this project; 404 when there is none."""
        row = self.store.query_one(
            "SELECT disk_name, doc FROM files WHERE filename = ? AND id_project = ?",
            (filename, project_id),
        )
        if row is None:
            raise ApiError(404, {"success": False, "error": "File not found"})
        doc = json.loads(row[1])
        return StoredFile(filename, doc["content_type"], self.folder / row[0])


def _stored_bytes(conn: sqlite3.Connection, project_id: str) -> int:
    row = conn.execute(
        "SELECT COALESCE(SUM(json_extract(doc, '$.size')), 0) FROM files WHERE id_project = ?",
        (project_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def safe_name(name: str) -> str:
    """The last path segment of ``name`` with anything but letters, digits, ``.-_`` replaced."""
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = _SAFE_NAME.sub("_", base).strip("._") or "file"
    stem, dot, extension = cleaned.rpartition(".")
    if dot and len(cleaned) > _MAX_NAME:
        return stem[: _MAX_NAME - len(extension) - 1] + "." + extension
    return cleaned[:_MAX_NAME]


def content_matches(content_type: str, data: bytes) -> bool:
    """Whether ``data`` is what ``content_type`` says (magic bytes; text is UTF-8 without NUL)."""
    if content_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return b"\x00" not in data
    return any(data.startswith(magic) for magic in _MAGIC[content_type])


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".part")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
