"""The sandbox's HTTP layer: a WSGI application routing the Tiledesk paths to the service.

The order of checks follows the real server (contract §2.7): for ``/:project_id/...`` routes the
project id is checked first (400), then the caller is authenticated (401, plain text), then the
membership and role (403). Every answer carries ``Access-Control-Allow-Origin: *``.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import ClosingIterator

from tiledesk_tutorial.sandbox.access import Principal
from tiledesk_tutorial.sandbox.activity import Activity
from tiledesk_tutorial.sandbox.errors import ApiError
from tiledesk_tutorial.sandbox.service import SandboxService

log = logging.getLogger("tiledesk_tutorial.sandbox")

BODY_LIMIT = 500 * 1024  # Tiledesk's JSON_BODY_LIMIT default, "500KB"
MAX_BODY_DEPTH = 100  # levels of nesting in a JSON body; real Tiledesk bodies use a handful
HEALTH_TEXT = (
    "Hello from Tiledesk server. It's UP. This is the tiledesk-tutorial sandbox: "
    "see the tutorial's README for what it serves."
)

_GLOBAL_ROUTES = Map(
    [
        Rule("/", endpoint="health", methods=["GET"]),
        Rule("/auth/signup", endpoint="signup", methods=["POST"]),
        Rule("/auth/signin", endpoint="signin", methods=["POST"]),
        Rule("/auth/signinAnonymously", endpoint="signin_anonymously", methods=["POST"]),
        Rule("/projects", endpoint="create_project", methods=["POST"]),
        Rule("/projects", endpoint="list_projects", methods=["GET"]),
        Rule("/projects/", endpoint="list_projects", methods=["GET"]),
        Rule("/projects/<project_id>", endpoint="get_project", methods=["GET"]),
    ],
    strict_slashes=False,
)
_GLOBAL_FIRST_SEGMENTS = frozenset({"", "auth", "projects"})
_PROJECT_ROUTES = Map(
    [
        Rule("/<pid>/requests", endpoint="list_requests", methods=["GET"]),
        Rule("/<pid>/requests/me", endpoint="my_requests", methods=["GET"]),
        Rule("/<pid>/requests/<rid>", endpoint="get_request", methods=["GET"]),
        Rule("/<pid>/requests/<rid>/messages", endpoint="send_message", methods=["POST"]),
        Rule("/<pid>/requests/<rid>/messages", endpoint="list_messages", methods=["GET"]),
        Rule("/<pid>/requests/<rid>/close", endpoint="close", methods=["PUT"]),
        Rule("/<pid>/requests/<rid>/closeg", endpoint="closeg", methods=["PUT"]),
        Rule("/<pid>/subscriptions", endpoint="create_subscription", methods=["POST"]),
        Rule("/<pid>/subscriptions", endpoint="list_subscriptions", methods=["GET"]),
        Rule("/<pid>/subscriptions/history", endpoint="history", methods=["GET"]),
        Rule("/<pid>/subscriptions/<sid>", endpoint="get_subscription", methods=["GET"]),
        Rule("/<pid>/subscriptions/<sid>", endpoint="delete_subscription", methods=["DELETE"]),
    ],
    strict_slashes=False,
)


class SandboxApp:
    """The WSGI application. Mounted at the root and, through :func:`with_prefix`, under ``/v3``."""

    def __init__(
        self,
        service: SandboxService,
        extra_routes: dict[str, Callable] | None = None,
        activity: Activity | None = None,
    ):
        self.service = service
        self.extra_routes = extra_routes or {}
        self.activity = activity or Activity()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        self.activity.enter()
        try:
            body = self._answer(environ, start_response)
        except BaseException:
            self.activity.leave()
            raise
        return ClosingIterator(body, self.activity.leave)

    def _answer(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = BODY_LIMIT
        try:
            response = self.dispatch(request)
        except ApiError as error:
            response = error_response(error)
        except RequestEntityTooLarge:
            response = json_response(413, {"err": "Request entity too large", "limit": BODY_LIMIT})
        except HTTPException as error:  # werkzeug's own, e.g. a malformed request line
            response = json_response(error.code or 400, {"err": error.description})
        except Exception:
            log.exception("sandbox error on %s %s", request.method, request.path)
            response = json_response(
                500, {"success": False, "msg": "Internal sandbox error: see the sandbox's log."}
            )
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        """Route one request."""
        if request.method == "OPTIONS":
            return preflight(request)
        path = request.path
        if path in self.extra_routes and request.method == "GET":
            return self.extra_routes[path](request)
        if path.split("/", 2)[1] in _GLOBAL_FIRST_SEGMENTS:
            adapter = _GLOBAL_ROUTES.bind("sandbox", path_info=path)
            try:
                endpoint, args = adapter.match(method=request.method)
            except (NotFound, MethodNotAllowed):
                pass  # e.g. /auth/unknown: Tiledesk's project check answers it, as below
            else:
                return getattr(self, "_" + endpoint)(request, **args)
        return self._project_route(request)

    # -------------------------------------------------------------------------- global routes

    def _health(self, request: Request) -> Response:
        return Response(HEALTH_TEXT, mimetype="text/plain")

    def _signup(self, request: Request) -> Response:
        return json_response(200, self.service.signup(read_body(request)))

    def _signin(self, request: Request) -> Response:
        return json_response(200, self.service.signin(read_body(request)))

    def _signin_anonymously(self, request: Request) -> Response:
        return json_response(200, self.service.signin_anonymously(read_body(request)))

    def _create_project(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.service.create_project(caller, read_body(request)))

    def _list_projects(self, request: Request) -> Response:
        return json_response(200, self.service.list_projects(self._caller(request)))

    def _get_project(self, request: Request, project_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.service.get_project(caller, project_id))

    def _caller(self, request: Request) -> Principal:
        return self.service.auth.authenticate(request.headers.get("Authorization"))

    # ------------------------------------------------------------------------- project routes

    def _project_route(self, request: Request) -> Response:
        first_segment = request.path.strip("/").split("/")[0]
        if not first_segment:
            return cannot(request)
        project = self.service.resolve_project(first_segment)
        adapter = _PROJECT_ROUTES.bind("sandbox", path_info=request.path)
        try:
            endpoint, args = adapter.match(method=request.method)
        except (NotFound, MethodNotAllowed):
            return cannot(request)
        caller = self._caller(request)
        args.pop("pid")
        return getattr(self, "_p_" + endpoint)(request, caller, project, **args)

    def _p_send_message(self, request: Request, caller: Principal, project: dict, rid: str):
        member = self.service.auth.require(
            caller, project["_id"], "guest", subscription_allowed=True
        )
        body = read_body(request)
        return json_response(200, self.service.send_message(caller, member, project, rid, body))

    def _p_list_messages(self, request: Request, caller: Principal, project: dict, rid: str):
        member = self.service.auth.require(
            caller, project["_id"], "guest", subscription_allowed=True
        )
        return json_response(200, self.service.list_messages(caller, member, project["_id"], rid))

    def _p_list_requests(self, request: Request, caller: Principal, project: dict):
        member = self.service.auth.require(
            caller, project["_id"], "agent", subscription_allowed=True
        )
        query = request.args.to_dict()
        return json_response(200, self.service.list_requests(caller, member, project["_id"], query))

    def _p_my_requests(self, request: Request, caller: Principal, project: dict):
        member = self.service.auth.require(caller, project["_id"], "guest")
        query = request.args.to_dict()
        return json_response(
            200, self.service.list_requests(caller, member, project["_id"], query, mine=True)
        )

    def _p_get_request(self, request: Request, caller: Principal, project: dict, rid: str):
        member = self.service.auth.require(
            caller, project["_id"], "agent", subscription_allowed=True
        )
        return json_response(200, self.service.get_request(member, project["_id"], rid))

    def _p_close(self, request: Request, caller: Principal, project: dict, rid: str):
        member = self.service.auth.require(
            caller, project["_id"], "agent", subscription_allowed=True
        )
        read_body(request)  # validated like any other body; `force` changes nothing here
        return json_response(
            200, self.service.close_request(caller, member, project["_id"], rid, as_visitor=False)
        )

    def _p_closeg(self, request: Request, caller: Principal, project: dict, rid: str):
        member = self.service.auth.require(caller, project["_id"], "guest")
        read_body(request)
        return json_response(
            200, self.service.close_request(caller, member, project["_id"], rid, as_visitor=True)
        )

    def _p_create_subscription(self, request: Request, caller: Principal, project: dict):
        self.service.auth.require(caller, project["_id"], "admin")
        created = self.service.create_subscription(caller, project["_id"], read_body(request))
        response = json_response(200, created)
        response.headers["x-hook-secret"] = created["secret"]
        return response

    def _p_list_subscriptions(self, request: Request, caller: Principal, project: dict):
        self.service.auth.require(caller, project["_id"], "admin")
        return json_response(200, self.service.list_subscriptions(project["_id"]))

    def _p_history(self, request: Request, caller: Principal, project: dict):
        self.service.auth.require(caller, project["_id"], "admin")
        query = request.args.to_dict()
        return json_response(200, self.service.subscription_history(project["_id"], query))

    def _p_get_subscription(self, request: Request, caller: Principal, project: dict, sid: str):
        self.service.auth.require(caller, project["_id"], "admin")
        return json_response(200, self.service.get_subscription(project["_id"], sid))

    def _p_delete_subscription(self, request: Request, caller: Principal, project: dict, sid: str):
        self.service.auth.require(caller, project["_id"], "admin")
        return json_response(200, self.service.delete_subscription(project["_id"], sid))


def with_prefix(app: Callable, prefixes: Iterable[str]) -> Callable:
    """Serve ``app`` at the root and under each prefix: ``/v3/auth/signin`` is ``/auth/signin``."""
    cleaned = tuple("/" + p.strip("/") for p in prefixes if p.strip("/"))

    def prefixed(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix in cleaned:
            if path == prefix or path.startswith(prefix + "/"):
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                break
        return app(environ, start_response)

    return prefixed


def read_body(request: Request) -> dict[str, Any]:
    """Parse a JSON (or form) body into an object; anything else is a 400 with a reason."""
    mimetype = request.mimetype
    if mimetype == "application/x-www-form-urlencoded":
        return request.form.to_dict()
    raw = request.get_data(cache=True)
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


def json_response(status: int, body: Any) -> Response:
    """A JSON answer, as Express's ``res.json`` writes it."""
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type="application/json; charset=utf-8",
    )


def error_response(error: ApiError) -> Response:
    """The answer for an :class:`ApiError`: JSON, or plain text without a content type."""
    if error.plain:
        response = Response(str(error.body), status=error.status)
        del response.headers["Content-Type"]
    else:
        response = json_response(error.status, error.body)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def cannot(request: Request) -> Response:
    """Express's answer to a route it does not know: 404 ``Cannot GET /path`` in HTML."""
    text = html.escape(f"Cannot {request.method} {request.path}")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Error</title>\n</head>\n<body>\n<pre>{text}</pre>\n</body>\n</html>\n"
    )
    return Response(page, status=404, content_type="text/html; charset=utf-8")


def preflight(request: Request) -> Response:
    """The CORS preflight answer (``cors()`` defaults on Tiledesk)."""
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = "GET,HEAD,PUT,PATCH,POST,DELETE"
    requested = request.headers.get("Access-Control-Request-Headers")
    if requested:
        response.headers["Access-Control-Allow-Headers"] = requested
        response.headers["Vary"] = "Access-Control-Request-Headers"
    return response
