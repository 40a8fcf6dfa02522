"""What a room cannot do to the sandbox: huge headers, endless chunked bodies, slow or idle
connections, and a webhook target that never answers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import pytest
from support.faults import raw_request
from support.sandbox import Receiver, World, make_world

from tiledesk_tutorial.sandbox import RetryPolicy, SandboxHandle, start_sandbox
from tiledesk_tutorial.sandbox.protocols import HEADER_LIMIT

pytestmark = pytest.mark.faults


@pytest.fixture
def world(sandbox: SandboxHandle) -> Iterator[World]:
    w = make_world(sandbox.url)
    yield w
    w.api.close()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def test_headers_beyond_the_limit_are_431_and_never_read_whole(sandbox: SandboxHandle) -> None:
    fits = b"GET / HTTP/1.1\r\nHost: s\r\nX-Big: " + b"a" * (HEADER_LIMIT - 200) + b"\r\n\r\n"
    assert raw_request(sandbox.url, fits)[0] == 200
    too_big = b"GET / HTTP/1.1\r\nHost: s\r\nX-Big: " + b"a" * (HEADER_LIMIT + 10) + b"\r\n\r\n"
    status, answer = raw_request(sandbox.url, too_big)
    assert status == 431, answer[:200]
    # A client that streams an endless header is answered and cut off early: it never gets to
    # send its 64 MB.
    sent = 0
    with socket.create_connection(_address(sandbox.url), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: s\r\nX-Endless: ")
        answer = b""
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:  # the sandbox closed the connection
            pass
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    assert sent < 8 * 1024 * 1024
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert raw_request(sandbox.url, fits)[0] == 200


def _chunked_post(world: World, rid: str, body: bytes, chunk: int = 16 * 1024) -> tuple[int, bytes]:
    head = (
        f"POST {world.messages_path(rid)} HTTP/1.1\r\nHost: s\r\n"
        f"Authorization: {world.visitor_token}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk])
        for i in range(0, len(body), chunk)
    )
    status, answer = raw_request(world.api.base_url, head + chunks + b"0\r\n\r\n")
    assert status is not None, answer
    return status, answer.partition(b"\r\n\r\n")[2]


def test_the_body_limit_holds_for_chunked_bodies(world: World) -> None:
    rid = world.request_id()
    small = json.dumps({"text": "x" * 100_000}).encode()
    assert _chunked_post(world, rid, small)[0] == 200
    big = json.dumps({"text": "x" * (520 * 1024)}).encode()
    status, body = _chunked_post(world, rid, big)
    assert status == 413
    assert json.loads(body)["err"] == "Request entity too large"
    stored = world.api.get(world.messages_path(rid), token=world.visitor_token).json()
    assert [len(m["text"]) for m in stored] == [100_000]


def test_a_declared_length_over_the_limit_is_refused_before_the_body(world: World) -> None:
    head = (
        f"POST {world.messages_path(world.request_id())} HTTP/1.1\r\nHost: s\r\n"
        f"Authorization: {world.visitor_token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10**12}\r\n\r\n"
    ).encode()
    with socket.create_connection(_address(world.api.base_url), timeout=10) as sock:
        sock.sendall(head)  # and not one byte of the body
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


def test_slow_and_idle_connections_never_stop_the_sandbox_answering() -> None:
    with start_sandbox(head_timeout=1.0) as sandbox:
        world = make_world(sandbox.url)
        slow: list[socket.socket] = []
        stop = threading.Event()
        dribbler: threading.Thread | None = None
        try:
            for n in range(60):
                sock = socket.create_connection(_address(sandbox.url), timeout=10)
                if n % 2:  # half send a request one byte at a time, half send nothing at all
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: s\r\nX-Slow: ")
                slow.append(sock)

            def dribble() -> None:
                while not stop.wait(0.2):
                    for sock in slow[1::2]:
                        with contextlib.suppress(OSError):
                            sock.sendall(b"a")

            dribbler = threading.Thread(target=dribble, daemon=True)
            dribbler.start()
            rid = world.request_id()
            for n in range(20):  # everyone else is answered meanwhile
                assert world.send(rid, f"still answered {n}")["text"] == f"still answered {n}"
            # The head timeout then closes every one of them (408 if it had started a request).
            answers = []
            for sock in slow:
                sock.settimeout(10)
                data = b""
                try:
                    while chunk := sock.recv(4096):
                        data += chunk
                except OSError:
                    pass
                answers.append(data)
            assert all(a == b"" for a in answers[0::2])
            assert all(a.startswith(b"HTTP/1.1 408") for a in answers[1::2]), answers[1][:80]
        finally:
            stop.set()
            if dribbler is not None:
                dribbler.join(5)
            for sock in slow:
                sock.close()
            world.api.close()


class HungTarget:
    """A webhook target that accepts connections and never answers: a laptop gone to sleep."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def stop(self) -> None:
        self.server.close()
        self._thread.join(5)
        for connection in self.accepted:
            connection.close()


def test_a_hung_target_never_delays_the_others() -> None:
    hung, healthy = HungTarget(), Receiver()
    policy = RetryPolicy(retries=1, connect_timeout=5, read_timeout=60)
    try:
        with start_sandbox(retry_policy=policy, deliveries_per_target=2) as sandbox:
            world = make_world(sandbox.url)
            world.subscribe(hung.url)
            world.subscribe(healthy.url)
            rid = world.request_id()
            sent = [world.send(rid, f"message {n}")["_id"] for n in range(20)]
            delivered = healthy.wait(20, timeout=30)
            assert sorted(d.body["payload"]["_id"] for d in delivered) == sorted(sent)
            # Meanwhile the sleeping laptop holds its own lane only: two connections, no answer.
            assert len(hung.accepted) == 2
            history = world.api.get(
                f"/{world.project_id}/subscriptions/history", token=world.agent_token
            ).json()
            assert {h["target"] for h in history} == {healthy.url}
            world.api.close()
    finally:
        hung.stop()
        healthy.stop()


def test_a_refusing_target_is_retried_without_holding_the_others() -> None:
    refusing = socket.create_server(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{refusing.getsockname()[1]}/hook"
    refusing.close()  # nothing listens there: every connection is refused at once
    healthy = Receiver()
    policy = RetryPolicy(retries=2, backoff=0.05, max_backoff=0.1)
    try:
        with start_sandbox(retry_policy=policy) as sandbox:
            world = make_world(sandbox.url)
            world.subscribe(dead_url)
            world.subscribe(healthy.url)
            for n in range(10):
                world.send(world.request_id(), f"message {n}")
            assert len(healthy.wait(10, timeout=30)) == 10
            assert sandbox.wait_for_deliveries(timeout=30)
            history = world.api.get(
                f"/{world.project_id}/subscriptions/history", token=world.agent_token
            ).json()
            dead = [h for h in history if h["target"] == dead_url]
            assert sorted(h["attempt"] for h in dead) == sorted([1, 2, 3] * 10)
            assert {h["outcome"] for h in dead} == {"retrying", "failed"}
            world.api.close()
    finally:
        healthy.stop()
