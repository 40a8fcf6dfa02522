"""Every error the package raises, and how a failed call becomes one: what went wrong, and what
to do next.

:class:`TiledeskTutorialError` is the one root, with ``hint`` and the short notebook rendering.
Every failed call becomes one :class:`TiledeskError` subclass, chosen from the HTTP status and the
body (Tiledesk has no single error envelope: docs/wire-format.md, "Error answers"): see
:func:`check_answer`. The message names the call, quotes the server, and, where a learner mistake
is likely, adds a ``Hint:`` line. Secrets never appear in it: the builders below scrub the caller's
token and password and redact anything that looks like a JWT.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.client import RemoteDisconnected
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from tiledesk_tutorial.redact import redact_jwts
from tiledesk_tutorial.wire import bare_token, retry_after_seconds

__all__ = [
    "SHORT_TRACEBACKS",
    "AuthenticationError",
    "CallContext",
    "ConfigError",
    "EmailAlreadyRegisteredError",
    "InvalidInputError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "TiledeskConnectionError",
    "TiledeskError",
    "TiledeskTimeoutError",
    "TiledeskTutorialError",
    "UnexpectedResponseError",
    "ValidationError",
    "check_answer",
    "error_for_response",
    "error_for_transport_failure",
]

#: In IPython/Jupyter, show these errors as the learner's line, the message and the hint, without
#: the frames inside this package. Set to ``False`` to get full tracebacks back.
SHORT_TRACEBACKS: bool = True

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_SNIPPET_CHARS = 200
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}
_SANDBOX_HOW_TO_START = (
    "start it in the notebook with `from tiledesk_tutorial import start_sandbox; "
    "sandbox = start_sandbox()` (a kernel restart stops it), or in a terminal with `make sandbox`"
)


class TiledeskTutorialError(Exception):
    """The root of every error this package raises: what went wrong, and what to do next.

    ``str(error)`` is the message and, when there is one, a ``Hint:`` line. In a notebook it shows
    as those lines and the learner's own line, without the frames inside this package (see
    :data:`SHORT_TRACEBACKS`). Secrets given in ``secrets`` (and anything shaped like a JWT) are
    never shown.

    Attributes:
        hint: what to do next, or ``None`` when there is nothing useful to add.
    """

    def __init__(
        self, summary: str, *, hint: str | None = None, secrets: Iterable[str] = ()
    ) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._summary = summary
        self.hint = hint
        super().__init__(self.__str__())

    @property
    def summary(self) -> str:
        """The message without the hint."""
        return _scrub(self._summary, self._secrets)

    def __str__(self) -> str:
        text = self._summary
        if self.hint:
            text += f"\nHint: {self.hint}"
        return _scrub(text, self._secrets)

    @property
    def _render_traceback_(self) -> Callable[[], list[str]]:
        # IPython shows ``_render_traceback_()`` instead of the traceback when it exists.
        if not SHORT_TRACEBACKS:
            raise AttributeError("_render_traceback_")
        return self.short_traceback

    def short_traceback(self) -> list[str]:
        """The lines a notebook shows for this error: the message, the hint, the caller's line."""
        lines = f"{type(self).__name__}: {self}".splitlines()
        caller = _caller_frame(self.__traceback__)
        if caller is not None and caller.line:
            shown = _scrub(caller.line.strip(), self._secrets)
            lines.append(f"Raised by line {caller.lineno}: {shown}")
        lines.append(
            "(Full traceback: tiledesk_tutorial.errors.SHORT_TRACEBACKS = False, then run again.)"
        )
        return lines


class InvalidInputError(TiledeskTutorialError, ValueError):
    """A value given to the package is not what it must be: an argument, or a setting.

    Also a ``ValueError``, so ``except ValueError`` keeps working.
    """


class ConfigError(InvalidInputError):
    """An environment variable (or ``.env`` line) is malformed; the message names it and where it
    was set."""


