"""The tutorial's configuration: every environment variable the package reads, in one object.

All are optional. With none set, the notebooks use the embedded sandbox; set ``TILEDESK_API_URL``
(and an account) to run the same steps on a real Tiledesk. Values in the process environment win
over the ``.env`` file; loading never changes ``os.environ``.

One process-wide default, like pyngrok's ``conf.get_default()``: :func:`get_default` reads the
environment and ``.env`` once, :func:`set_default` replaces it (``tutorial.start(env_file=...)``
does), and the client, the tunnel, the tutorial, the walkthrough and the realtime feed all read it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values, find_dotenv

from tiledesk_tutorial.errors import ConfigError, InvalidInputError
from tiledesk_tutorial.redact import redact
from tiledesk_tutorial.wire import is_object_id

__all__ = [
    "ENV_VARS",
    "TILEDESK_CLOUD_DASHBOARD_URL",
    "TILEDESK_CLOUD_REALTIME_URL",
    "Config",
    "agent_console_url_for",
    "check_http_url",
    "get_default",
    "import_colab_secrets",
    "load_config",
    "realtime_url_for",
    "set_default",
]

log = logging.getLogger("tiledesk_tutorial.config")

#: The environment variable of each field, with what it is for (``describe()`` shows these).
ENV_VARS: dict[str, str] = {
    "api_url": "TILEDESK_API_URL",
    "project_id": "TILEDESK_PROJECT_ID",
    "email": "TILEDESK_EMAIL",
    "password": "TILEDESK_PASSWORD",
    "realtime_url": "TILEDESK_REALTIME_URL",
    "forward_secret": "TILEDESK_FORWARD_SECRET",
    "ngrok_authtoken": "NGROK_AUTHTOKEN",
    "ngrok_path": "PYNGROK_NGROK_PATH",
    "webhook_url": "TILEDESK_WEBHOOK_URL",
    "listener_port": "TILEDESK_LISTENER_PORT",
    "sandbox_url": "TILEDESK_SANDBOX_URL",
    "home": "TILEDESK_TUTORIAL_HOME",
}

_WHAT = {
    "api_url": "Tiledesk API base URL",
    "project_id": "the 24-hex id of your project",
    "email": "account email",
    "password": "account password",
    "realtime_url": "Realtime API (WebSocket) URL; derived from the API URL when unset",
    "forward_secret": "the x-hook-secret `tiledesk-tutorial listen --forward-to` signs with",
    "ngrok_authtoken": "ngrok authtoken, for a public webhook URL",
    "ngrok_path": "an ngrok agent of your own, instead of pyngrok's download",
    "webhook_url": "public URL that Tiledesk posts webhooks to",
    "listener_port": "the notebooks' webhook listener port, instead of theirs",
    "sandbox_url": "a running sandbox (set by make lab)",
    "home": "the tutorial's folder (default ~/.tiledesk-tutorial)",
}
_HIDDEN = frozenset({"password", "forward_secret"})
_REDACTED = frozenset({"ngrok_authtoken"})
_URLS = frozenset({"api_url", "webhook_url", "sandbox_url"})

#: Tiledesk cloud's Realtime API (developer.tiledesk.com, "Realtime API").
TILEDESK_CLOUD_REALTIME_URL = "wss://eu.rtmv3.tiledesk.com/api/"
#: Where agents of Tiledesk cloud see their conversations.
TILEDESK_CLOUD_DASHBOARD_URL = "https://panel.tiledesk.com/v3/dashboard/"
_CLOUD_API_HOSTS = frozenset({"api.tiledesk.com"})


@dataclass(frozen=True)
class Config:
    """The tutorial's configuration. Every field is ``None`` when its variable is not set.

    Attributes:
        api_url: ``TILEDESK_API_URL``, e.g. ``https://api.tiledesk.com/v3``; ``None`` means the
            embedded sandbox.
        project_id: ``TILEDESK_PROJECT_ID``, the 24-hex id of your project.
        email: ``TILEDESK_EMAIL``, the account to sign in with.
        password: ``TILEDESK_PASSWORD`` (never shown).
        realtime_url: ``TILEDESK_REALTIME_URL``, the Realtime API's WebSocket URL; when unset,
            :meth:`realtime_url_for` derives it from the API URL.
        forward_secret: ``TILEDESK_FORWARD_SECRET``, the webhook secret that ``tiledesk-tutorial
            listen --forward-to`` sends and signs with (never shown); a new one per run if unset.
        ngrok_authtoken: ``NGROK_AUTHTOKEN``, to open a public tunnel to the notebook (redacted).
        ngrok_path: ``PYNGROK_NGROK_PATH``, an ngrok executable to use (pyngrok reads it too).
        webhook_url: ``TILEDESK_WEBHOOK_URL``, a public URL you already have, instead of ngrok.
        listener_port: ``TILEDESK_LISTENER_PORT``, a port for the notebooks' webhook listeners.
        sandbox_url: ``TILEDESK_SANDBOX_URL``, a sandbox running as its own process (``make lab``).
        home: ``TILEDESK_TUTORIAL_HOME``, the tutorial's folder.
        sources: where each set value came from: ``"environment"`` or the ``.env`` file's path.
    """

    api_url: str | None = None
    project_id: str | None = None
    email: str | None = None
    password: str | None = None
    realtime_url: str | None = None
    forward_secret: str | None = None
    ngrok_authtoken: str | None = None
    ngrok_path: str | None = None
    webhook_url: str | None = None
    listener_port: int | None = None
    sandbox_url: str | None = None
    home: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def uses_sandbox(self) -> bool:
        """True when ``TILEDESK_API_URL`` is not set: the tutorial runs on the embedded sandbox."""
        return self.api_url is None

    @property
    def has_credentials(self) -> bool:
        """True when both the email and the password are set."""
        return bool(self.email and self.password)

    @property
    def tutorial_home(self) -> Path:
        """The tutorial's folder: ``TILEDESK_TUTORIAL_HOME``, else ``~/.tiledesk-tutorial``."""
        return self.home if self.home is not None else Path.home() / ".tiledesk-tutorial"

    def realtime_url_for(self, api_url: str | None = None) -> str:
        """Where the Realtime API of ``api_url`` (default: this config's) listens.

        ``TILEDESK_REALTIME_URL`` when set; otherwise derived by :func:`realtime_url_for`.
        """
        if self.realtime_url:
            return self.realtime_url
        base = api_url or self.api_url or self.sandbox_url
        if not base:
            raise ConfigError(
                "no API URL to derive the Realtime API's address from: pass the API's base URL, "
                "or set TILEDESK_REALTIME_URL."
            )
        return realtime_url_for(base)

    def describe(self) -> str:
        """A plain-text table of the variables: which are set, from where, secrets hidden."""
        rows = []
        for name, var in ENV_VARS.items():
            value = getattr(self, name)
            if value is None:
                shown = f"not set ({_WHAT[name]})"
                if name == "api_url":
                    shown = "not set → the embedded sandbox is used"
            else:
                shown = _shown(name, value)
                origin = self.sources.get(name)
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
        return f"Config({', '.join(parts)})"

    def __str__(self) -> str:
        return self.describe()

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (values are taken as given, unchecked)."""
        return replace(self, **changes)


def check_http_url(
    url: Any,
    what: str = "the base URL",
    *,
    allow_query: bool = False,
    error: type[InvalidInputError] = InvalidInputError,
) -> str:
    """Check and tidy an http(s) URL: ``http(s)://host[:port][/path]``, without a trailing ``/``.

    The one check of a server's address, for a setting (``TILEDESK_API_URL``...) and for the
    client's ``base_url`` alike. ``what`` names the value in the message.

    Raises:
        InvalidInputError: (or ``error``) empty, not http(s), or with a query or fragment (unless
            ``allow_query``).
    """
    if not isinstance(url, str) or not url.strip():
        raise error(f"{what} is empty: pass the sandbox's `.url`, or https://api.tiledesk.com/v3.")
    value = url.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        guess = f" Did you mean https://{value}?" if "://" not in value else ""
        raise error(
            f"{what} is {value!r}, which is not an http:// or https:// URL: give a full http:// or "
            f"https:// URL, such as https://api.tiledesk.com/v3 or http://127.0.0.1:3000.{guess}"
        )
    if not allow_query and (parts.query or parts.fragment):
        raise error(f"{what} {value!r} must not have a query (?...) or fragment (#...).")
    return value


def realtime_url_for(api_url: str) -> str:
    """The Realtime API's address derived from an API base URL.

    Tiledesk serves it on the API's own host and port at path ``/`` (``ws://`` for ``http://``,
    ``wss://`` for ``https://``); Tiledesk cloud serves it elsewhere, at
    :data:`TILEDESK_CLOUD_REALTIME_URL`. A self-hosted server behind a proxy (docker-compose puts it
    at ``/ws/``) needs ``TILEDESK_REALTIME_URL``.
    """
    parts = urlsplit(api_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{api_url!r} is not an http:// or https:// API URL.")
    if (parts.hostname or "").lower() in _CLOUD_API_HOSTS:
        return TILEDESK_CLOUD_REALTIME_URL
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, "/", "", ""))


def agent_console_url_for(api_url: str, *, sandbox: bool) -> str | None:
    """Where an agent sees the conversations of the server at ``api_url``.

    The sandbox's agent console (``<api_url>/console``); Tiledesk cloud's dashboard; ``None`` for
    a self-hosted Tiledesk, whose dashboard's address the API's does not tell.
    """
    if sandbox:
        return api_url.rstrip("/") + "/console"
    if (urlsplit(api_url.strip()).hostname or "").lower() in _CLOUD_API_HOSTS:
        return TILEDESK_CLOUD_DASHBOARD_URL
    return None


def load_config(
    env_file: str | os.PathLike[str] | None = ".env",
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the configuration from the environment and, if it exists, the ``env_file``.

    Args:
        env_file: a ``.env`` file. A bare relative name is looked for in the current directory and
            then in its parents (so a notebook in ``notebooks/`` finds the project's ``.env``).
            ``None`` reads the environment only. A missing file is not an error.
        environ: the variables to read instead of ``os.environ`` (for tests).

    Returns:
        The checked :class:`Config`. Empty values count as not set; spaces around values are
        removed; a trailing ``/`` is removed from http(s) URLs.

    Raises:
        ConfigError: a value is malformed (a URL without ``http(s)://``, a project id that is not 24
            hex characters, a port that is no port); the message names the variable and where it
            was set. It is a ``ValueError`` too.
    """
    env = os.environ if environ is None else environ
    file_values: dict[str, str | None] = {}
    file_path = _find_env_file(env_file)
    if file_path is not None:
        file_values = dict(dotenv_values(file_path))

    values: dict[str, Any] = {}
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
    return Config(**values, sources=sources)


