"""The feed's refusals, each one sentence with a hint, and the token never shown.

Tokens that cannot work are refused before connecting (the real server never answers a visitor's
handshake). Handshakes that fail are classified against real sockets on loopback: a port nothing
listens on, a plain HTTP server, and a WebSocket server that answers 401 or 400 the way Tiledesk's
does (ws-01).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus

import jwt
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.sync.server import Server, serve
from werkzeug.serving import make_server

from realtime.helpers import Quiet
from tiledesk_tutorial.errors import TiledeskTutorialError
from tiledesk_tutorial.realtime import (
    RealtimeAuthError,
    RealtimeEndpointError,
    RealtimeFeed,
    RealtimeUnreachableError,
)
from tiledesk_tutorial.wire import new_object_id, new_uuid

PROJECT = new_object_id()


def token(**claims: object) -> str:
    base = {"_id": new_object_id(), "sub": "user", "iat": int(time.time())}
    return "JWT " + jwt.encode(
        {**base, **claims}, "not-the-server-secret-0123456789abcdef", algorithm="HS256"
    )


AGENT_TOKEN = token(email="ada@example.com")


def feed(url: str, value: str = AGENT_TOKEN, **kwargs: object) -> RealtimeFeed:
    return RealtimeFeed(token=value, url=url, project_id=PROJECT, open_timeout=3, **kwargs)  # type: ignore[arg-type]


# -- tokens that cannot work -------------------------------------------------------------------
def test_a_visitor_token_is_refused_before_connecting() -> None:
    visitor = token(_id=new_uuid(), sub="guest")
    with pytest.raises(RealtimeAuthError) as caught:
        feed("ws://127.0.0.1:9/", visitor)
    assert "needs an agent's token" in str(caught.value)
    assert "visitor" in str(caught.value) and caught.value.hint
    assert isinstance(caught.value, TiledeskTutorialError)


def test_an_expired_token_is_refused_before_connecting() -> None:
    with pytest.raises(RealtimeAuthError, match=r"expired on \d{4}-\d\d-\d\d"):
        feed("ws://127.0.0.1:9/", token(exp=int(time.time()) - 60))


@pytest.mark.parametrize("value", ["", "   ", "JWT ", "not-a-jwt"])
def test_no_token_or_not_a_jwt_is_refused(value: str) -> None:
    with pytest.raises(RealtimeAuthError, match=r"(needs an agent's token|is not a JWT)"):
        feed("ws://127.0.0.1:9/", value)


def test_a_project_id_is_required() -> None:
    with pytest.raises(ValueError, match=r"24 hexadecimal characters"):
        RealtimeFeed(token=AGENT_TOKEN, url="ws://127.0.0.1:9/", project_id="my-project")


# -- handshakes that fail ----------------------------------------------------------------------
@pytest.fixture
def tiledesk_like() -> Iterator[Server]:
    """A WebSocket server that refuses as Tiledesk does: 400 off '/', 401 without a good token."""

    def refuse(connection: object, request: object) -> Response | None:
        path = request.path  # type: ignore[attr-defined]
        if not path.startswith("/?"):
            return _response(HTTPStatus.BAD_REQUEST)
        return _response(HTTPStatus.UNAUTHORIZED)

    with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            thread.join(10)


def _response(status: HTTPStatus) -> Response:
    body = status.phrase.encode()
    headers = Headers([("Content-Type", "text/html"), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


def _port(server: Server) -> int:
    return int(server.socket.getsockname()[1])


def test_401_says_the_token_was_refused(
    tiledesk_like: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"ws://127.0.0.1:{_port(tiledesk_like)}/"
    subject = feed(url)
    with pytest.raises(RealtimeAuthError) as caught:
        subject.start()
    error = caught.value
    assert str(error).startswith(f"{url} refused the token (401 Unauthorized)")
    assert error.status == 401 and "sign in again" in (error.hint or "")
    assert subject.state.status == "failed" and not subject.running
    assert "refused the token" in str(subject.state)
    # The token rides in the URL: not in the error, the state, the repr, or any log line.
    bare = AGENT_TOKEN.removeprefix("JWT ")
    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("tiledesk_tutorial")
    )
    shown = [str(error), str(subject.state), repr(subject), ours]
    assert "GET /?token=" in ours  # the library's debug log ran, and was redacted
    assert all(bare not in text and bare[:40] not in text for text in shown)


def test_a_wrong_path_says_set_tiledesk_realtime_url(tiledesk_like: Server) -> None:
    url = f"ws://127.0.0.1:{_port(tiledesk_like)}/v3/ws"
    with pytest.raises(RealtimeEndpointError) as caught:
        feed(url).start()
    assert "HTTP 400" in str(caught.value) and "not the Realtime API's address" in str(caught.value)
    assert "TILEDESK_REALTIME_URL" in (caught.value.hint or "")


def test_a_plain_http_server_is_not_a_realtime_api() -> None:
    def app(environ: dict, start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"Hello from Tiledesk server. It's UP."]

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        with pytest.raises(RealtimeEndpointError) as caught:
            feed(f"ws://127.0.0.1:{server.port}/").start()
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    said = str(caught.value)  # HTTP/1.1 200, or an answer that is not even HTTP/1.1
    assert "HTTP 200" in said or "does not speak WebSocket" in said
    assert "TILEDESK_REALTIME_URL" in (caught.value.hint or "")


def test_nothing_listening_is_unreachable_with_what_to_do() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/"
    subject = feed(url)
    with pytest.raises(RealtimeUnreachableError) as caught:
        subject.start()
    assert str(caught.value).startswith(f"nothing listens at {url} (connection refused)")
    assert "make sandbox" in (caught.value.hint or "")
    assert not subject.running


def test_a_handshake_that_never_completes_times_out() -> None:
    with socket.socket() as sock:  # accepts TCP (the backlog), never answers: a hung server
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"ws://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(RealtimeUnreachableError) as caught:
            RealtimeFeed(token=AGENT_TOKEN, url=url, project_id=PROJECT, open_timeout=0.5).start()
    assert "did not complete the WebSocket handshake in 0.5 s" in str(caught.value)
    assert "agent's" in (caught.value.hint or "")