class TiledeskError(TiledeskTutorialError):
    """A call to Tiledesk failed; the base of every error this package raises for a call.

    Attributes:
        method: the HTTP method of the call (``"POST"``...).
        url: the full URL that was called (Tiledesk never puts tokens in URLs).
        status: the HTTP status, or ``None`` when no answer came back (connection failures).
        reason: the status phrase, e.g. ``"Forbidden"``.
        body: the answer's body, parsed JSON when it was JSON, otherwise its text.
        server_message: the server's own words, read from ``msg``/``message``/``error``/``err``/
            ``errors``, or ``None``.
        hint: what to do next, or ``None`` when there is nothing useful to add.
        curl: the same call as a curl command with secrets redacted.
    """

    def __init__(
        self,
        summary: str,
        *,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        body: Any = None,
        server_message: str | None = None,
        hint: str | None = None,
        secrets: Iterable[str] = (),
        curl: str | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.body = body
        secrets = tuple(s for s in secrets if s)
        self.server_message = (
            _scrub(server_message, secrets) if server_message is not None else None
        )
        self.curl = curl
        super().__init__(summary, hint=hint, secrets=secrets)

    def __str__(self) -> str:
        where = f"{self.method} {self.url}" if self.method and self.url else (self.url or "")
        text = f"{where}: {self._summary}" if where else self._summary
        if self.hint:
            text += f"\nHint: {self.hint}"
        return _scrub(text, self._secrets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.server_message!r})"


class AuthenticationError(TiledeskError):
    """401: no credentials, a token or password the server did not accept."""


class PermissionDeniedError(TiledeskError):
    """403: signed in, but not allowed here (another project's token, a role too low...)."""


class EmailAlreadyRegisteredError(PermissionDeniedError):
    """403 on sign-up: an account with this email exists; sign in instead."""


class NotFoundError(TiledeskError):
    """404, or the 400 "Project not found with id": the thing (or the URL) does not exist."""


class ValidationError(TiledeskError):
    """400/413/422, or a 200 with ``success: false``: the server refused what was sent."""


class RateLimitError(TiledeskError):
    """429: too many calls; ``retry_after`` is the server's ``Retry-After`` in seconds, if any."""

    retry_after: float | None = None


class ServerError(TiledeskError):
    """5xx: the server failed (Tiledesk also uses 500 for some bad inputs, see the hint)."""


class UnexpectedResponseError(TiledeskError):
    """A success status with a body that is not the JSON the API sends: usually a wrong base URL."""


class TiledeskConnectionError(TiledeskError):
    """No answer: nothing listening, a name that does not resolve, TLS failure, a dropped line."""


class TiledeskTimeoutError(TiledeskConnectionError):
    """No answer within the client's timeout."""


@dataclass(frozen=True)
class CallContext:
    """What the client knew about a call, so that an error can say what probably went wrong.

    Attributes:
        operation: the client method, e.g. ``"send_message"``.
        base_url: the client's base URL.
        auth_scheme: ``"none"``, ``"jwt"`` or ``"basic"``.
        caller_kind: the ``sub`` claim of the JWT used (``"user"``, ``"guest"``), if known.
        project_id: the project the call addressed, if any.
        required_role: the lowest membership role the route accepts (``"agent"``, ``"admin"``),
            if known.
        retry_safe: whether repeating the call is harmless (GET, DELETE).
        secrets: values that must never appear in a message (the token, the password).
        curl: the call as a curl command (secrets redacted), kept in the error.
        password_origin: where the password sent came from, for the hint of a wrong one (e.g.
            ``"the password given to sign_in()"``); empty when no password was sent.
    """

    operation: str = ""
    base_url: str = ""
    auth_scheme: str = "none"
    caller_kind: str | None = None
    project_id: str | None = None
    required_role: str | None = None
    retry_safe: bool = True
    secrets: tuple[str, ...] = field(default=(), repr=False)
    curl: str | None = field(default=None, repr=False)
    password_origin: str = ""


