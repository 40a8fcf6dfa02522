"""The sandbox's REST API: its routes, and one handler per route.

The order of checks follows the real server: for ``/:project_id/...`` routes the project id is
checked first (400), then the caller is authenticated (401, plain text), then the membership and
role (403). A path Tiledesk does not know is Express's ``404 Cannot GET /path``.

Handlers run on the event loop. Everything they call is short, SQLite included: storing a
message (its transaction, its outbox rows, its JSON) takes 0.2 ms, and a hop to a thread pool
would add 0.05 ms to every call for CPU work that holds the GIL anyway. Key derivation (scrypt,
about 75 ms of CPU for a sign-up, a sign-in or an HTTP Basic check not seen before) runs in a
small thread pool, so that it never stalls the other calls.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header
from werkzeug.routing import Map, Rule

from tiledesk_tutorial.sandbox.access import Authenticator, Principal
from tiledesk_tutorial.sandbox.accounts import Accounts
from tiledesk_tutorial.sandbox.asgi import (
    Request,
    Response,
    json_response,
    text_response,
    too_large,
)
from tiledesk_tutorial.sandbox.console import CONSOLE_PATHS, console_page
from tiledesk_tutorial.sandbox.conversations import Conversations, int_param
from tiledesk_tutorial.sandbox.errors import ApiError
from tiledesk_tutorial.sandbox.files import Files
from tiledesk_tutorial.sandbox.resend import Resends
from tiledesk_tutorial.sandbox.subscriptions import Subscriptions
from tiledesk_tutorial.wire import SECRET_HEADER, UPLOAD_FIELD

MAX_BODY_DEPTH = 100  # levels of nesting in a JSON body; real Tiledesk bodies use a handful
HEALTH_TEXT = (
    "Hello from Tiledesk server. It's UP. This is the tiledesk-tutorial sandbox: "
    "see the tutorial's README for what it serves."
)
_T = TypeVar("_T")


class Api:
    """The REST API's handlers, over the sandbox's services."""

    def __init__(
        self,
        auth: Authenticator,
        accounts: Accounts,
        conversations: Conversations,
        subscriptions: Subscriptions,
        blocking: Executor,
        resends: Resends,
        files: Files,
    ) -> None:
        self.auth = auth
        self.accounts = accounts
        self.conversations = conversations
        self.subscriptions = subscriptions
        self.resends = resends
        self.files = files
        self._blocking = blocking

    async def off_loop(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run CPU-heavy or blocking work (key derivation, a file's fsync) in the thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._blocking, function, *args)

    async def dispatch(self, request: Request) -> Response:
        """Route one request to its handler."""
        if request.method == "OPTIONS":
            return preflight(request)
        path = request.path
        if path in CONSOLE_PATHS and request.method in ("GET", "HEAD"):
            return console_page()
        if path.split("/", 2)[1] in _GLOBAL_FIRST_SEGMENTS:
            try:
                handler, args = GLOBAL_ROUTES.bind("sandbox").match(path, method=request.method)
            except (NotFound, MethodNotAllowed):
                pass  # e.g. /auth/unknown: Tiledesk's project check answers it, as below
            else:
                return await handler(self, request, **args)
        return await self._project_route(request)

    async def _project_route(self, request: Request) -> Response:
        first_segment = request.path.strip("/").split("/")[0]
        if not first_segment:
            return cannot(request)
        project = self.accounts.resolve_project(first_segment)
        try:
            handler, args = PROJECT_ROUTES.bind("sandbox").match(
                request.path, method=request.method
            )
        except (NotFound, MethodNotAllowed):
            return cannot(request)
        caller = await self.caller(request)
        args.pop("pid")
        return await handler(self, request, caller, project, **args)

    async def caller(self, request: Request) -> Principal:
        """Authenticate the ``Authorization`` header (HTTP Basic's key derivation off the loop)."""
        header = request.headers.get("authorization")
        if header and header.lstrip()[:6].lower() == "basic ":
            return await self.off_loop(self.auth.authenticate, header, request.client)
        return self.auth.authenticate(header)

    # ---------------------------------------------------------------------------- global routes

    async def health(self, request: Request) -> Response:
        """``GET /``: the health text."""
        return text_response(200, HEALTH_TEXT)

    async def signup(self, request: Request) -> Response:
        """``POST /auth/signup``."""
        body = await read_body(request)
        return json_response(200, await self.off_loop(self.accounts.signup, body))

    async def signin(self, request: Request) -> Response:
        """``POST /auth/signin``."""
        body = await read_body(request)
        return json_response(200, await self.off_loop(self.accounts.signin, body, request.client))

    async def signin_anonymously(self, request: Request) -> Response:
        """``POST /auth/signinAnonymously``."""
        return json_response(200, self.accounts.signin_anonymously(await read_body(request)))

    async def create_project(self, request: Request) -> Response:
        """``POST /projects``."""
        caller = await self.caller(request)
        return json_response(200, self.accounts.create_project(caller, await read_body(request)))

    async def list_projects(self, request: Request) -> Response:
        """``GET /projects``."""
        return json_response(200, self.accounts.list_projects(await self.caller(request)))

    async def get_project(self, request: Request, project_id: str) -> Response:
        """``GET /projects/:id``."""
        caller = await self.caller(request)
        return json_response(200, self.accounts.get_project(caller, project_id))

    # --------------------------------------------------------------------------- project routes

    async def send_message(
        self, request: Request, caller: Principal, project: dict, rid: str
    ) -> Response:
        """``POST /:pid/requests/:rid/messages``."""
        member = self.auth.require(caller, project["_id"], "guest", subscription_allowed=True)
        body = await read_body(request)
        return json_response(
            200, self.conversations.send_message(caller, member, project, rid, body)
        )

    async def list_messages(
        self, request: Request, caller: Principal, project: dict, rid: str
    ) -> Response:
        """``GET /:pid/requests/:rid/messages``."""
        member = self.auth.require(caller, project["_id"], "guest", subscription_allowed=True)
        return json_response(
            200, self.conversations.list_messages(caller, member, project["_id"], rid)
        )

    async def list_requests(self, request: Request, caller: Principal, project: dict) -> Response:
        """``GET /:pid/requests``."""
        member = self.auth.require(caller, project["_id"], "agent", subscription_allowed=True)
        return json_response(
            200,
            self.conversations.list_requests(caller, member, project["_id"], request.query),
        )

    async def my_requests(self, request: Request, caller: Principal, project: dict) -> Response:
        """``GET /:pid/requests/me``."""
        member = self.auth.require(caller, project["_id"], "guest")
        return json_response(
            200,
            self.conversations.list_requests(
                caller, member, project["_id"], request.query, mine=True
            ),
        )

    async def get_request(
        self, request: Request, caller: Principal, project: dict, rid: str
    ) -> Response:
        """``GET /:pid/requests/:rid``."""
        self.auth.require(caller, project["_id"], "agent", subscription_allowed=True)
        return json_response(200, self.conversations.get_request(project["_id"], rid))

    async def close(self, request: Request, caller: Principal, project: dict, rid: str) -> Response:
        """``PUT /:pid/requests/:rid/close`` (agents)."""
        member = self.auth.require(caller, project["_id"], "agent", subscription_allowed=True)
        await read_body(request)  # validated like any other body; `force` changes nothing here
        return json_response(
            200,
            self.conversations.close_request(caller, member, project["_id"], rid, as_visitor=False),
        )

    async def closeg(
        self, request: Request, caller: Principal, project: dict, rid: str
    ) -> Response:
        """``PUT /:pid/requests/:rid/closeg`` (the visitor)."""
        member = self.auth.require(caller, project["_id"], "guest")
        await read_body(request)
        return json_response(
            200,
            self.conversations.close_request(caller, member, project["_id"], rid, as_visitor=True),
        )

    async def reopen(
        self, request: Request, caller: Principal, project: dict, rid: str
    ) -> Response:
        """``PUT /:pid/requests/:rid/reopen`` (agents)."""
        member = self.auth.require(caller, project["_id"], "agent", subscription_allowed=True)
        await read_body(request)
        return json_response(
            200, self.conversations.reopen_request(caller, member, project["_id"], rid)
        )

    async def rating(
        self, request: Request, caller: Principal, project: dict, rid: str
    ) -> Response:
        """``PATCH /:pid/requests/:rid/rating``: the visitor's rating and comment."""
        member = self.auth.require(caller, project["_id"], "guest")
        body = await read_body(request)
        return json_response(
            200, self.conversations.rate_request(caller, member, project["_id"], rid, body)
        )

    async def upload_chat_file(
        self, request: Request, caller: Principal, project: dict
    ) -> Response:
        """``POST /:pid/files/chat``: one multipart file, field ``file``; 201 with its filename."""
        self.auth.require(caller, project["_id"], "guest")
        name, data = await read_upload(request, self.files.limit)
        # Off the event loop: the file's fsync must not stall every other connection.
        saved = await self.off_loop(self.files.save, project["_id"], caller.id, name, data)
        return json_response(201, saved)

    async def download_file(self, request: Request, caller: Principal, project: dict) -> Response:
        """``GET /:pid/files?path=<filename>``: the file, with its media type."""
        self.auth.require(caller, project["_id"], "guest", subscription_allowed=True)
        path = request.query.get("path")
        if not path:
            raise ApiError(400, {"success": False, "error": "Give the file as ?path=<filename>."})
        stored = self.files.get(project["_id"], path)
        data = await self.off_loop(stored.disk_path.read_bytes)
        return Response(
            200,
            data,
            {
                "Content-Type": stored.content_type,
                "X-Content-Type-Options": "nosniff",
                "Content-Disposition": f'inline; filename="{stored.filename.rsplit("/", 1)[-1]}"',
            },
        )

    async def create_subscription(
        self, request: Request, caller: Principal, project: dict
    ) -> Response:
        """``POST /:pid/subscriptions``: the secret also in the ``x-hook-secret`` header."""
        self.auth.require(caller, project["_id"], "admin")
        created = self.subscriptions.create(caller, project["_id"], await read_body(request))
        response = json_response(200, created)
        response.headers[SECRET_HEADER] = created["secret"]
        return response

    async def list_subscriptions(
        self, request: Request, caller: Principal, project: dict
    ) -> Response:
        """``GET /:pid/subscriptions``."""
        self.auth.require(caller, project["_id"], "admin")
        return json_response(200, self.subscriptions.list(project["_id"]))

    async def history(self, request: Request, caller: Principal, project: dict) -> Response:
        """``GET /:pid/subscriptions/history``."""
        self.auth.require(caller, project["_id"], "admin")
        page = int_param(request.query, "page", 0, minimum=0)
        return json_response(200, self.subscriptions.history(project["_id"], page))

    async def resend(
        self, request: Request, caller: Principal, project: dict, hid: str
    ) -> Response:
        """``POST /:pid/subscriptions/history/:id/resend`` (a sandbox extension; owner or admin)."""
        self.auth.require(caller, project["_id"], "admin")
        await read_body(request)
        return json_response(200, self.resends.resend(project["_id"], hid))

    async def get_subscription(
        self, request: Request, caller: Principal, project: dict, sid: str
    ) -> Response:
        """``GET /:pid/subscriptions/:id``."""
        self.auth.require(caller, project["_id"], "admin")
        return json_response(200, self.subscriptions.get(project["_id"], sid))

    async def delete_subscription(
        self, request: Request, caller: Principal, project: dict, sid: str
    ) -> Response:
        """``DELETE /:pid/subscriptions/:id``."""
        self.auth.require(caller, project["_id"], "admin")
        return json_response(200, self.subscriptions.delete(project["_id"], sid))


Handler = Callable[..., Awaitable[Response]]

#: The routes outside a project. Their handlers are the functions themselves (find-usages works).
GLOBAL_ROUTES = Map(
    [
        Rule("/", endpoint=Api.health, methods=["GET"]),
        Rule("/auth/signup", endpoint=Api.signup, methods=["POST"]),
        Rule("/auth/signin", endpoint=Api.signin, methods=["POST"]),
        Rule("/auth/signinAnonymously", endpoint=Api.signin_anonymously, methods=["POST"]),
        Rule("/projects", endpoint=Api.create_project, methods=["POST"]),
        Rule("/projects", endpoint=Api.list_projects, methods=["GET"]),
        Rule("/projects/", endpoint=Api.list_projects, methods=["GET"]),
        Rule("/projects/<project_id>", endpoint=Api.get_project, methods=["GET"]),
    ],
    strict_slashes=False,
)
_GLOBAL_FIRST_SEGMENTS = frozenset({"", "auth", "projects"})
#: The routes of ``/:project_id/...``, matched once the project is known to exist.
PROJECT_ROUTES = Map(
    [
        Rule("/<pid>/requests", endpoint=Api.list_requests, methods=["GET"]),
        Rule("/<pid>/requests/me", endpoint=Api.my_requests, methods=["GET"]),
        Rule("/<pid>/requests/<rid>", endpoint=Api.get_request, methods=["GET"]),
        Rule("/<pid>/requests/<rid>/messages", endpoint=Api.send_message, methods=["POST"]),
        Rule("/<pid>/requests/<rid>/messages", endpoint=Api.list_messages, methods=["GET"]),
        Rule("/<pid>/requests/<rid>/close", endpoint=Api.close, methods=["PUT"]),
        Rule("/<pid>/requests/<rid>/closeg", endpoint=Api.closeg, methods=["PUT"]),
        Rule("/<pid>/requests/<rid>/reopen", endpoint=Api.reopen, methods=["PUT"]),
        Rule("/<pid>/requests/<rid>/rating", endpoint=Api.rating, methods=["PATCH"]),
        Rule("/<pid>/files/chat", endpoint=Api.upload_chat_file, methods=["POST"]),
        Rule("/<pid>/files", endpoint=Api.download_file, methods=["GET"]),
        Rule("/<pid>/subscriptions", endpoint=Api.create_subscription, methods=["POST"]),
        Rule("/<pid>/subscriptions", endpoint=Api.list_subscriptions, methods=["GET"]),
        Rule("/<pid>/subscriptions/history", endpoint=Api.history, methods=["GET"]),
        Rule("/<pid>/subscriptions/history/<hid>/resend", endpoint=Api.resend, methods=["POST"]),
        Rule("/<pid>/subscriptions/<sid>", endpoint=Api.get_subscription, methods=["GET"]),
        Rule("/<pid>/subscriptions/<sid>", endpoint=Api.delete_subscription, methods=["DELETE"]),
    ],
    strict_slashes=False,
)


async def read_body(request: Request) -> dict[str, Any]:
    """Parse a JSON (or form) body into an object; anything else is a 400 with a reason."""
    raw = await request.body()
    mimetype = request.mimetype
    if mimetype == "application/x-www-form-urlencoded":
        form: dict[str, Any] = {}
        for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
            form.setdefault(name, value)
        return form
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        return {}
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, {"err": "The body is not valid UTF-8."}) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, {"err": f"The body is not valid JSON: {str(exc)[:200]}"}) from None
    if not isinstance(value, dict):
        raise ApiError(400, {"err": 'The body must be a JSON object, e.g. {"text": "hello"}.'})
    problem = _unstorable(value)
    if problem:
        raise ApiError(400, {"err": problem})
    return value


