"""The delivery worker's HTTP client: kept-alive connections, stale ones, bad targets, limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from cheroot import wsgi

from tiledesk_tutorial.sandbox.sender import DeliveryError, InvalidTarget, Sender


class KeepAliveServer:
    """A keep-alive HTTP/1.1 server that records the client port of each request."""

    def __init__(self, body: bytes = b'{"ok":true}') -> None:
        self.ports: list[str] = []
        self.body = body
        self.server = wsgi.Server(("127.0.0.1", 0), self.app, numthreads=2, shutdown_timeout=1)
        self.server.prepare()
        self.url = f"http://127.0.0.1:{self.server.bind_addr[1]}/hook?x=1"
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def app(self, environ, start_response):
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.ports.append(environ["REMOTE_PORT"])
        start_response("200 OK", [("Content-Length", str(len(self.body)))])
        return [self.body]

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    s = KeepAliveServer()
    yield s
    s.stop()


def test_reuses_one_connection_per_target(server: KeepAliveServer) -> None:
    sender = Sender(2, 2, 2048)
    answers = [
        sender.post(server.url, b"{}", {"Content-Type": "application/json"}) for _ in range(5)
    ]
    assert [a.status for a in answers] == [200] * 5
    assert answers[0].body == b'{"ok":true}'
    assert len(set(server.ports)) == 1
    sender.close()


def test_a_connection_closed_by_the_target_is_replaced_once(server: KeepAliveServer) -> None:
    sender = Sender(2, 2, 2048)
    sender.post(server.url, b"{}", {})
    # The target drops the idle connection, as servers do after a keep-alive timeout.
    for connection in sender._connections().values():
        connection.sock.shutdown(2)
    assert sender.post(server.url, b"{}", {}).status == 200
    assert len(set(server.ports)) == 2
    sender.close()


def test_a_refused_connection_is_a_delivery_error() -> None:
    s = KeepAliveServer()
    url = s.url
    s.stop()
    with pytest.raises(DeliveryError, match="ConnectionRefused"):
        Sender(2, 2, 2048).post(url, b"{}", {})


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://", "http://host:99999/x"])
def test_bad_targets_are_refused_before_sending(url: str) -> None:
    with pytest.raises(InvalidTarget):
        Sender(2, 2, 2048).post(url, b"{}", {})


def test_a_long_answer_is_cut_and_its_connection_not_reused() -> None:
    s = KeepAliveServer(body=b"x" * 10_000)
    try:
        sender = Sender(2, 2, 100)
        first = sender.post(s.url, b"{}", {})
        second = sender.post(s.url, b"{}", {})
        assert (len(first.body), len(second.body)) == (100, 100)
        assert len(set(s.ports)) == 2
        sender.close()
    finally:
        s.stop()