def check_answer(response: requests.Response, *, context: CallContext) -> Any:
    """The JSON of a successful answer (``None`` for an empty body), or raise what went wrong.

    A success is a status below 300 whose body is JSON (or empty) and does not say
    ``"success": false``. Anything else raises the :class:`TiledeskError` subclass that fits
    (:func:`error_for_response`), or :class:`UnexpectedResponseError` for a 2xx that is no JSON
    (a web page at the wrong base URL).
    """
    method, url = response.request.method or "GET", response.request.url or ""
    status, reason, text = response.status_code, _reason(response), response.text
    data = _parse_json(text)
    failed = status >= 300 or (isinstance(data, dict) and data.get("success") is False)
    if failed:
        raise error_for_response(
            method=method,
            url=url,
            status=status,
            reason=reason,
            headers=response.headers,
            body_text=text,
            context=context,
        )
    if data is _NOT_JSON and text.strip():
        raise unexpected_body_error(
            method=method,
            url=url,
            status=status,
            reason=reason,
            content_type=response.headers.get("Content-Type", ""),
            body_text=text,
            context=context,
        )
    return None if data is _NOT_JSON else data


def error_for_response(
    *,
    method: str,
    url: str,
    status: int,
    reason: str,
    headers: dict[str, str] | Any,
    body_text: str,
    context: CallContext,
) -> TiledeskError:
    """Build the exception for an answer that is an error (status >= 400, or ``success: false``).

    ``headers`` is any case-insensitive mapping (``requests``' own). The result carries the parsed
    body, the server's message and a hint chosen from the status, the message and ``context``.
    """
    body = _parse_json(body_text)
    is_json = body is not _NOT_JSON
    if not is_json:
        body = body_text
    server_message = _server_message(body) if is_json else None
    quoted = _quote_server(status, reason, server_message, body_text, is_json)
    kwargs: dict[str, Any] = {
        "method": method,
        "url": url,
        "status": status,
        "reason": reason,
        "body": body,
        "server_message": server_message,
        "secrets": context.secrets,
        "curl": context.curl,
    }
    msg = (server_message or "").strip()
    low = msg.lower()

    if 200 <= status < 300:
        hint = None
        if context.operation == "sign_up" and "email and password" in low:
            hint = "sign_up() needs both an email and a password."
        summary = f"the server answered {status} but reported a failure: {msg or body_text!r}"
        return ValidationError(summary, hint=hint, **kwargs)

    summary = f"the server answered {quoted}"

    if 300 <= status < 400:
        location = headers.get("Location") if headers is not None else None
        hint = (
            f"the server redirects to {location}: use that address as the base URL "
            "(often https:// instead of http://)."
            if location
            else "the server redirects elsewhere: check the base URL."
        )
        return UnexpectedResponseError(summary, hint=hint, **kwargs)

    if status == 401:
        return AuthenticationError(summary, hint=_hint_401(low, is_json, context), **kwargs)

    if status == 403:
        if "already registered" in low:
            hint = (
                "an account with this email exists: sign in instead with sign_in(email, password). "
                "On a fresh self-hosted server, where no account can exist yet, this is a known "
                "Tiledesk bug with users without a phone: pass phone=... to sign_up()."
            )
            return EmailAlreadyRegisteredError(summary, hint=hint, **kwargs)
        return PermissionDeniedError(summary, hint=_hint_403(low, context), **kwargs)

    if status == 400 and "project not found" in low:
        hint = (
            f"no active project has this id on {context.base_url}. Check the project id "
            "(TILEDESK_PROJECT_ID, or `project.id` from create_project()); a project made on the "
            "sandbox does not exist on a real Tiledesk, and the reverse."
        )
        return NotFoundError(summary, hint=hint, **kwargs)

    if status == 404:
        return NotFoundError(summary, hint=_hint_404(is_json, body_text, context), **kwargs)

    if status in (400, 413, 422):
        return ValidationError(summary, hint=_hint_validation(status, msg, context), **kwargs)

    if status == 429:
        err = RateLimitError(summary, hint=_hint_429(headers), **kwargs)
        err.retry_after = retry_after_seconds(headers)
        return err

    if status >= 500:
        return ServerError(summary, hint=_hint_5xx(status, low, context), **kwargs)

    return TiledeskError(summary, **kwargs)


