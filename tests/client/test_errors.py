"""Error building on its own: every server error shape, hints, and secret scrubbing."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from support.net import free_port
from urllib3.connection import HTTPConnection
from urllib3.exceptions import (
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)

from tiledesk_tutorial.errors import (
    AuthenticationError,
    CallContext,
    EmailAlreadyRegisteredError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    TiledeskConnectionError,
    TiledeskError,
    ValidationError,
    error_for_response,
    error_for_transport_failure,
)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWc"
URL = "https://api.tiledesk.com/v3/6b0690cb0ed30d16ca8ddc1a/requests"


def build(status: int, body: str, **context: object) -> TiledeskError:
    return error_for_response(
        method="GET",
        url=URL,
        status=status,
        reason="Reason",
        headers={},
        body_text=body,
        context=CallContext(base_url="https://api.tiledesk.com/v3", **context),  # type: ignore[arg-type]
    )


CAST = {"message": "Cast to ObjectId failed"}
CLOSE = "You must be among the participants to close a conversation."


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (401, {"success": False, "msg": "Failed."}, AuthenticationError, "Failed."),
        (403, {"message": "Email already registered"}, EmailAlreadyRegisteredError, "Email"),
        (403, {"success": False, "error": CLOSE}, PermissionDeniedError, "participants"),
        (400, {"error": "Project not found with id: 5f00"}, NotFoundError, "with id: 5f00"),
        (400, {"error": "Invalid project id: x"}, ValidationError, "Invalid project id: x"),
        (422, {"errors": ["text field is required"]}, ValidationError, "text field is required"),
        (422, {"errors": [{"msg": "Invalid value", "param": "email"}]}, ValidationError, "email:"),
        (500, {"err": "error"}, ServerError, "'error'"),
        (500, {"msg": "Error getting object.", "err": CAST}, ServerError, "Error getting object."),
        (500, {"success": False, "err": CAST}, ServerError, "Cast to ObjectId failed"),
        (418, "I'm a teapot", TiledeskError, "I'm a teapot"),
    ],
)
def test_every_body_shape_is_quoted(
    status: int, body: str, cls: type[TiledeskError], message: str
) -> None:
    error = build(status, body if isinstance(body, str) else json.dumps(body))
    assert type(error) is cls
    assert message in str(error)
    assert str(error).startswith(f"GET {URL}: the server answered {status} Reason")


def test_invalid_project_id_hint_without_a_prefix_mixup() -> None:
    error = build(400, '{"error":"Invalid project id: abc"}')
    assert "24 hexadecimal characters" in str(error)


def test_participants_hint() -> None:
    body = '{"success":false,"error":"You must be among the participants to close a conversation."}'
    assert "owner/admin" in str(build(403, body))


def test_secrets_are_scrubbed_from_messages() -> None:
    body = f'{{"msg":"bad token JWT {JWT} for password hunter22"}}'
    error = build(401, body, secrets=("JWT " + JWT, "hunter22"), auth_scheme="jwt")
    text = str(error) + repr(error)
    assert JWT not in text and "hunter22" not in text
    assert "bad token JWT *** for password ***" in text
    # A JWT the client did not know of (someone else's) is still shown only redacted.
    other = build(401, f'{{"msg":"bad token {JWT}"}}', auth_scheme="jwt")
    assert JWT not in str(other) + repr(other)
    assert "bad token eyJhbG…" in str(other)


def test_str_is_one_summary_and_one_hint_line() -> None:
    error = build(401, "Unauthorized", auth_scheme="none")
    lines = str(error).splitlines()
    assert len(lines) == 2 and lines[1].startswith("Hint: ")
    assert error.args == (str(error),)


def _wrapped(reason: Exception) -> requests.ConnectionError:
    return requests.ConnectionError(MaxRetryError(None, "/x", reason))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "phrase"),
    [
        (
            _wrapped(
                NameResolutionError(
                    "no-such-host.invalid",
                    HTTPConnection("no-such-host.invalid"),
                    socket.gaierror(-2, "Name or service not known"),
                )
            ),
            "could not be resolved",
        ),
        (_wrapped(SSLError("certificate verify failed")), "TLS (https) handshake"),
        (
            requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError())),
            "closed before an answer came",
        ),
        (requests.RequestException("odd"), "failed before an answer came"),
    ],
)
def test_transport_failures_are_classified(exc: Exception, phrase: str) -> None:
    error = error_for_transport_failure(
        exc, method="POST", url="https://no-such-host.invalid/v3/auth/signin", context=CallContext()
    )
    assert isinstance(error, TiledeskConnectionError)
    assert phrase in str(error)
    assert error.status is None


def test_dropped_connection_on_a_post_warns_about_duplicates() -> None:
    exc = requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))
    error = error_for_transport_failure(
        exc, method="POST", url="http://h/x", context=CallContext(retry_safe=False)
    )
    assert "so as not to post it twice" in str(error)


def test_refused_on_a_remote_host_does_not_blame_the_sandbox() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    exc = _wrapped(NewConnectionError(HTTPConnection("tiledesk.example.com"), "Failed"))
    exc.args[0].reason.__cause__ = refused  # how urllib3 raises it: `from` the socket's error
    error = error_for_transport_failure(
        exc, method="GET", url="https://tiledesk.example.com:8443/x", context=CallContext()
    )
    assert "tiledesk.example.com:8443 refused the connection" in str(error)
    assert "sandbox" not in str(error)


def test_failures_are_classified_by_their_classes_not_their_words() -> None:
    # A message that only *says* "refused" or "timed out" is no refusal or timeout.
    for words in ("[Errno 111] Connection refused", "ReadTimeoutError: timed out"):
        error = error_for_transport_failure(
            requests.ConnectionError(words), method="GET", url="http://h/x", context=CallContext()
        )
        assert type(error) is TiledeskConnectionError
        assert "failed before an answer came" in str(error)


def _ipython(code: str) -> str:
    """Run ``code`` in a fresh IPython, as a notebook kernel would, and return what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "IPython", "--colors=nocolor", "--no-banner", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    return result.stdout + result.stderr


FAILING_CELL = """
from tiledesk_tutorial.client import TiledeskClient
client = TiledeskClient("http://127.0.0.1:{port}", retries=0)
client.sign_in("ada@example.com", "Passw0rd-in-cell")
"""


def test_notebooks_show_the_learners_line_not_library_frames() -> None:
    out = _ipython(FAILING_CELL.format(port=free_port()))
    assert "TiledeskConnectionError: POST http://127.0.0.1:" in out
    assert "Hint: nothing is listening" in out
    assert re.search(r'Raised by line \d: client.sign_in\("ada@example.com", "\*\*\*"\)', out)
    assert "Passw0rd-in-cell" not in out  # even the learner's own literal is hidden
    assert "Traceback" not in out and "urllib3" not in out and "client.py" not in out


def test_full_tracebacks_can_be_switched_back_on() -> None:
    cell = "import tiledesk_tutorial.errors as e; e.SHORT_TRACEBACKS = False" + FAILING_CELL
    out = _ipython(cell.format(port=free_port()))
    assert "client.py" in out and "TiledeskClient._call" in out  # where the call is made
    assert "TiledeskConnectionError" in out and "Raised by line" not in out
