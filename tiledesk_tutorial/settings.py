"""Settings from the environment and an optional ``.env`` file, checked and shown without secrets.

Six variables configure the tutorial; all are optional. With none set, the notebooks use the
embedded sandbox; set ``TILEDESK_API_URL`` (and an account) to run the same steps on a real
Tiledesk. Values in the process environment win over the ``.env`` file; loading never changes
``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values, find_dotenv

from tiledesk_tutorial.redact import redact

__all__ = ["ENV_VARS", "Settings", "load_settings"]

#: Environment variable for each settings field.
ENV_VARS: dict[str, str] = {
    "api_url": "TILEDESK_API_URL",
    "project_id": "TILEDESK_PROJECT_ID",
    "email": "TILEDESK_EMAIL",
    "password": "TILEDESK_PASSWORD",
    "ngrok_authtoken": "NGROK_AUTHTOKEN",
    "webhook_url": "TILEDESK_WEBHOOK_URL",
}

_PROJECT_ID_RE = re.compile(r"^[0-9a-fA-F]{24}$")
_HIDDEN = ("password",)
_REDACTED = ("ngrok_authtoken",)
_WHAT = {
    "api_url": "Tiledesk API base URL",
    "project_id": "the 24-hex id of your project",
    "email": "account email",
    "password": "account password",
    "ngrok_authtoken": "ngrok authtoken, for a public webhook URL",
    "webhook_url": "public URL that Tiledesk posts webhooks to",
}


@dataclass(frozen=True)
class Settings:
    """The tutorial's configuration. Every field is ``None`` when its variable is not set.

    Attributes:
        api_url: ``TILEDESK_API_URL``, e.g. ``https://api.tiledesk.com/v3``; ``None`` means the
            embedded sandbox.
        project_id: ``TILEDESK_PROJECT_ID``, the 24-hex id of your project.
        email: ``TILEDESK_EMAIL``, the account to sign in with.
        password: ``TILEDESK_PASSWORD`` (never shown).
        ngrok_authtoken: ``NGROK_AUTHTOKEN``, to open a public tunnel to the notebook (redacted).
        webhook_url: ``TILEDESK_WEBHOOK_URL``, a public URL you already have, instead of ngrok.
        sources: where each set value came from: ``"environment"`` or the ``.env`` file's path.
    """

    api_url: str | None = None
    project_id: str | None = None
    email: str | None = None
    password: str | None = None
    ngrok_authtoken: str | None = None
    webhook_url: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def uses_sandbox(self) -> bool:
        """True when ``TILEDESK_API_URL`` is not set: the tutorial runs on the embedded sandbox."""
        return self.api_url is None

    @property
    def has_credentials(self) -> bool:
        """True when both the email and the password are set."""
        return bool(self.email and self.password)

    def describe(self) -> str:
        """A plain-text table of the variables: which are set, from where, secrets hidden."""
        rows = []
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            var = ENV_VARS[f.name]
            if value is None:
                shown = f"not set ({_WHAT[f.name]})"
                if f.name == "api_url":
                    shown = "not set → the embedded sandbox is used"
            else:
                shown = _shown(f.name, value)
                origin = self.sources.get(f.name)
                if origin:
                    shown += f"  (from {origin})"
            rows.append((var, shown))
        width = max(len(var) for var, _ in rows)
        return "\n".join(f"{var:<{width}}  {shown}" for var, shown in rows)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            parts.append(f"{f.name}={_shown(f.name, value) if value is not None else None!r}")
        return f"Settings({', '.join(parts)})"

    def __str__(self) -> str:
        return self.describe()


def load_settings(
    env_file: str | os.PathLike[str] | None = ".env",
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the settings from the environment and, if it exists, the ``env_file``.

    Args:
        env_file: a ``.env`` file. A bare relative name is looked for in the current directory and
            then in its parents (so a notebook in ``notebooks/`` finds the project's ``.env``).
            ``None`` reads the environment only. A missing file is not an error.
        environ: the variables to read instead of ``os.environ`` (for tests).

    Returns:
        The checked :class:`Settings`. Empty values count as not set; spaces around values are
        removed; a trailing ``/`` is removed from URLs.

    Raises:
        ValueError: a value is malformed (a URL without ``http(s)://``, a project id that is not 24
            hex characters); the message names the variable and where it was set.
    """
    env = os.environ if environ is None else environ
    file_values: dict[str, str | None] = {}
    file_path = _find_env_file(env_file)
    if file_path is not None:
        file_values = dict(dotenv_values(file_path))

    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for name, var in ENV_VARS.items():
        raw = env.get(var)
        origin = "environment"
        if raw is None or not raw.strip():
            raw, origin = file_values.get(var), str(file_path)
        value = raw.strip() if isinstance(raw, str) else None
        if value:
            values[name] = _checked(name, value, f"{var} (from {origin})")
            sources[name] = origin
        else:
            values[name] = None
    return Settings(**values, sources=sources)


def _find_env_file(env_file: str | os.PathLike[str] | None) -> Path | None:
    if env_file is None:
        return None
    path = Path(env_file)
    if path.is_file():
        return path.resolve()
    if len(path.parts) == 1:
        found = find_dotenv(path.name, usecwd=True)
        if found:
            return Path(found)
    return None


def _checked(name: str, value: str, where: str) -> str:
    if name in ("api_url", "webhook_url"):
        value = value.rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            guess = f" Did you mean https://{value}?" if "://" not in value else ""
            raise ValueError(
                f"{where} is {value!r}: it must be a full http:// or https:// URL, such as "
                f"https://api.tiledesk.com/v3.{guess}"
            )
    if name == "project_id" and not _PROJECT_ID_RE.match(value):
        raise ValueError(
            f"{where} is {value!r}: a project id is 24 hexadecimal characters (find it in the "
            "dashboard under Project Settings, or as `project.id` after create_project())."
        )
    if name == "email" and "@" not in value:
        raise ValueError(f"{where} is {value!r}, which is not an email address.")
    return value


def _shown(name: str, value: str) -> str:
    if name in _HIDDEN:
        return "set (hidden)"
    if name in _REDACTED:
        return redact(value)
    return value