def unexpected_body_error(
    *,
    method: str,
    url: str,
    status: int,
    reason: str,
    content_type: str,
    body_text: str,
    context: CallContext,
) -> UnexpectedResponseError:
    """Build the exception for a success status whose body is not JSON (a web page, usually)."""
    kind = "an HTML page" if _looks_like_html(body_text, content_type) else "text that is not JSON"
    hint = (
        f"{context.base_url} does not look like the Tiledesk API (it sent {kind}). Use the API's "
        "address, not the dashboard's: https://api.tiledesk.com/v3 for the cloud, or your server's "
        "root (e.g. http://localhost:3000) for a self-hosted Tiledesk."
    )
    return UnexpectedResponseError(
        f"the server answered {status} {reason} with {kind}: {_snippet(body_text)!r}",
        method=method,
        url=url,
        status=status,
        reason=reason,
        body=body_text,
        hint=hint,
        secrets=context.secrets,
        curl=context.curl,
    )


def error_for_transport_failure(
    exc: BaseException, *, method: str, url: str, context: CallContext
) -> TiledeskConnectionError:
    """Turn a ``requests``/``urllib3`` transport failure into a :class:`TiledeskConnectionError`.

    The kind of failure is read from the exception classes in ``exc``'s chain (requests wraps
    urllib3, which wraps the socket's own error), never from their messages.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    where = f"{host}:{parts.port}" if parts.port else host
    chain = _exception_chain(exc)

    def caused_by(*kinds: type[BaseException]) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    kwargs: dict[str, Any] = {
        "method": method,
        "url": url,
        "secrets": context.secrets,
        "curl": context.curl,
    }
    maybe_sent = (
        ""
        if context.retry_safe
        else " The request may have reached the server: check (for example with list_messages()) "
        "before sending it again, so as not to post it twice."
    )

    if caused_by(requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError):
        hint = "the server is slow or stuck: try again, or give the client a larger timeout=."
        return TiledeskTimeoutError(
            "no answer within the client's timeout (read timeout).",
            hint=hint + maybe_sent,
            **kwargs,
        )
    if caused_by(urllib3.exceptions.NameResolutionError, socket.gaierror):
        return TiledeskConnectionError(
            f"the host name {host!r} could not be resolved.",
            hint="check the spelling of the base URL (TILEDESK_API_URL) and your network; "
            "on a workshop network, a proxy or captive portal may need a login first.",
            **kwargs,
        )
    if caused_by(ConnectionRefusedError):
        if host in _LOOPBACK_HOSTS or host.startswith("127."):
            hint = (
                f"nothing is listening on {where}. If you use the embedded sandbox, it is not "
                f"running (or runs on another port): {_SANDBOX_HOW_TO_START}. If you run your own "
                "Tiledesk there, start it."
            )
        else:
            hint = f"{where} refused the connection: check the host and port of the base URL."
        return TiledeskConnectionError(
            f"could not connect to {where} (connection refused).", hint=hint, **kwargs
        )
    if caused_by(requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError):
        return TiledeskTimeoutError(
            f"could not connect to {where} within the client's timeout.",
            hint="the host did not answer: check the URL, your network, or a firewall/proxy.",
            **kwargs,
        )
    if caused_by(requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError):
        return TiledeskConnectionError(
            f"the TLS (https) handshake with {where} failed.",
            hint="use http:// for a local server, or check the certificate of your server "
            "(a corporate proxy may intercept https).",
            **kwargs,
        )
    if caused_by(urllib3.exceptions.ProtocolError, ConnectionResetError, RemoteDisconnected):
        return TiledeskConnectionError(
            f"the connection to {where} was closed before an answer came.",
            hint=("try again." if context.retry_safe else maybe_sent.strip()),
            **kwargs,
        )
    return TiledeskConnectionError(
        f"the call failed before an answer came: {type(exc).__name__}: {_snippet(str(exc))}",
        hint="check the base URL and your network.",
        **kwargs,
    )


# --- hints -----------------------------------------------------------------------------------


def _hint_401(low: str, is_json: bool, context: CallContext) -> str:
    if "wrong password" in low:
        origin = context.password_origin or "the password"
        return f"the email exists but the password is wrong: check {origin}."
    if "user not found" in low:
        return (
            "no active account has this email on this server: check TILEDESK_EMAIL, or sign up "
            "first (an account made on the sandbox does not exist on a real Tiledesk)."
        )
    if context.auth_scheme == "none":
        return (
            "this call needs credentials and none were sent: sign in first (client.sign_in(...) "
            "or client.sign_in_anonymously(project_id)), or pass token=... to the client."
        )
    if context.auth_scheme == "basic":
        return "the server did not accept this email and password (HTTP Basic): check both."
    return (
        "the server did not accept the token. Send the `token` value that sign-in returned, "
        "as `Authorization: JWT <token>` (Tiledesk wants `JWT `, not `Bearer `). A token from "
        "another server (sandbox vs. real Tiledesk) or another database is not valid here: "
        "sign in again."
    )


def _hint_403(low: str, context: CallContext) -> str | None:
    project = f" {context.project_id}" if context.project_id else ""
    if "belong to the project" in low:
        if context.caller_kind == "guest":
            return (
                f"this visitor token was issued for another project: anonymous tokens are valid "
                f"in one project only. Sign in anonymously again with the id of project{project}."
            )
        return (
            f"the signed-in account is not a member of project{project}. Check the project id "
            "(TILEDESK_PROJECT_ID) or sign in with an account of that project. A visitor token "
            "is valid only in the project it was issued for."
        )
    if "required role" in low:
        role = context.required_role
        needs = f"the {role} role or higher" if role else "a higher role"
        if context.caller_kind == "guest":
            return (
                f"you are calling as an anonymous visitor (a guest token), and this route needs "
                f"{needs}. Make this call with the agent's client (signed in with email and "
                "password). A visitor can send and read messages, list its own conversations "
                "(list_my_requests()) and close them (close_request_as_visitor())."
            )
        return f"this route needs {needs} in the project; your account's role is lower."
    if low.startswith("unauthorized"):
        return (
            "the Authorization header must be exactly `JWT <token>`, with one space: pass the "
            "token as sign-in returned it."
        )
    if "participants" in low:
        return "only the conversation's participants, or the project's owner/admin, may close it."
    return None


def _hint_404(is_json: bool, body_text: str, context: CallContext) -> str | None:
    if is_json:
        return "check the id: it does not exist in this project (or was deleted)."
    path = urlsplit(context.base_url).path.rstrip("/")
    if re.search(r"/v\d+$", path):
        fix = (
            f"the base URL ends with {path!r}; a self-hosted Tiledesk serves the API at its root "
            "(e.g. http://localhost:3000), only the cloud gateway adds /v3"
        )
    else:
        fix = "the Tiledesk cloud needs the /v3 prefix: https://api.tiledesk.com/v3"
    return (
        f"the server has no such route, which usually means a wrong base URL ({context.base_url}): "
        f"{fix}."
    )


def _hint_validation(status: int, msg: str, context: CallContext) -> str | None:
    m = re.match(r"invalid project id:\s*(\S*)", msg, re.IGNORECASE)
    if m:
        got = m.group(1)
        path = urlsplit(context.base_url).path.rstrip("/")
        if got and path.endswith("/" + got):
            return (
                f"the server read {got!r} from your base URL as a project id: this server serves "
                f"the API at its root, so remove {'/' + got!r} from the base URL "
                f"({context.base_url})."
            )
        return "a project id is 24 hexadecimal characters, such as `project.id`."
    if status == 413:
        return "the body is too large for the server (500 KB by default): send less."
    if "text field is required" in msg.lower():
        return "the first message of a conversation needs a text."
    return None


def _hint_429(headers: Any) -> str:
    after = retry_after_seconds(headers)
    wait = f"wait {after:g} s" if after is not None else "wait a little"
    return f"too many calls in a short time: {wait} and try again (GET calls retry by themselves)."


def _hint_5xx(status: int, low: str, context: CallContext) -> str | None:
    if "error creating request" in low:
        return (
            "the server could not create the conversation. Request ids are unique across all "
            "projects (use new_request_id()), and a free plan limits conversations per month."
        )
    if status == 507:
        return (
            "the server has no room to store this: nothing was saved. Free some space on its disk "
            "(on the sandbox, a project's chat files are bounded: use a new project), then retry."
        )
    if status == 500:
        return (
            "Tiledesk also answers 500 for malformed ids and bodies: check the ids you passed. "
            "If they are right, the server failed; try again later."
        )
    return "the server or a gateway in front of it is failing or overloaded; try again shortly."


# --- helpers ---------------------------------------------------------------------------------

_NOT_JSON = object()


def _parse_json(text: str) -> Any:
    if not text.strip():
        return _NOT_JSON
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON


def _server_message(body: Any) -> str | None:
    """Read the server's words from any of Tiledesk's error shapes (docs/wire-format.md)."""
    if isinstance(body, str):
        return body
    if not isinstance(body, dict):
        return None
    for key in ("msg", "message", "error", "err"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            return value["message"]
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        parts = []
        for item in errors:
            if isinstance(item, dict):
                # express-validator: {value, msg, param, location}; never show `value` (a password?)
                param = item.get("param") or item.get("path")
                text = str(item.get("msg") or "invalid")
                parts.append(f"{param}: {text}" if param else text)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return None


def _quote_server(
    status: int, reason: str, server_message: str | None, body_text: str, is_json: bool
) -> str:
    head = f"{status} {reason}".strip()
    if server_message:
        return f"{head}: {server_message!r}"
    if body_text.strip() and body_text.strip().lower() == reason.strip().lower():
        return f"{head} (plain text, no JSON)"
    if body_text.strip():
        html = _looks_like_html(body_text, "")
        what = "JSON" if is_json else ("an HTML page" if html else "text")
        return f"{head} with {what}: {_snippet(body_text)!r}"
    return f"{head} with an empty body"


def _reason(response: requests.Response) -> str:
    """The standard reason phrase ("Forbidden"), whatever case the server wrote it in."""
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return response.reason or ""


def _looks_like_html(text: str, content_type: str) -> bool:
    return "html" in content_type.lower() or text.lstrip()[:15].lower().startswith(
        ("<!doctype", "<html")
    )


def _snippet(text: str) -> str:
    if "<" in text:
        inner = re.search(r"<pre>(.*?)</pre>", text, re.DOTALL | re.IGNORECASE)
        text = inner.group(1) if inner else re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"


def _exception_chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend([e.__cause__, e.__context__, getattr(e, "reason", None)])
        todo.extend(a for a in e.args if isinstance(a, BaseException))
    return seen


def _caller_frame(tb: Any) -> traceback.FrameSummary | None:
    """The last frame before the call entered this package: the learner's own line."""
    caller = None
    for frame in traceback.extract_tb(tb):
        if str(Path(frame.filename).resolve()).startswith(_PACKAGE_DIR):
            break
        caller = frame
    return caller


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        bare = bare_token(secret)
        if len(bare) >= 4:
            text = text.replace(bare, "***")
    return redact_jwts(text)
