"""Show an API call as the curl command a learner would type, with its secrets redacted.

The tutorial teaches the Tiledesk API with curl; the notebooks print the same command next to each
Python call. Tokens appear as ``JWT eyJh…(N chars)`` (the way the tutorial abbreviates them), HTTP
Basic credentials as ``-u 'email:***'``, and passwords or secrets in a JSON body as ``"***"``.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from collections.abc import Mapping
from typing import Any

import requests

from tiledesk_tutorial.redact import redact, redact_jwts
from tiledesk_tutorial.wire import JWT_PREFIX, with_jwt_prefix

__all__ = ["TOKEN_VARIABLE", "curl_for_prepared", "render_curl"]

#: The environment variable a runnable curl reads the token from (``client.runnable_curl()``).
TOKEN_VARIABLE = "TILEDESK_TOKEN"  # noqa: S105 (a variable's name, not a secret)

# Headers that requests adds by itself and curl does too (or that do not matter for the lesson).
_IMPLICIT_HEADERS = {"user-agent", "accept", "accept-encoding", "connection", "content-length"}
_SECRET_KEYS = {"password", "secret", "token", "authtoken"}


def render_curl(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    files: Mapping[str, tuple[str, str]] | None = None,
    *,
    token_from: str | None = None,
) -> str:
    """Return ``curl`` arguments for one HTTP call, one option per line, secrets redacted.

    Args:
        method: the HTTP method; ``-X`` is written for everything but GET.
        url: the full URL (with its query string).
        headers: the request headers; requests' defaults are left out.
        body: the request body; JSON is shown compact and with secret fields redacted.
        files: a multipart upload instead of a body: field name -> (file name, media type),
            shown as ``-F 'field=@name;type=...'`` (curl writes the multipart framing itself).
        token_from: the name of an environment variable holding the token: a ``JWT``
            Authorization is then written ``-H "Authorization: $NAME"``, so that a shell runs
            the command as it is, the token never shown.

    Returns:
        A shell-quoted command with ``\\`` line continuations, safe to print.
    """
    method = method.upper()
    lines = [
        f"curl {shlex.quote(url)}" if method == "GET" else f"curl -X {method} {shlex.quote(url)}"
    ]
    auth = None
    for name, value in (headers or {}).items():
        low = name.lower()
        if low == "authorization":
            is_jwt = value.partition(" ")[0].lower() == JWT_PREFIX.strip().lower()
            if token_from is not None and is_jwt:
                auth = f'-H "Authorization: ${token_from}"'  # double quotes: the shell expands it
            else:
                auth = _authorization_option(value)
        elif low not in _IMPLICIT_HEADERS and not (files and low == "content-type"):
            lines.append(f"-H {shlex.quote(f'{name}: {value}')}")
    if auth:
        lines.append(auth)
    for field_name, (file_name, media_type) in (files or {}).items():
        lines.append(f"-F {shlex.quote(f'{field_name}=@{file_name};type={media_type}')}")
    if body and not files:
        lines.append(f"-d {shlex.quote(_body_text(body))}")
    return redact_jwts(" \\\n  ".join(lines))


def curl_for_prepared(
    prepared: requests.PreparedRequest,
    files: Mapping[str, tuple[str, str]] | None = None,
    *,
    token_from: str | None = None,
) -> str:
    """Return the curl command of a ``requests.PreparedRequest`` (see :func:`render_curl`)."""
    return render_curl(
        prepared.method or "GET",
        prepared.url or "",
        dict(prepared.headers),
        prepared.body,
        files,
        token_from=token_from,
    )


def _authorization_option(value: str) -> str:
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user = decoded.partition(":")[0] or "?"
        return f"-u {shlex.quote(f'{user}:***')}"
    if scheme.lower() == JWT_PREFIX.strip().lower():
        shown = redact(with_jwt_prefix(credentials))
        return f"-H {shlex.quote('Authorization: ' + shown)}"
    return f"-H {shlex.quote(f'Authorization: {scheme} ***')}"


def _body_text(body: bytes | str) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return json.dumps(_without_secrets(data), ensure_ascii=False)


def _without_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            k: ("***" if k.lower() in _SECRET_KEYS and v else _without_secrets(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_without_secrets(v) for v in data]
    return data
