"""What carries the tutorial from one notebook to the next: its account, and a small state file.

Each notebook is its own kernel, so the tutorial keeps ``<home>/state.json`` (``<home>`` is
``TILEDESK_TUTORIAL_HOME`` or ``~/.tiledesk-tutorial``), keyed by the API's base URL: the account's
email and the project id, and, for a sandbox only, the generated password of the throw-away local
account. A real Tiledesk password is never written anywhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiledesk_tutorial.wire import iso, now

__all__ = ["Account", "TutorialState", "new_local_account"]

log = logging.getLogger("tiledesk_tutorial.state")


@dataclass(frozen=True)
class Account:
    """The tutorial's Tiledesk account: ``email`` and ``password`` (never shown).

    ``local`` is True for the throw-away account the tutorial makes on a sandbox.
    """

    email: str
    password: str = field(repr=False)
    local: bool = False

    def __repr__(self) -> str:
        kind = "throw-away sandbox account" if self.local else "your account"
        return f"Account(email={self.email!r}, password=<hidden>, {kind})"


def new_local_account() -> Account:
    """A throw-away account for a sandbox: a random email and password."""
    return Account(
        email=f"learner-{secrets.token_hex(3)}@example.com",
        password=secrets.token_urlsafe(12),
        local=True,
    )


class TutorialState:
    """The small JSON file that carries the tutorial from one notebook (kernel) to the next.

    Entries are keyed by the API's base URL. A sandbox entry may hold the throw-away account's
    password; a live entry never does (:meth:`update` refuses it). ``path=None`` keeps the state in
    memory only (the walkthrough's private sandbox).
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, dict[str, Any]] = {}

    def get(self, api_url: str) -> dict[str, Any]:
        """What is known about the server at ``api_url`` (an empty dict when nothing is)."""
        return dict(self._read().get(_key(api_url), {}))

    def update(self, api_url: str, *, live: bool, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into the entry for ``api_url`` and save; ``None`` removes a key."""
        if live and values.get("password"):
            raise ValueError("a real Tiledesk password is never stored in the tutorial's state")
        servers = self._read()
        entry = dict(servers.get(_key(api_url), {}))
        entry.update(values)
        entry = {k: v for k, v in entry.items() if v is not None}
        if live:
            entry.pop("password", None)
        entry["mode"] = "live" if live else "sandbox"
        entry["updated_at"] = iso(now())
        servers[_key(api_url)] = entry
        self._write(servers)
        return dict(entry)

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None:
            return {k: dict(v) for k, v in self._memory.items()}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable tutorial state %s: %s", self.path, exc)
            return {}
        servers = data.get("servers") if isinstance(data, dict) else None
        if not isinstance(servers, dict):
            return {}
        return {k: v for k, v in servers.items() if isinstance(v, dict)}

    def _write(self, servers: dict[str, dict[str, Any]]) -> None:
        if self.path is None:
            self._memory = servers
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": self.VERSION, "servers": servers}, indent=2, sort_keys=True)
        # Write a private temporary file and rename it: readers never see half a file.
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _key(api_url: str) -> str:
    return api_url.rstrip("/")
