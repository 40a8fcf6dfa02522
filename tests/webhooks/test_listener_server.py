"""The listener's HTTP server under pressure, over real sockets: slow and idle connections with a
low open-files limit, keep-alive, and its header and body limits."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import requests
from support.listener import post

from tiledesk_tutorial.listener_server import MAX_HEADER_BYTES, connection_budget
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload

SECRET = "listener-server-secret-0123456789abcdef0123"
ROOT = Path(__file__).resolve().parents[2]

# A listener in its own process, with an open-files limit of 128: what a laptop with a low
# `ulimit -n` (macOS defaults to 256) has. It prints its URL and connection bound, then answers
# "count" with how many events it kept, until its stdin closes.
CHILD = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
    from tiledesk_tutorial.listener import WebhookListener
    listener = WebhookListener(secret=sys.argv[1]).start()
    print(listener.url, listener._server.max_connections, flush=True)
    for line in sys.stdin:
        print(len(listener.events), flush=True)
    listener.stop()
    """
)


def delivery(text: str):
    return make_delivery(make_message_payload(text), SECRET)


@pytest.mark.faults
def test_300_slow_connections_with_a_low_open_files_limit_never_stop_deliveries():
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, SECRET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    slow: list[socket.socket] = []
    stop = threading.Event()
    try:
        assert child.stdout is not None and child.stdin is not None
        url, bound = child.stdout.readline().split()
        assert 4 <= int(bound) < 128  # bounded below the open-files limit
        port = int(url.split(":")[2].split("/")[0])
        for _ in range(300):  # each sends the start of a request, then a byte now and then
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)

        def trickle() -> None:
            while not stop.wait(0.5):
                for sock in slow:
                    with contextlib.suppress(OSError):  # closed by the listener to make room
                        sock.send(b"x")

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        for n in range(20):
            hello = delivery(f"delivery {n} among slow connections")
            answer = post(url, hello.data(), hello.headers)
            assert answer.status_code == 200 and answer.json()["kept"] is True
        child.stdin.write("count\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "20"
        stop.set()
        trickler.join(5)
    finally:
        stop.set()
        for sock in slow:
            sock.close()
        if child.stdin is not None:
            child.stdin.close()
        assert child.wait(20) == 0
        if child.stdout is not None:
            child.stdout.close()


def test_a_sender_keeps_its_connection_between_deliveries(make_listener):
    listener = make_listener(secret=SECRET)
    connection = http.client.HTTPConnection("127.0.0.1", listener.port, timeout=10)
    connection.connect()
    first = connection.sock
    for n in range(30):
        hello = delivery(f"kept alive {n}")
        connection.request("POST", "/webhook", hello.data(), hello.headers)
        answer = connection.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["kept"] is True
        assert answer.getheader("Connection") != "close"
    assert connection.sock is first  # one connection for every delivery
    connection.close()
    assert len(listener.events) == 30


def test_slow_clients_hold_no_worker(make_listener):
    listener = make_listener(secret=SECRET)
    slow = []
    try:
        for _ in range(20):  # more than the workers: each sent half a request and stopped
            sock = socket.create_connection(("127.0.0.1", listener.port), timeout=10)
            sock.sendall(
                b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{"
            )
            slow.append(sock)
        hello = delivery("not held up")
        assert post(listener.url, hello.data(), hello.headers).json()["kept"] is True
    finally:
        for sock in slow:
            sock.close()


def test_headers_over_the_limit_get_431(make_listener):
    listener = make_listener(secret=SECRET)
    hello = delivery("big headers")
    answer = post(
        listener.url, hello.data(), {**hello.headers, "X-Padding": "a" * (MAX_HEADER_BYTES + 1)}
    )
    assert answer.status_code == 431
    assert listener.events == []


def test_chunked_bodies_over_the_limit_get_413(make_listener):
    listener = make_listener(secret=SECRET, max_body_bytes=10_000)

    def chunks(size: int):
        for _ in range(size // 1000):
            yield b" " * 1000

    headers = {"x-hook-secret": SECRET, "Content-Type": "application/json"}
    just_over = requests.post(listener.url, data=chunks(15_000), headers=headers, timeout=10)
    assert just_over.status_code == 413
    assert just_over.json()["error"] == "body larger than 10000 bytes"
    far_over = requests.post(listener.url, data=chunks(200_000), headers=headers, timeout=10)
    assert far_over.status_code == 413  # refused before being read
    assert listener.events == []
    hello = delivery("still fine")
    assert post(listener.url, hello.data(), hello.headers).status_code == 200


def test_the_connection_bound_follows_the_open_files_limit():
    assert connection_budget(100) <= 100
    assert connection_budget(4) == 4
