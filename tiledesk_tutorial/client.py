"""``TiledeskClient``: every call of the tutorial, one method each, against any Tiledesk server.

The same code talks to the embedded sandbox and to a real Tiledesk (the cloud at
``https://api.tiledesk.com/v3``, or a self-hosted server): only the base URL changes.

A typical notebook plays both sides of a conversation with two clients::

    agent = TiledeskClient(sandbox.url)
    agent.sign_up("ada@example.com", "Passw0rd!", "Ada", "Agent")
    agent.sign_in("ada@example.com", "Passw0rd!")
    project = agent.create_project("Tutorial")

    visitor = agent.as_visitor(project.id, firstname="John")
    request_id = new_request_id(project.id)
    visitor.send_message(request_id, "Hello, I need help")
    agent.send_message(request_id, "Hi John, how can I help?", project_id=project.id)

Each call leaves its curl equivalent in ``client.last_curl`` (secrets redacted); with
``show_curl=True`` the client prints it before sending. Every call goes through one short
function, :meth:`TiledeskClient._call`: the ``requests`` call, its curl, and the error it becomes.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests

from tiledesk_tutorial import wire
from tiledesk_tutorial.config import Config, get_default
from tiledesk_tutorial.curl import TOKEN_VARIABLE, curl_for_prepared
from tiledesk_tutorial.errors import (
    CallContext,
    InvalidInputError,
    TiledeskError,
    UnexpectedResponseError,
    check_answer,
    error_for_transport_failure,
)
from tiledesk_tutorial.models import (
    AuthResult,
    DeliveryLog,
    DownloadedFile,
    Event,
    Message,
    Project,
    ProjectMembership,
    Request,
    RequestPage,
    ResentDelivery,
    Subscription,
    UploadedFile,
    User,
)
from tiledesk_tutorial.session import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    RETRY_METHODS,
    BasicAuth,
    JWTAuth,
    Timeout,
    build_session,
    checked_timeout,
    normalize_base_url,
)
from tiledesk_tutorial.wire import REQUEST_STATUS, SECRET_HEADER, is_object_id

__all__ = ["TiledeskClient", "new_request_id"]

log = logging.getLogger("tiledesk_tutorial.client")

_MAX_LIMIT = 100  # Tiledesk silently falls back to 40 above this (docs/wire-format.md)
HISTORY_PAGE = 40  # entries per page of /subscriptions/history
_STATUS_BY_NAME = {name.lower(): code for code, name in REQUEST_STATUS.items()}


def new_request_id(project_id: str) -> str:
    """A fresh conversation id in Tiledesk's own format: ``support-group-<project_id>-<32 hex>``.

    The first message sent to a new id creates the conversation. Ids are unique across all
    projects of a server, so always make a new one rather than reusing an old one.
    """
    return wire.new_request_id(_check_project_id(project_id))


class TiledeskClient:
    """A Tiledesk REST client for the tutorial: sign in, send messages, manage webhooks.

    Args:
        base_url: the API's address: the sandbox's ``.url``, ``https://api.tiledesk.com/v3`` for
            the cloud, or a self-hosted server's root such as ``http://localhost:3000``.
        token: a token to use right away (``"JWT eyJ..."`` or the bare JWT).
        email: the account's email, used by :meth:`sign_in` and :meth:`use_basic_auth`.
        password: the account's password (kept private, never shown).
        project_id: the project that calls address when they are not given one.
        timeout: seconds to wait for a connection and for each answer, or a ``(connect, read)``
            pair.
        retries: how many times a safe call (GET, DELETE) is repeated after a connection error,
            a 429 or a 502/503/504. Sending a message is never repeated automatically.
        backoff_factor: the pause between retries grows as ``factor * 2**n`` seconds.
        show_curl: print each call's curl equivalent before sending it.
        session: a ``requests.Session`` to use (its adapters and retries are kept as they are).

    Attributes:
        user: the signed-in user (after :meth:`sign_in` or :meth:`sign_in_anonymously`).
        last_curl: the most recent call as a curl command (secrets redacted), or ``None``.
        show_curl: whether to print each call's curl command.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        email: str | None = None,
        password: str | None = None,
        project_id: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        show_curl: bool = False,
        session: requests.Session | None = None,
    ) -> None:
        self._init(
            normalize_base_url(base_url),
            checked_timeout(timeout),
            session or build_session(retries=retries, backoff_factor=backoff_factor),
            owns_session=session is None,
        )
        self._email = email
        self._password = password
        self.project_id = project_id
        self.show_curl = show_curl
        if token is not None:
            self.use_token(token)

    def _init(
        self, base_url: str, timeout: Timeout, session: requests.Session, *, owns_session: bool
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._session = session
        self._owns_session = owns_session
        self._auth: JWTAuth | BasicAuth | None = None
        self._email: str | None = None
        self._password: str | None = None
        self._credentials_origin = "the password the client was made with"
        self._project_id: str | None = None
        self.user: User | None = None
        self.last_curl: str | None = None
        self.show_curl = False
        self._last_prepared: requests.PreparedRequest | None = None
        self._last_files: dict[str, tuple[str, str]] | None = None  # an upload's, for its curl

    @classmethod
    def from_config(
        cls,
        config: Config | None = None,
        *,
        sandbox_url: str | None = None,
        **kwargs: Any,
    ) -> TiledeskClient:
        """Make a client from the tutorial's configuration (environment variables and ``.env``).

        ``config`` defaults to :func:`~tiledesk_tutorial.config.get_default`. Uses
        ``TILEDESK_API_URL`` when it is set, otherwise ``sandbox_url`` (the embedded sandbox's
        ``.url``); the email, password and project id come along when set. Nothing is sent: call
        :meth:`sign_in` next.

        Raises:
            InvalidInputError: neither ``TILEDESK_API_URL`` nor ``sandbox_url`` is given.
        """
        config = config if config is not None else get_default()
        base_url = config.api_url or sandbox_url
        if base_url is None:
            raise InvalidInputError(
                "TILEDESK_API_URL is not set, so the tutorial runs on the embedded sandbox: "
                "start it (sandbox = start_sandbox()) and pass sandbox_url=sandbox.url, or set "
                "TILEDESK_API_URL to use a real Tiledesk."
            )
        kwargs.setdefault("email", config.email)
        kwargs.setdefault("password", config.password)
        kwargs.setdefault("project_id", config.project_id)
        client = cls(base_url, **kwargs)
        if config.password is not None and kwargs["password"] == config.password:
            client._credentials_origin = "TILEDESK_PASSWORD"
        return client

    # --- configuration ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def timeout(self) -> Timeout:
        """Seconds to wait for a connection and for each answer."""
        return self._timeout

    @property
    def project_id(self) -> str | None:
        """The project used when a call is not given ``project_id=`` (24 hex characters)."""
        return self._project_id

    @project_id.setter
    def project_id(self, value: str | None) -> None:
        self._project_id = None if value is None else _check_project_id(value)

    @property
    def token(self) -> str | None:
        """The token this client sends (``"JWT eyJ..."``), or ``None``. Keep it secret."""
        return self._auth.token if isinstance(self._auth, JWTAuth) else None

    def runnable_curl(self, variable: str = TOKEN_VARIABLE) -> str:
        """The last call as a curl command that runs as it is, without showing the token.

        Sets the environment variable ``variable`` (``TILEDESK_TOKEN``) of this process to the
        client's token, so that the shells it starts (a notebook's ``!`` line, ``%%bash``) have
        it, and writes the command with ``-H "Authorization: $TILEDESK_TOKEN"``. A password in a
        body stays hidden (``"***"``): sign-in's curl is shown, not run.
        """
        if not isinstance(variable, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
            raise InvalidInputError(
                f"variable must be an environment variable's name, such as TILEDESK_TOKEN: "
                f"{variable!r}"
            )
        if self._last_prepared is None:
            raise InvalidInputError(
                "no call made yet: runnable_curl() gives the last call of this client; make one "
                "first (e.g. agent.list_requests())."
            )
        if self.token is not None:
            os.environ[variable] = self.token
        return curl_for_prepared(self._last_prepared, self._last_files, token_from=variable)

    @property
    def auth_scheme(self) -> str:
        """How calls authenticate: ``"jwt"``, ``"basic"`` or ``"none"``."""
        if isinstance(self._auth, JWTAuth):
            return "jwt"
        return "basic" if isinstance(self._auth, BasicAuth) else "none"

    @property
    def is_visitor(self) -> bool:
        """True when this client holds an anonymous visitor's (guest) token."""
        return isinstance(self._auth, JWTAuth) and self._auth.subject == "guest"

    def use_token(self, token: str) -> None:
        """Authenticate the next calls with this token (``"JWT eyJ..."`` or the bare JWT).

        Raises:
            InvalidInputError: the token is empty, or uses ``Bearer`` (Tiledesk wants ``JWT``).
        """
        self._auth = JWTAuth(token)

    def use_basic_auth(self, email: str | None = None, password: str | None = None) -> None:
        """Authenticate the next calls with HTTP Basic (email and password), as the tutorial's
        webhook section does. Without arguments, uses the email and password given before."""
        email, password = self._credentials(email, password)
        self._auth = BasicAuth(email, password)

    def as_visitor(
        self,
        project_id: str | None = None,
        *,
        firstname: str | None = None,
        lastname: str | None = None,
        email: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> TiledeskClient:
        """Sign a new anonymous visitor into a project and return a client that acts as them.

        The new client shares this one's base URL, timeout and connection pool; this client
        keeps its own identity. Each call makes a new visitor (Tiledesk has no visitor login).
        """
        visitor = TiledeskClient.__new__(TiledeskClient)
        visitor._init(self._base_url, self._timeout, self._session, owns_session=False)
        visitor.show_curl = self.show_curl
        visitor.sign_in_anonymously(
            project_id or self.project_id,
            firstname=firstname,
            lastname=lastname,
            email=email,
            attributes=attributes,
        )
        self.last_curl = visitor.last_curl
        return visitor

    def close(self) -> None:
        """Release the connection pool (not shared with clients made by :meth:`as_visitor`, nor a
        ``session`` passed in)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> TiledeskClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        auth = repr(self._auth) if self._auth is not None else "None"
        who = self.user.full_name or self.user.email or self.user.id if self.user else None
        return (
            f"TiledeskClient(base_url={self.base_url!r}, auth={auth}, "
            f"project_id={self.project_id!r}, user={who!r})"
        )

    # --- authentication --------------------------------------------------------------------

    def sign_up(
        self,
        email: str,
        password: str,
        firstname: str,
        lastname: str,
        *,
        phone: str | None = None,
    ) -> User:
        """Create an account (``POST /auth/signup``). It gives no token: call :meth:`sign_in`.

        Raises:
            InvalidInputError: an empty field, or an email without ``@``.
            EmailAlreadyRegisteredError: the email has an account already: sign in instead.
            ValidationError: the server refused a field.
        """
        _check_email(email)
        _check_nonempty(password, "password")
        _check_nonempty(firstname, "firstname")
        _check_nonempty(lastname, "lastname")
        body: dict[str, Any] = {
            "email": email.strip(),
            "password": password,
            "firstname": firstname.strip(),
            "lastname": lastname.strip(),
        }
        if phone:
            body["phone"] = phone
        answer = self._call(
            "sign_up", "POST", ("auth", "signup"), body, auth=False, secrets=(password,)
        )
        self._email, self._password = email.strip(), password
        self._credentials_origin = "the password given to sign_up()"
        return User.from_json(_object(answer).get("user"))

    def sign_in(self, email: str | None = None, password: str | None = None) -> AuthResult:
        """Sign in with email and password (``POST /auth/signin``); this client keeps the token.

        Without arguments, uses the email and password the client was made with (for example
        ``TILEDESK_EMAIL`` and ``TILEDESK_PASSWORD`` through :meth:`from_config`).

        Raises:
            InvalidInputError: no email or password.
            AuthenticationError: unknown email, or wrong password.
        """
        origin = (
            "the password given to sign_in()" if password is not None else self._credentials_origin
        )
        email, password = self._credentials(email, password)
        body = {"email": email, "password": password}
        answer = self._call(
            "sign_in",
            "POST",
            ("auth", "signin"),
            body,
            auth=False,
            secrets=(password,),
            password_origin=origin,
        )
        result = AuthResult.from_json(_object(answer))
        self._email, self._password, self._credentials_origin = email, password, origin
        self._adopt(result)
        return result

    def sign_in_anonymously(
        self,
        project_id: str | None = None,
        *,
        firstname: str | None = None,
        lastname: str | None = None,
        email: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> AuthResult:
        """Sign in as a new anonymous visitor of a project (``POST /auth/signinAnonymously``).

        This client then holds the visitor's token and uses ``project_id`` by default. The token
        works in that project only. Note that Tiledesk does not check that the project exists:
        a wrong id fails only at the next call.
        """
        pid = self._pid(project_id)
        body: dict[str, Any] = {"id_project": pid}
        for key, value in (("firstname", firstname), ("lastname", lastname), ("email", email)):
            if value is not None:
                body[key] = _check_nonempty(value, key)
        if attributes is not None:
            body["attributes"] = dict(attributes)
        answer = self._call(
            "sign_in_anonymously",
            "POST",
            ("auth", "signinAnonymously"),
            json_body=body,
            auth=False,
            project_id=pid,
        )
        result = AuthResult.from_json(_object(answer))
        self._adopt(result)
        self.project_id = pid
        return result

    # --- projects --------------------------------------------------------------------------

    def create_project(self, name: str) -> Project:
        """Create a project (``POST /projects``); you become its owner."""
        body = {"name": _check_nonempty(name, "name")}
        return Project.from_json(_object(self._call("create_project", "POST", ("projects",), body)))

    def list_projects(self) -> list[ProjectMembership]:
        """Your projects (``GET /projects``): your role in each, with the project itself."""
        answer = self._call("list_projects", "GET", ("projects",))
        return [ProjectMembership.from_json(item) for item in _array(answer)]

    def get_project(self, project_id: str | None = None) -> Project:
        """One project (``GET /projects/<id>``); needs the agent role or higher."""
        pid = self._pid(project_id)
        answer = self._call(
            "get_project", "GET", ("projects", pid), project_id=pid, required_role="agent"
        )
        return Project.from_json(_object(answer))

    # --- conversations ---------------------------------------------------------------------

    def new_request_id(self, project_id: str | None = None) -> str:
        """A fresh conversation id for a project (see :func:`new_request_id`)."""
        return new_request_id(self._pid(project_id))

    def send_message(
        self,
        request_id: str,
        text: str | None = None,
        *,
        project_id: str | None = None,
        type: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        sender_fullname: str | None = None,
        **fields: Any,
    ) -> Message:
        """Send a message into a conversation; the first message creates the conversation.

        ``POST /<project_id>/requests/<request_id>/messages``. Any other Tiledesk message field
        (``senderFullname``, ``language``, ``channel``...) can be passed by its own name in
        ``fields`` and is sent as it is. The answer embeds the conversation: ``message.request``.

        This call is never repeated automatically: if it fails without an answer, check with
        :meth:`list_messages` before sending again.

        Raises:
            InvalidInputError: an empty text for a text message (other types, such as
                ``"image"`` with ``metadata``, may have no text), or a malformed request or
                project id.
        """
        pid = self._pid(project_id)
        _check_request_id(request_id)
        if type in (None, "text") and (text is None or not str(text).strip()):
            raise InvalidInputError(
                "the message text is empty: pass some text, e.g. send_message(request_id, "
                "'Hello'). Only other types (type='image' with metadata=...) may have no text."
            )
        body: dict[str, Any] = {}
        if text is not None:
            body["text"] = text
        for key, value in (
            ("type", type),
            ("attributes", dict(attributes) if attributes is not None else None),
            ("metadata", dict(metadata) if metadata is not None else None),
            ("senderFullname", sender_fullname),
        ):
            if value is not None:
                body[key] = value
        for key, value in fields.items():
            if key in body:
                raise InvalidInputError(f"the field {key!r} is given twice: pass it once.")
            body[key] = value
        answer = self._call(
            "send_message",
            "POST",
            (pid, "requests", request_id, "messages"),
            body,
            project_id=pid,
        )
        return Message.from_json(_object(answer))

    def list_messages(self, request_id: str, *, project_id: str | None = None) -> list[Message]:
        """All messages of a conversation, oldest first (``GET .../requests/<id>/messages``).

        An unknown ``request_id`` gives an empty list, not an error.
        """
        pid = self._pid(project_id)
        _check_request_id(request_id)
        answer = self._call(
            "list_messages", "GET", (pid, "requests", request_id, "messages"), project_id=pid
        )
        return [Message.from_json(item) for item in _array(answer)]

    def list_requests(
        self,
        *,
        project_id: str | None = None,
        page: int = 0,
        limit: int = 40,
        status: int | str | Iterable[int | str] | None = None,
        **filters: str | int | bool,
    ) -> RequestPage:
        """One page of the project's conversations (``GET /<project_id>/requests``); agent role.

        Args:
            page: 0 for the first page.
            limit: conversations per page, 1 to 100.
            status: ``None`` for the server's default (open conversations), ``"all"``, a code
                (``1000``), a name (``"closed"``), or several of them.
            filters: other Tiledesk query parameters, sent as they are (``sort``, ``direction``,
                ``full_text``, ``dept_id``, ...).
        """
        pid = self._pid(project_id)
        params = _page_params(page, limit, status, filters)
        answer = self._call(
            "list_requests",
            "GET",
            (pid, "requests"),
            params=params,
            project_id=pid,
            required_role="agent",
        )
        return RequestPage.from_json(_object(answer), page=page)

    def iter_requests(
        self,
        *,
        project_id: str | None = None,
        status: int | str | Iterable[int | str] | None = None,
        limit: int = _MAX_LIMIT,
        **filters: str | int | bool,
    ) -> Iterator[Request]:
        """Every conversation matching ``status``/``filters``, fetching page after page."""
        page = 0
        while True:
            result = self.list_requests(
                project_id=project_id, page=page, limit=limit, status=status, **filters
            )
            yield from result.requests
            if not result.requests or not result.has_more:
                return
            page += 1

    def list_my_requests(
        self,
        *,
        project_id: str | None = None,
        page: int = 0,
        limit: int = 40,
        status: int | str | Iterable[int | str] | None = None,
    ) -> RequestPage:
        """The conversations the signed-in user started (``GET /<project_id>/requests/me``).

        This is the visitor's view; by default closed conversations are left out.
        """
        pid = self._pid(project_id)
        answer = self._call(
            "list_my_requests",
            "GET",
            (pid, "requests", "me"),
            params=_page_params(page, limit, status, {}),
            project_id=pid,
        )
        return RequestPage.from_json(_object(answer), page=page)

    def get_request(self, request_id: str, *, project_id: str | None = None) -> Request:
        """One conversation (``GET /<project_id>/requests/<request_id>``); agent role."""
        pid = self._pid(project_id)
        _check_request_id(request_id)
        answer = self._call(
            "get_request",
            "GET",
            (pid, "requests", request_id),
            project_id=pid,
            required_role="agent",
        )
        return Request.from_json(_object(answer))

    def close_request(
        self, request_id: str, *, project_id: str | None = None, force: bool = False
    ) -> Request:
        """Close a conversation as an agent (``PUT .../requests/<request_id>/close``).

        Tiledesk then sends the ``request.update`` and ``request.close`` webhooks and a "Chat
        closed" system message. Closing a closed conversation is allowed and sends
        ``request.close`` again.
        """
        pid = self._pid(project_id)
        _check_request_id(request_id)
        answer = self._call(
            "close_request",
            "PUT",
            (pid, "requests", request_id, "close"),
            {"force": True} if force else None,
            project_id=pid,
            required_role="agent",
        )
        return Request.from_json(_object(answer))

    def close_request_as_visitor(
        self, request_id: str, *, project_id: str | None = None
    ) -> Request:
        """Close a conversation as the visitor (``PUT .../requests/<request_id>/closeg``)."""
        pid = self._pid(project_id)
        _check_request_id(request_id)
        answer = self._call(
            "close_request_as_visitor",
            "PUT",
            (pid, "requests", request_id, "closeg"),
            project_id=pid,
        )
        return Request.from_json(_object(answer))

    def reopen_request(self, request_id: str, *, project_id: str | None = None) -> Request:
        """Reopen a closed conversation as an agent (``PUT .../requests/<request_id>/reopen``).

        Tiledesk then sends ``request.update`` and a "Chat reopened" system message; reopening an
        open conversation changes nothing.
        """
        pid = self._pid(project_id)
        _check_request_id(request_id)
        answer = self._call(
            "reopen_request",
            "PUT",
            (pid, "requests", request_id, "reopen"),
            project_id=pid,
            required_role="agent",
        )
        return Request.from_json(_object(answer))

    def rate_request(
        self,
        request_id: str,
        rating: int,
        comment: str | None = None,
        *,
        project_id: str | None = None,
    ) -> Request:
        """The visitor rates a conversation, 1 (bad) to 5 (good), with an optional comment.

        ``PATCH .../requests/<request_id>/rating`` with ``rating`` and ``rating_message``;
        Tiledesk then sends ``request.update``.

        Raises:
            InvalidInputError: a rating that is not a whole number from 1 to 5.
            NotFoundError: no such conversation.
        """
        pid = self._pid(project_id)
        _check_request_id(request_id)
        if isinstance(rating, bool) or not isinstance(rating, int):
            raise InvalidInputError(f"the rating must be a whole number, not {rating!r}.")
        if not wire.RATING_MIN <= rating <= wire.RATING_MAX:
            raise InvalidInputError(
                f"the rating {rating} is out of range: give {wire.RATING_MIN} (bad) to "
                f"{wire.RATING_MAX} (good)."
            )
        body: dict[str, Any] = {"rating": rating}
        if comment is not None:
            body["rating_message"] = str(comment)
        answer = self._call(
            "rate_request", "PATCH", (pid, "requests", request_id, "rating"), body, project_id=pid
        )
        return Request.from_json(_object(answer))

    # --- files -----------------------------------------------------------------------------

    def upload_file(
        self,
        file: str | os.PathLike[str] | bytes,
        *,
        name: str | None = None,
        project_id: str | None = None,
    ) -> UploadedFile:
        """Upload a chat file as the signed-in visitor or agent (``POST /<pid>/files/chat``).

        ``file`` is a path, or the bytes themselves with ``name=``. Tiledesk accepts
        ``.jpg .jpeg .png .gif .pdf .txt`` up to 1 MB; both are checked before sending.

        Raises:
            InvalidInputError: no such file, an extension Tiledesk refuses, or a file over 1 MB.
            PermissionDeniedError: the server refused the extension.
        """
        pid = self._pid(project_id)
        if isinstance(file, bytes | bytearray):
            if not name:
                raise InvalidInputError(
                    "give the file's name with its bytes, e.g. upload_file(data, name='box.png')."
                )
            data = bytes(file)
        else:
            path = Path(file)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InvalidInputError(
                    f"cannot read {str(path)!r}: {exc.strerror or exc}."
                ) from None
            name = name or path.name
        content_type = _check_upload(name, data)
        files = {wire.UPLOAD_FIELD: (name, data, content_type)}
        answer = self._call(
            "upload_file", "POST", (pid, "files", "chat"), project_id=pid, files=files
        )
        body = _object(answer)
        filename = _check_nonempty(body.get("filename"), "filename in the answer")
        return UploadedFile(
            filename=filename,
            name=name,
            content_type=content_type,
            size=len(data),
            src=self._url((pid, "files"), {"path": filename}),
            message=body.get("message"),
            raw=dict(body),
        )

    def download_file(self, filename: str, *, project_id: str | None = None) -> DownloadedFile:
        """Read a chat file back (``GET /<pid>/files?path=<filename>``), as bytes."""
        pid = self._pid(project_id)
        filename = _check_nonempty(filename, "filename")
        answer = self._call(
            "download_file",
            "GET",
            (pid, "files"),
            params={"path": filename},
            project_id=pid,
            raw=True,
        )
        content_type = answer.headers.get("Content-Type")
        return DownloadedFile(filename, content_type, answer.data)

    def send_image(
        self,
        request_id: str,
        image: UploadedFile | str,
        *,
        width: int,
        height: int,
        name: str | None = None,
        content_type: str | None = None,
        text: str | None = None,
        project_id: str | None = None,
    ) -> Message:
        """Send an ``image`` message: an uploaded file (or an image URL) and its size in pixels.

        The metadata is what Tiledesk's widget reads: ``src``, ``width``, ``height``, ``name``
        and ``type``; the text defaults to the file's name.
        """
        src, name, content_type = _attachment(image, name, content_type)
        for label, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(f"the image {label} must be a positive whole number.")
        metadata = {"src": src, "width": width, "height": height, "name": name}
        metadata["type"] = content_type
        return self.send_message(
            request_id, text or name, type="image", metadata=metadata, project_id=project_id
        )

    def send_file(
        self,
        request_id: str,
        file: UploadedFile | str,
        *,
        name: str | None = None,
        content_type: str | None = None,
        text: str | None = None,
        project_id: str | None = None,
    ) -> Message:
        """Send a ``file`` message (a PDF, a text...) with ``src``, ``name`` and ``type``."""
        src, name, content_type = _attachment(file, name, content_type)
        metadata = {"src": src, "name": name, "type": content_type}
        return self.send_message(
            request_id, text or name, type="file", metadata=metadata, project_id=project_id
        )

    # --- webhooks --------------------------------------------------------------------------

    def create_subscription(
        self, target: str, event: str = "message.create", *, project_id: str | None = None
    ) -> Subscription:
        """Subscribe ``target`` to ``event`` (``POST /<project_id>/subscriptions``); admin role.

        The result carries the ``secret`` that Tiledesk sends in each delivery's
        ``x-hook-secret`` header. It is shown only now: keep it.

        Raises:
            InvalidInputError: ``target`` is not an http(s) URL, or ``event`` is empty.
        """
        pid = self._pid(project_id)
        body = {"event": _check_event(event), "target": _check_target(target)}
        answer = self._call(
            "create_subscription",
            "POST",
            (pid, "subscriptions"),
            body,
            project_id=pid,
            required_role="admin",
        )
        return Subscription.from_json(
            _object(answer), secret_header=answer.headers.get(SECRET_HEADER)
        )

    def list_subscriptions(self, *, project_id: str | None = None) -> list[Subscription]:
        """The project's webhook subscriptions, without their secrets; admin role."""
        pid = self._pid(project_id)
        answer = self._call(
            "list_subscriptions",
            "GET",
            (pid, "subscriptions"),
            project_id=pid,
            required_role="admin",
        )
        return [Subscription.from_json(item) for item in _array(answer)]

    def get_subscription(
        self, subscription_id: str, *, project_id: str | None = None
    ) -> Subscription:
        """One webhook subscription, without its secret; admin role."""
        pid = self._pid(project_id)
        answer = self._call(
            "get_subscription",
            "GET",
            (pid, "subscriptions", _check_id(subscription_id, "subscription id")),
            project_id=pid,
            required_role="admin",
        )
        return Subscription.from_json(_object(answer))

    def delete_subscription(
        self, subscription_id: str, *, project_id: str | None = None
    ) -> Subscription | None:
        """Delete a webhook subscription; returns what was deleted, or ``None`` if nothing was."""
        pid = self._pid(project_id)
        answer = self._call(
            "delete_subscription",
            "DELETE",
            (pid, "subscriptions", _check_id(subscription_id, "subscription id")),
            project_id=pid,
            required_role="admin",
        )
        return Subscription.from_json(answer.data) if isinstance(answer.data, dict) else None

    def subscription_history(
        self, *, project_id: str | None = None, page: int = 0
    ) -> list[DeliveryLog]:
        """Recorded webhook deliveries, newest first, 40 per page; admin role.

        Tiledesk records them only when the server runs with ``SUBSCRIPTION_LOG_ENABLED=true``,
        so on many servers this list stays empty.
        """
        pid = self._pid(project_id)
        if isinstance(page, bool) or not isinstance(page, int) or page < 0:
            raise InvalidInputError(f"page must be 0 or more, not {page!r}.")
        answer = self._call(
            "subscription_history",
            "GET",
            (pid, "subscriptions", "history"),
            params={"page": page},
            project_id=pid,
            required_role="admin",
        )
        return [DeliveryLog.from_json(item) for item in _array(answer)]

    def wait_for_subscription_history(
        self, at_least: int = 1, *, timeout: float = 5.0, project_id: str | None = None
    ) -> list[DeliveryLog]:
        """The recorded webhook deliveries (newest first) once ``at_least`` of them are there.

        A server records a delivery just after sending it, so the last ones may be missing for a
        moment: this asks :meth:`subscription_history` again (every 0.1 s) until ``at_least``
        entries are there or ``timeout`` seconds pass, then returns what there is. A server that
        does not record deliveries (a self-hosted Tiledesk without
        ``SUBSCRIPTION_LOG_ENABLED=true``) gives an empty list after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        history = self.subscription_history(project_id=project_id)
        while len(history) < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
            history = self.subscription_history(project_id=project_id)
        return history

    def find_delivery_log(
        self,
        event: Event,
        *,
        timeout: float = 5.0,
        pages: int = 5,
        project_id: str | None = None,
    ) -> DeliveryLog | None:
        """The history entry of the delivery that brought ``event`` (a webhook's), or ``None``.

        Matched on what identifies one delivery body: its subscription (``hook._id``), its
        ``timestamp`` and its payload's ``_id``, in the newest ``pages`` pages of
        :meth:`subscription_history` (the newest attempt, when it was sent more than once). A
        server records a delivery just after sending it, so this asks again (every 0.1 s) for up
        to ``timeout`` seconds. The project is the event's, unless ``project_id`` is given.
        """
        if not isinstance(event, Event):
            raise InvalidInputError(f"find_delivery_log needs an Event, got {event!r}")
        pid = project_id or event.project_id or self._pid(None)
        deadline = time.monotonic() + timeout
        while True:
            for page in range(pages):
                entries = self.subscription_history(project_id=pid, page=page)
                for entry in entries:
                    if _same_delivery(entry, event):
                        return entry
                if len(entries) < HISTORY_PAGE:
                    break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def resend_delivery(
        self,
        delivery: str | DeliveryLog | Event,
        *,
        project_id: str | None = None,
        timeout: float = 5.0,
    ) -> ResentDelivery:
        """Ask the server to send a recorded delivery again; owner or admin role.

        ``delivery`` is an entry of :meth:`subscription_history` (or its ``id``), or an
        :class:`~tiledesk_tutorial.models.Event` a listener received (its entry is found with
        :meth:`find_delivery_log`, which waits up to ``timeout`` seconds for the server to record
        it). The server queues the same body (payload, timestamp, hook) for
        the subscription's target with a fresh token; it is retried like any delivery and
        recorded as a new attempt in the history. A receiver that kept the first one sees a
        duplicate. A sandbox extension (``POST /<project_id>/subscriptions/history/<id>/resend``):
        a real Tiledesk answers 404.
        """
        if isinstance(delivery, Event):
            project_id = project_id or delivery.project_id
            entry = self.find_delivery_log(delivery, project_id=project_id, timeout=timeout)
            if entry is None:
                raise InvalidInputError(
                    "this event's delivery is not in the server's delivery history.",
                    hint="it is older than the history's newest pages, it did not come by "
                    "webhook, or the server does not record deliveries.",
                )
            delivery = entry
        pid = self._pid(project_id)
        delivery_id = delivery.id if isinstance(delivery, DeliveryLog) else delivery
        answer = self._call(
            "resend_delivery",
            "POST",
            (pid, "subscriptions", "history", _check_id(delivery_id, "delivery id"), "resend"),
            project_id=pid,
            required_role="admin",
        )
        return ResentDelivery.from_json(_object(answer))

    # --- the one place calls go through ----------------------------------------------------

    def _call(
        self,
        operation: str,
        method: str,
        path: tuple[str, ...],
        json_body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
        project_id: str | None = None,
        required_role: str | None = None,
        secrets: tuple[str, ...] = (),
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        raw: bool = False,
        password_origin: str = "",
    ) -> Answer:
        """Make one API call: build the request, show it as curl, send it, read the answer.

        Any failure (no answer, an error status, a body that is not the API's JSON) is raised as
        the :class:`~tiledesk_tutorial.errors.TiledeskError` that says what went wrong, with the
        call's curl in it. ``files`` sends a multipart upload; ``raw`` keeps a successful
        answer's bytes as they are (a downloaded file) in ``Answer.data``.
        """
        credentials = self._auth if auth else None
        url = self._url(path, params)
        request = requests.Request(method, url, json=json_body, auth=credentials, files=files)
        if json_body is None and not files and method in ("POST", "PUT", "PATCH"):
            request.headers["Content-Type"] = "application/json"
        prepared = self._session.prepare_request(request)
        shown_files = {k: (v[0], v[2]) for k, v in files.items()} if files else None
        self.last_curl = curl = curl_for_prepared(prepared, shown_files)
        self._last_prepared, self._last_files = prepared, shown_files
        log.debug("%s as curl:\n%s", operation, curl)
        if self.show_curl:
            print(curl)  # an opt-in teaching aid: the notebook shows the call next to the code
        # What an error needs to say what probably went wrong (and which secrets to hide).
        context = CallContext(
            operation=operation,
            base_url=self.base_url,
            auth_scheme=_scheme(credentials),
            caller_kind=credentials.subject if isinstance(credentials, JWTAuth) else None,
            project_id=project_id,
            required_role=required_role,
            retry_safe=method in RETRY_METHODS,
            secrets=(*self._secrets(), *secrets),
            curl=curl,
            password_origin=password_origin,
        )
        try:
            response = self._session.send(prepared, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:  # no answer: refused, unresolvable, timed out
            raise error_for_transport_failure(
                exc, method=method, url=prepared.url or "", context=context
            ) from None
        if raw and response.status_code < 300:
            return Answer(response.status_code, response.headers, response.content, response.url)
        data = check_answer(response, context=context)  # an error status raises its TiledeskError
        return Answer(response.status_code, response.headers, data, prepared.url or "")

    def _url(self, path: tuple[str, ...], params: Mapping[str, Any] | None = None) -> str:
        """The full URL of a path given as segments (each percent-encoded) and a query."""
        url = self.base_url + "/" + "/".join(quote(str(s), safe="") for s in path)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return url + "?" + urlencode(query, safe=",") if query else url

    def _adopt(self, result: AuthResult) -> None:
        if not result.token:
            raise TiledeskError(
                "the sign-in answer has no token.",
                hint="the base URL may point at something that is not Tiledesk.",
            )
        self.use_token(result.token)
        self.user = result.user

    def _credentials(self, email: str | None, password: str | None) -> tuple[str, str]:
        email = email if email is not None else self._email
        password = password if password is not None else self._password
        if not email or not password:
            raise InvalidInputError(
                "an email and a password are needed: pass them, or set TILEDESK_EMAIL and "
                "TILEDESK_PASSWORD (in the environment or a .env file) and use from_config()."
            )
        _check_email(email)
        return email.strip(), password

    def _pid(self, project_id: str | None) -> str:
        pid = project_id if project_id is not None else self._project_id
        if pid is None:
            raise InvalidInputError(
                "no project id: pass project_id=..., or set client.project_id (from "
                "TILEDESK_PROJECT_ID, or `project.id` after create_project())."
            )
        return _check_project_id(pid)

    def _secrets(self) -> tuple[str, ...]:
        found = [self._password or ""]
        if isinstance(self._auth, JWTAuth):
            found.append(self._auth.token)
        elif isinstance(self._auth, BasicAuth):
            found.append(str(self._auth.password))
        return tuple(s for s in found if s)


# --- input checks ------------------------------------------------------------------------------


def _check_upload(name: str, data: bytes) -> str:
    """The media type of an upload Tiledesk will accept; the reason it would not, otherwise."""
    extension = Path(name).suffix.lower()
    content_type = wire.UPLOAD_TYPES.get(extension)
    if content_type is None:
        allowed = " ".join(wire.UPLOAD_TYPES)
        raise InvalidInputError(
            f"Tiledesk does not accept {extension or 'files without an extension'} uploads: "
            f"send one of {allowed}."
        )
    if len(data) > wire.UPLOAD_LIMIT:
        raise InvalidInputError(
            f"{name} is {len(data)} bytes, over Tiledesk's {wire.UPLOAD_LIMIT} byte (1 MB) "
            "upload limit: send a smaller file."
        )
    return content_type


def _attachment(
    item: UploadedFile | str, name: str | None, content_type: str | None
) -> tuple[str, str, str]:
    """The ``src``, name and media type of an uploaded file or of a URL."""
    if isinstance(item, UploadedFile):
        return item.src, name or item.name, content_type or item.content_type
    src = _check_nonempty(item, "src")
    if urlsplit(src).scheme not in ("http", "https"):
        raise InvalidInputError(f"the file's address must be an http(s) URL, not {src[:60]!r}.")
    name = name or urlsplit(src).path.rsplit("/", 1)[-1] or "file"
    guessed = wire.UPLOAD_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
    return src, name, content_type or guessed


def _check_project_id(value: Any) -> str:
    if not isinstance(value, str) or not is_object_id(value.strip()):
        raise InvalidInputError(
            f"{value!r} is not a Tiledesk project id: a project id is 24 hexadecimal characters, "
            "such as '6b0690cb0ed30d16ca8ddc1a' (use `project.id`, or the id under Project "
            "Settings in the dashboard)."
        )
    return value.strip()


def _check_request_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(
            "the request id is empty: make one with new_request_id(project_id)."
        )
    if "/" in value or any(c.isspace() for c in value):
        raise InvalidInputError(
            f"the request id {value!r} has a '/' or a space; make one with new_request_id()."
        )
    return value


def _same_delivery(entry: DeliveryLog, event: Event) -> bool:
    """Whether a history entry recorded the delivery body that brought ``event``."""
    body = entry.request_body
    if not isinstance(body, dict):
        return False
    hook = body.get("hook")
    payload = body.get("payload")
    return (
        body.get("timestamp") == event.timestamp
        and isinstance(hook, dict)
        and hook.get("_id") == event.subscription_id
        and isinstance(payload, dict)
        and payload.get("_id") == event.payload.get("_id")
    )


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or "/" in value:
        raise InvalidInputError(f"{value!r} is not a valid {what}.")
    return value.strip()


def _check_nonempty(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"the {what} is empty.")
    return value


def _check_email(value: Any) -> str:
    if not isinstance(value, str) or "@" not in value or not value.strip():
        raise InvalidInputError(f"{value!r} is not an email address.")
    return value


def _check_target(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"the webhook target {value!r} is not an http:// or https:// URL. Tiledesk POSTs "
            "each event there, so it must be reachable from the Tiledesk server (a public URL, "
            "e.g. from ngrok, for a real Tiledesk)."
        )
    return value


def _check_event(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise InvalidInputError(
            f"{value!r} is not an event name; use e.g. 'message.create', 'request.create', "
            "'request.update' or 'request.close'."
        )
    return value


def _status_param(status: int | str | Iterable[int | str] | None) -> str | None:
    if status is None:
        return None
    if isinstance(status, str) and status.strip().lower() == "all":
        return "all"
    items = [status] if isinstance(status, int | str) else list(status)
    codes = []
    for item in items:
        if isinstance(item, bool):
            code = None
        elif isinstance(item, int):
            code = item
        else:
            text = str(item).strip().lower()
            code = int(text) if text.isdigit() else _STATUS_BY_NAME.get(text)
        if code is None:
            names = ", ".join(f"{n} ({c})" for c, n in REQUEST_STATUS.items())
            raise InvalidInputError(
                f"{item!r} is not a request status; use 'all' or one of {names}."
            )
        codes.append(str(code))
    if not codes:
        raise InvalidInputError("status is an empty list: pass None for the default, or 'all'.")
    return ",".join(codes)


def _page_params(page: int, limit: int, status: Any, filters: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        raise InvalidInputError(f"page must be 0 or more (0 is the first page), not {page!r}.")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise InvalidInputError(
            f"limit must be between 1 and {_MAX_LIMIT}, not {limit!r} (Tiledesk would silently "
            "use 40 instead)."
        )
    params: dict[str, Any] = {"page": page, "limit": limit, "status": _status_param(status)}
    for key, value in filters.items():
        if key in params:
            raise InvalidInputError(f"{key!r} is given twice.")
        params[key] = str(value).lower() if isinstance(value, bool) else value
    return params


def _scheme(auth: JWTAuth | BasicAuth | None) -> str:
    if isinstance(auth, JWTAuth):
        return "jwt"
    return "basic" if isinstance(auth, BasicAuth) else "none"


@dataclass(frozen=True)
class Answer:
    """A successful answer: its status, headers and parsed JSON (``None`` for an empty body)."""

    status: int
    headers: Mapping[str, str]
    data: Any
    url: str


def _object(answer: Answer) -> dict[str, Any]:
    """The answer's JSON object; anything else means the server is not the API we expect."""
    if isinstance(answer.data, dict):
        return answer.data
    raise _shape_error(answer, "a JSON object")


def _array(answer: Answer) -> list[Any]:
    """The answer's JSON array; anything else means the server is not the API we expect."""
    if isinstance(answer.data, list):
        return answer.data
    raise _shape_error(answer, "a JSON array")


def _shape_error(answer: Answer, expected: str) -> UnexpectedResponseError:
    got = type(answer.data).__name__ if answer.data is not None else "an empty body"
    return UnexpectedResponseError(
        f"the server answered {answer.status} with {got} where {expected} was expected.",
        url=answer.url,
        status=answer.status,
        body=answer.data,
        hint="the base URL may point at a server that is not Tiledesk, or another API version.",
    )
