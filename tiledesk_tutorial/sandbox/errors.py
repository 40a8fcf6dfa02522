"""The sandbox's errors: the HTTP answers it gives, shaped as the real server's, and its own failure
to start."""

from __future__ import annotations

from typing import Any

from tiledesk_tutorial.errors import TiledeskTutorialError


class SandboxError(TiledeskTutorialError):
    """The sandbox could not start (its port is taken, its address cannot be used)."""


class ApiError(Exception):
    """An HTTP error answer: a status, a JSON body (or plain text) and optional headers."""

    def __init__(
        self,
        status: int,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        plain: bool = False,
    ) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.plain = plain


def unauthorized() -> ApiError:
    """Passport's failure: 401 with the plain-text body ``Unauthorized`` and no content type."""
    return ApiError(
        401, "Unauthorized", headers={"WWW-Authenticate": 'Basic realm="Users"'}, plain=True
    )


def forbidden(msg: str) -> ApiError:
    """A role or membership failure: 403 ``{success: false, msg}``."""
    return ApiError(403, {"success": False, "msg": msg})


def not_member() -> ApiError:
    """The caller is not a member of the project (or is a visitor of another project)."""
    return forbidden("you dont belong to the project.")


def role_too_low() -> ApiError:
    """The caller's role is below what the route needs."""
    return forbidden("you dont have the required role.")


def object_not_found() -> ApiError:
    """The server's generic 404 answer."""
    return ApiError(404, {"success": False, "msg": "Object not found."})


def validation(param: str, value: Any, msg: str = "Invalid value") -> ApiError:
    """An express-validator style 422 answer for one body field."""
    return ApiError(
        422, {"errors": [{"value": value, "msg": msg, "param": param, "location": "body"}]}
    )