#: Room for the multipart framing around a file at the upload limit.
_MULTIPART_OVERHEAD = 16 * 1024


async def read_upload(request: Request, limit: int) -> tuple[str, bytes]:
    """The name and bytes of the multipart field ``file``; 413 past ``limit``, 400 without it."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            400,
            {
                "success": False,
                "error": f"Send the file as multipart/form-data, field '{UPLOAD_FIELD}'.",
            },
        )
    raw = await request.body(limit + _MULTIPART_OVERHEAD)
    _, options = parse_options_header(request.headers.get("content-type", ""))
    try:
        _, _, files = FormDataParser().parse(
            io.BytesIO(raw), "multipart/form-data", len(raw), options
        )
    except ValueError:
        raise ApiError(
            400, {"success": False, "error": "The multipart body is malformed."}
        ) from None
    upload = files.get(UPLOAD_FIELD)
    if upload is None or not upload.filename:
        raise ApiError(
            400, {"success": False, "error": f"No file in the multipart field '{UPLOAD_FIELD}'."}
        )
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    return upload.filename, data


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, but they are not JSON: stored, they would make every
    # later answer that includes them unreadable for browsers and strict parsers.
    raise ValueError(f"{name} is not a JSON value; use null or a number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is too large")
    return number


def _unstorable(value: Any) -> str | None:
    """Why a parsed body cannot be stored and sent back as JSON, or None.

    Nesting beyond ``MAX_BODY_DEPTH`` would reach Python's recursion limit when the body is
    written out again; an unpaired surrogate escape (``"\\ud800"``) is not Unicode text.
    Walked with a stack, not recursion, for the same reason.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_BODY_DEPTH:
                return f"The body is nested more than {MAX_BODY_DEPTH} levels deep."
            stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            if depth > MAX_BODY_DEPTH:
                return f"The body is nested more than {MAX_BODY_DEPTH} levels deep."
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return (
                    "The body contains an unpaired surrogate escape (\\ud800 to \\udfff): "
                    "text must be valid Unicode."
                )
    return None


def error_response(error: ApiError) -> Response:
    """The answer for an :class:`ApiError`: JSON, or plain text without a content type."""
    if error.plain:
        response = text_response(error.status, str(error.body), content_type=None)
    else:
        response = json_response(error.status, error.body)
    response.headers.update(error.headers)
    return response


def cannot(request: Request) -> Response:
    """Express's answer to a route it does not know: 404 ``Cannot GET /path`` in HTML."""
    text = html.escape(f"Cannot {request.method} {request.path}")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Error</title>\n</head>\n<body>\n<pre>{text}</pre>\n</body>\n</html>\n"
    )
    return text_response(404, page, content_type="text/html")


def preflight(request: Request) -> Response:
    """The CORS preflight answer (``cors()`` defaults on Tiledesk)."""
    response = Response(
        204, b"", {"Access-Control-Allow-Methods": "GET,HEAD,PUT,PATCH,POST,DELETE"}
    )
    requested = request.headers.get("access-control-request-headers")
    if requested:
        response.headers["Access-Control-Allow-Headers"] = requested
        response.headers["Vary"] = "Access-Control-Request-Headers"
    return response
