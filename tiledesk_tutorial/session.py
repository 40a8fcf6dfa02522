"""The ``requests`` session the client sends with: its retry policy, and the two ways to sign.

The client builds and sends each call itself, in one function (``TiledeskClient._call``); this
module holds what its session is made of.

Retries are safe by construction: urllib3 repeats only GET, HEAD, DELETE and OPTIONS after a
response or a dropped connection, and any method only when the connection could not even be
opened (nothing was sent). So a message is never posted twice behind the learner's back.

Statuses retried: 429 (honouring ``Retry-After`` up to :data:`MAX_RETRY_AFTER` seconds), 502, 503
and 504. Not 500: Tiledesk answers 500 for malformed ids and bodies too, which no retry can fix.
PUT (closing a request) is not retried either: closing twice is harmless for the request, but the
server sends the ``request.close`` webhook again, which would confuse a learner watching deliveries.
"""

from __future__ import annotations

from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from tiledesk_tutorial.config import check_http_url
from tiledesk_tutorial.errors import InvalidInputError
from tiledesk_tutorial.redact import redact
from tiledesk_tutorial.wire import bare_token, unverified_claims, with_jwt_prefix

__all__ = [
    "DEFAULT_BACKOFF_FACTOR",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_RETRY_AFTER",
    "RETRY_METHODS",
    "RETRY_STATUSES",
    "BasicAuth",
    "JWTAuth",
    "Timeout",
    "build_session",
    "checked_timeout",
    "normalize_base_url",
    "normalize_token",
]

#: Seconds to wait for a connection and then for an answer, unless the client says otherwise.
DEFAULT_TIMEOUT: float = 15.0
#: How many times a safe call is repeated after a retryable failure.
DEFAULT_RETRIES: int = 2
#: Backoff between retries: 0 s, then ``factor * 2``, ``factor * 4``... seconds.
DEFAULT_BACKOFF_FACTOR: float = 0.5
#: A ``Retry-After`` longer than this (seconds) is not waited for: the call fails at once with
#: :class:`~tiledesk_tutorial.errors.RateLimitError`, whose ``retry_after`` says how long to wait.
MAX_RETRY_AFTER: float = 10.0
#: Methods repeated after a response or a dropped connection.
RETRY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
#: Statuses that make a safe call be repeated.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def normalize_token(token: str) -> str:
    """Return a Tiledesk token as the ``Authorization`` value the server expects: ``JWT <jwt>``.

    Accepts what sign-in returns (``"JWT eyJ..."``), a bare JWT, or ``"jwt eyJ..."``.

    Raises:
        InvalidInputError: the token is empty, uses the ``Bearer`` scheme (Tiledesk answers 401
            to it), or has spaces or line breaks inside.
    """
    if not isinstance(token, str) or not token.strip():
        raise InvalidInputError("the token is empty: pass the `token` value that sign-in returned.")
    value = token.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        raise InvalidInputError(
            "this token uses the `Bearer` scheme, which Tiledesk rejects (401): Tiledesk wants "
            "`Authorization: JWT <token>`. Pass the token as sign-in returned it (it starts with "
            "'JWT '), or the bare JWT."
        )
    if scheme.lower() == "jwt" and rest:
        value = bare_token(value)
    if any(c.isspace() for c in value):
        raise InvalidInputError(
            "the token has spaces or line breaks inside: copy it again, in one piece "
            "(a JWT looks like xxxxx.yyyyy.zzzzz)."
        )
    return with_jwt_prefix(value)


def normalize_base_url(base_url: str) -> str:
    """Check and tidy a base URL: ``http(s)://host[:port][/prefix]``, without a trailing ``/``.

    Raises:
        InvalidInputError: not an http(s) URL, or it carries a query or fragment.
    """
    return check_http_url(base_url, "the base URL")


class JWTAuth(AuthBase):
    """Send ``Authorization: JWT <jwt>``; the token is normalised once, here, and never shown."""

    def __init__(self, token: str) -> None:
        self.token = normalize_token(token)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self.token
        return r

    @property
    def subject(self) -> str | None:
        """The token's ``sub`` claim (``"user"`` or ``"guest"``), read without verification."""
        sub = unverified_claims(self.token).get("sub")
        return sub if isinstance(sub, str) else None

    def __repr__(self) -> str:
        return f"JWTAuth({redact(self.token)!r})"


class BasicAuth(HTTPBasicAuth):
    """HTTP Basic with the account's email and password (as the tutorial's webhook section does)."""

    def __repr__(self) -> str:
        return f"BasicAuth({self.username!r}, '***')"


class _Retry(Retry):
    """urllib3's Retry, but a ``Retry-After`` above :data:`MAX_RETRY_AFTER` stops retrying."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        **kw: Any,
    ) -> Retry:
        if response is not None and self.respect_retry_after_header:
            after = self.get_retry_after(response)
            if after is not None and after > MAX_RETRY_AFTER:
                raise MaxRetryError(
                    _pool,
                    url or "",
                    ResponseError(f"Retry-After {after:g} s is longer than {MAX_RETRY_AFTER:g} s"),
                )
        return super().increment(method, url, response, error, _pool, **kw)


def build_session(
    *, retries: int = DEFAULT_RETRIES, backoff_factor: float = DEFAULT_BACKOFF_FACTOR
) -> requests.Session:
    """A ``requests.Session`` with safe retries mounted, and cookies ignored.

    Tiledesk sets a ``connect.sid`` session cookie that the API does not need; ignoring it keeps an
    agent's and a visitor's clients that share one session independent.
    """
    if retries < 0:
        raise InvalidInputError(f"retries must be 0 or more, not {retries!r}.")
    if backoff_factor < 0:
        raise InvalidInputError(f"backoff_factor must be 0 or more, not {backoff_factor!r}.")
    retry = _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=0,
        allowed_methods=RETRY_METHODS,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_factor,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.cookies.set_policy(_NoCookies())
    return session


class _NoCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False


Timeout = float | tuple[float, float]


def checked_timeout(timeout: Timeout) -> Timeout:
    """``timeout`` if it is a positive number of seconds or a ``(connect, read)`` pair.

    Raises:
        InvalidInputError: anything else.
    """
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if (
        not values
        or len(values) > 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 for v in values)
    ):
        raise InvalidInputError(
            f"timeout must be a positive number of seconds or a (connect, read) pair, "
            f"not {timeout!r}."
        )
    return timeout
