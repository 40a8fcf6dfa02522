"""A public URL for a notebook's webhook listener, through an ngrok tunnel (pyngrok).

    url = webhook_target(listener, api_url)   # the URL to subscribe with
    ...
    close_tunnel()                            # frees the ngrok session (one per free account)

Tiledesk on this machine (the sandbox, a local server) reaches the listener directly; a Tiledesk
elsewhere (the cloud) needs a public URL: ``TILEDESK_WEBHOOK_URL`` if you have one, else a tunnel.
Every ngrok failure becomes one :class:`TunnelError` that says what happened and what to do next.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyngrok import conf, ngrok, process
from pyngrok.exception import PyngrokError, PyngrokNgrokError, PyngrokNgrokInstallError

from tiledesk_tutorial.config import get_default
from tiledesk_tutorial.errors import TiledeskTutorialError
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.redact import redact, redact_jwts

logger = logging.getLogger("tiledesk_tutorial.tunnel")

SIGNUP_URL = "https://dashboard.ngrok.com/signup"
AUTHTOKEN_URL = "https://dashboard.ngrok.com/get-started/your-authtoken"
AGENTS_URL = "https://dashboard.ngrok.com/agents"
DOWNLOAD_URL = "https://ngrok.com/download"
_DEBUG_HINT = (
    "run ngrok by hand to see its full output (`{ngrok} http {port}`), or turn on pyngrok's DEBUG "
    'logs: logging.basicConfig(); logging.getLogger("pyngrok").setLevel("DEBUG") '
    "(docs/webhooks.md, Troubleshooting ngrok)"
)


class TunnelError(TiledeskTutorialError):
    """ngrok could not open the tunnel. ``code`` names the failure, ``hint`` what to do next.

    Codes: ``no-authtoken``, ``download-failed``, ``not-runnable``, ``offline``, ``ERR_NGROK_108``
    (one session per free account), ``ERR_NGROK_4018`` (authtoken needed), ``ERR_NGROK_105`` /
    ``ERR_NGROK_107`` (authtoken rejected), another ``ERR_NGROK_<n>``, or ``ngrok-error``.
    """

    def __init__(self, message: str, *, code: str, hint: str) -> None:
        self.code = code
        super().__init__(message, hint=hint)


@dataclass
class _Tunnel:
    config: conf.PyngrokConfig
    public_url: str
    upstream: str


_lock = threading.RLock()
_current: _Tunnel | None = None
_authtokens: set[str] = set()


class _RedactAuthtokens(logging.Filter):
    """Hide authtokens in what the ngrok agent logs (ERR_NGROK_105 echoes the token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _authtokens:
            text = record.getMessage()
            scrubbed = text
            for token in _authtokens:
                scrubbed = scrubbed.replace(token, redact(token))
            if scrubbed != text:
                record.msg, record.args = scrubbed, None
        return True


# pyngrok logs every agent line, errors included; with no logging configured, Python would print
# those into the notebook (authtoken and all). A NullHandler keeps them out unless the user turns
# logging on (docs/webhooks.md), and the filter hides the token even then.
logging.getLogger("pyngrok").addHandler(logging.NullHandler())
logging.getLogger("pyngrok.process.ngrok").addFilter(_RedactAuthtokens())


def open_tunnel(
    listener: WebhookListener,
    authtoken: str | None = None,
    *,
    ngrok_path: str | None = None,
    config_path: str | None = None,
    region: str | None = None,
    startup_timeout: int = 15,
) -> str:
    """Expose ``listener`` through ngrok and return its public webhook URL.

    The authtoken comes from ``authtoken``, else ``NGROK_AUTHTOKEN`` (environment or ``.env``),
    else ngrok's own config file; it is never printed. Calling it again in the same process reuses
    the tunnel (re-pointing it if the listener moved to another port), so re-running a cell does
    not start a second ngrok session. ``ngrok_path`` (or ``PYNGROK_NGROK_PATH``, environment or
    ``.env``) selects an installed ngrok instead of the one pyngrok downloads.
    """
    global _current
    port = listener.port
    # The listener's own address, not "localhost", which may resolve to ::1 where it is not bound.
    upstream = f"http://{urlsplit(listener.url).netloc}"
    config = conf.PyngrokConfig(
        ngrok_path=ngrok_path or get_default().ngrok_path,
        config_path=config_path,
        auth_token=_resolve_authtoken(authtoken),
        region=region,
        startup_timeout=startup_timeout,
    )
    if config.auth_token:
        _authtokens.add(config.auth_token)
    with _lock:
        reused = _reuse(config, upstream)
        if reused is not None:
            return reused + listener.path
        if not config.auth_token and not _authtoken_in_ngrok_config(config):
            raise TunnelError(
                "ngrok needs an authtoken and none was found (argument, NGROK_AUTHTOKEN in the "
                "environment or .env, or ngrok's config file).",
                code="no-authtoken",
                hint=(
                    f"sign up at {SIGNUP_URL} (free), copy your authtoken from {AUTHTOKEN_URL} "
                    "and put NGROK_AUTHTOKEN=<your token> in the .env file next to the notebook "
                    "(or pass authtoken=...). If you have a public URL for this listener already, "
                    "set TILEDESK_WEBHOOK_URL instead."
                ),
            )
        try:
            tunnel = ngrok.connect(upstream, "http", _tunnel_name(upstream), pyngrok_config=config)
        except (PyngrokError, OSError) as exc:
            raise _explain(exc, config, port) from None
        public_url = str(tunnel.public_url)
        _current = _Tunnel(config=config, public_url=public_url, upstream=upstream)
        logger.info("ngrok tunnel %s -> %s", public_url, listener.url)
        return public_url + listener.path


def close_tunnel() -> None:
    """Close the tunnel and stop the ngrok agent (freeing the account's session); safe to repeat."""
    global _current
    with _lock:
        current, _current = _current, None
        if current is None:
            return
        try:
            ngrok.disconnect(current.public_url, pyngrok_config=current.config)
        except PyngrokError as exc:
            logger.debug("ngrok disconnect failed (the agent is stopped anyway): %s", exc)
        ngrok.kill(pyngrok_config=current.config)


def current_tunnel_url() -> str | None:
    """The public base URL of this process's tunnel, or ``None`` when there is none."""
    with _lock:
        return _current.public_url if _current is not None else None


def webhook_target(listener: WebhookListener, api_url: str, **tunnel_options: Any) -> str:
    """Choose the URL to subscribe with, for a Tiledesk API at ``api_url``.

    ``TILEDESK_WEBHOOK_URL`` (environment or ``.env``) when set; the listener's local URL when
    the API is on this machine (a loopback address: the sandbox, a local server); otherwise a
    tunnel (:func:`open_tunnel`, with ``tunnel_options``). A Tiledesk in Docker on this machine
    cannot reach 127.0.0.1 of the host: set ``TILEDESK_WEBHOOK_URL`` for it (docs/webhooks.md).
    """
    explicit = get_default().webhook_url
    if explicit:
        return explicit
    if is_loopback_url(api_url):
        return listener.url
    return open_tunnel(listener, **tunnel_options)


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (``localhost``, 127.0.0.0/8 or ``::1``)."""
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- internals ------------------------------------------------------------------------------
def _resolve_authtoken(authtoken: str | None) -> str | None:
    if authtoken:
        return authtoken.strip()
    return get_default().ngrok_authtoken


def _authtoken_in_ngrok_config(config: conf.PyngrokConfig) -> bool:
    """Whether ngrok's own config file holds an authtoken (``ngrok config add-authtoken``)."""
    path = Path(conf.get_config_path(config))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    return any(line.strip().startswith("authtoken:") for line in text.splitlines())


def _reuse(config: conf.PyngrokConfig, upstream: str) -> str | None:
    """The current tunnel's public URL, re-pointed at ``upstream`` if needed; ``None`` if none."""
    global _current
    current = _current
    if current is None:
        return None
    same_agent = (current.config.ngrok_path, current.config.config_path) == (
        config.ngrok_path,
        config.config_path,
    )
    if not same_agent or not process.is_process_running(current.config.ngrok_path):
        close_tunnel()
        return None
    try:
        alive = any(t.public_url == current.public_url for t in ngrok.get_tunnels(current.config))
    except PyngrokError:
        alive = False
    if alive and current.upstream == upstream:
        return current.public_url
    if alive:  # the listener moved: re-point the tunnel within the same agent session
        try:
            ngrok.disconnect(current.public_url, pyngrok_config=current.config)
        except PyngrokError as exc:
            logger.debug("could not disconnect the old tunnel: %s", exc)
    try:
        tunnel = ngrok.connect(
            upstream, "http", _tunnel_name(upstream), pyngrok_config=current.config
        )
    except (PyngrokError, OSError) as exc:
        close_tunnel()
        raise _explain(exc, current.config, urlsplit(upstream).port or 80) from None
    _current = _Tunnel(config=current.config, public_url=str(tunnel.public_url), upstream=upstream)
    return _current.public_url


def _tunnel_name(upstream: str) -> str:
    """A name safe in the agent's API paths (pyngrok's default embeds the upstream URL)."""
    return f"tiledesk-webhook-{urlsplit(upstream).port}-{uuid.uuid4().hex[:8]}"


def _explain(exc: BaseException, config: conf.PyngrokConfig, port: int) -> TunnelError:
    """Turn a pyngrok failure into one message with the next step, without the authtoken."""
    token = config.auth_token
    ngrok_path = config.ngrok_path
    debug = _DEBUG_HINT.format(ngrok=ngrok_path, port=port)
    if isinstance(exc, PyngrokNgrokInstallError):
        return _error(
            f"pyngrok could not download the ngrok agent to {ngrok_path} ({_detail(exc, token)}): "
            "this machine is offline, or a proxy or firewall blocks the download.",
            "download-failed",
            f"download ngrok from {DOWNLOAD_URL} where you can, copy the binary here and set "
            "PYNGROK_NGROK_PATH=/path/to/ngrok (or pass ngrok_path=...). Without ngrok, set "
            "TILEDESK_WEBHOOK_URL to a public URL that reaches this listener.",
            token,
        )
    if isinstance(exc, OSError):
        return _error(
            f"cannot run the ngrok agent at {ngrok_path}: {exc.strerror or exc}.",
            "not-runnable",
            "point PYNGROK_NGROK_PATH (or ngrok_path=...) at the ngrok executable and make sure "
            "it is executable (chmod +x).",
            token,
        )
    code = exc.ngrok_error_code if isinstance(exc, PyngrokNgrokError) else None
    detail = _detail(exc, token)
    if code == "ERR_NGROK_108":
        return _error(
            "ngrok refused a second agent session (ERR_NGROK_108): a free account runs one ngrok "
            "agent at a time, and another is running (another notebook or kernel, or a terminal).",
            code,
            "stop the other one (close_tunnel() in that notebook, Ctrl+C in that terminal, or end "
            f"the session on {AGENTS_URL}), then run this cell again.",
            token,
        )
    if code == "ERR_NGROK_4018":
        return _error(
            "ngrok refused to start without a verified account and authtoken (ERR_NGROK_4018).",
            code,
            f"sign up at {SIGNUP_URL}, copy your authtoken from {AUTHTOKEN_URL}, put "
            "NGROK_AUTHTOKEN=<your token> in .env (or pass authtoken=...) and run this cell again.",
            token,
        )
    if code in ("ERR_NGROK_105", "ERR_NGROK_107"):
        return _error(
            f"ngrok rejected the authtoken {redact(token)} ({code}): it is mistyped, or it was "
            "reset on the dashboard.",
            code,
            f"copy it again from {AUTHTOKEN_URL} into NGROK_AUTHTOKEN (no quotes, no spaces) and "
            "run this cell again.",
            token,
        )
    if "no such host" in detail or "dial tcp" in detail:
        return _error(
            f"the ngrok agent started but could not reach ngrok's servers ({detail}).",
            "offline",
            "check this machine's internet connection (a workshop network may block ngrok; try a "
            "phone hotspot). Behind a proxy, set proxy_url in ngrok's config file. Or set "
            f"TILEDESK_WEBHOOK_URL to a public URL you already have. To see more, {debug}.",
            token,
        )
    return _error(
        f"ngrok failed{f' ({code})' if code else ''}: {detail}.",
        code or "ngrok-error",
        f"{debug}. The error codes are explained at https://ngrok.com/docs/errors/.",
        token,
    )


def _error(message: str, code: str, hint: str, token: str | None) -> TunnelError:
    return TunnelError(_scrub(message, token), code=code, hint=_scrub(hint, token))


def _detail(exc: BaseException, token: str | None) -> str:
    """The first line of what ngrok or pyngrok said, without the authtoken."""
    text = getattr(exc, "ngrok_error", None) or str(exc)
    text = text.replace("\\r", "").replace("\\n", "\n").replace("\r", "")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _scrub(first.rstrip("."), token)


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, redact(token))
    return redact_jwts(text)