_default: Config | None = None
_default_lock = threading.Lock()


def get_default() -> Config:
    """The process-wide configuration: read from the environment and ``.env`` on first use.

    Raises:
        ConfigError: a variable is malformed (see :func:`load_config`).
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = load_config()
        return _default


def set_default(config: Config | None) -> None:
    """Make ``config`` the process-wide configuration; ``None`` reads it again on next use."""
    global _default
    with _default_lock:
        _default = config


def import_colab_secrets(names: tuple[str, ...] | None = None) -> list[str]:
    """In Google Colab, copy the tutorial's variables from the notebook's secrets (the key icon)
    into this kernel's environment, unless already set. Returns the names copied (never values).

    ``names`` defaults to every variable of :data:`ENV_VARS`. Outside Colab this does nothing and
    returns ``[]``.
    """
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return []
    copied = []
    for name in names or tuple(ENV_VARS.values()):
        if os.environ.get(name):
            continue
        try:
            value = userdata.get(name)
        except Exception as exc:  # SecretNotFoundError, NotebookAccessError, TimeoutException
            log.debug("Colab secret %s not read: %s", name, type(exc).__name__)
            continue
        if value:
            os.environ[name] = str(value)
            copied.append(name)
    return copied


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


def _checked(name: str, value: str, where: str) -> Any:
    if name in _URLS:
        return check_http_url(value, where, allow_query=name == "webhook_url", error=ConfigError)
    if name == "realtime_url":
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ConfigError(
                f"{where} is {value!r}: it must be a ws:// or wss:// URL, such as "
                f"{TILEDESK_CLOUD_REALTIME_URL} or ws://localhost:3000/."
            )
    if name == "project_id" and not is_object_id(value):
        raise ConfigError(
            f"{where} is {value!r}: a project id is 24 hexadecimal characters (find it in the "
            "dashboard under Project Settings, or as `project.id` after create_project())."
        )
    if name == "email" and "@" not in value:
        raise ConfigError(f"{where} is {value!r}, which is not an email address.")
    if name == "listener_port":
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ConfigError(f"{where} is {value!r}: a port is a number from 1 to 65535.")
        return int(value)
    if name == "home":
        return Path(value).expanduser()
    return value


def _shown(name: str, value: Any) -> str:
    if name in _HIDDEN:
        return "set (hidden)"
    if name in _REDACTED:
        return redact(value)
    return str(value)
