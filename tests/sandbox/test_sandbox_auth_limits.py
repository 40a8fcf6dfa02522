"""What a room's guessing and stale tokens cannot do: a burst of wrong passwords is bounded (and
never slows another user down), an unknown e-mail looks like a known one, and an expired token is
refused even after it was cached while valid."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable

import jwt
import pytest
import requests
from support.sandbox import PASSWORD, make_world

from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.sandbox.errors import ApiError
from tiledesk_tutorial.sandbox.guessing import FREE_FAILURES, MAX_WAIT, GuessingGuard

pytestmark = pytest.mark.security


def test_a_token_cached_while_valid_is_refused_once_it_expires(sandbox: SandboxHandle) -> None:
    world = make_world(sandbox.url)
    secret = sandbox.store.meta("global_secret", lambda: "unused")
    claims = jwt.decode(world.agent_token[4:], options={"verify_signature": False})
    expires = int(time.time()) + 2
    token = "JWT " + jwt.encode({**claims, "exp": expires}, secret, algorithm="HS256")
    path = f"/{world.project_id}/requests"
    assert world.api.get(path, token=token).status_code == 200  # verified, then cached
    assert world.api.get(path, token=token).status_code == 200  # from the cache
    while time.time() < expires + 0.05:
        time.sleep(0.05)
    expired = world.api.get(path, token=token)
    assert expired.status_code == 401
    assert world.api.get(path, token=world.agent_token).status_code == 200  # no exp: still good
    world.api.close()


def _burst(call: Callable[[], requests.Response], tries: int, threads: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()
    remaining = iter(range(tries))

    def run() -> None:
        with requests.Session():
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                status = call().status_code
                with lock:
                    statuses.append(status)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    return statuses


def test_a_burst_of_wrong_passwords_is_bounded_while_another_user_works(
    sandbox: SandboxHandle,
) -> None:
    victim, bystander = make_world(sandbox.url), make_world(sandbox.url)
    path = f"/{victim.project_id}/requests"
    wrong_basic = "Basic " + base64.b64encode(f"{victim.email}:wrong-guess".encode()).decode()
    bystander_statuses: list[int] = []
    stop = threading.Event()

    def bystander_works() -> None:
        own = f"/{bystander.project_id}/requests"
        while not stop.is_set():
            bystander_statuses.append(
                bystander.api.get(own, token=bystander.agent_token).status_code
            )

    working = threading.Thread(target=bystander_works)
    working.start()
    try:
        url = sandbox.url
        statuses = _burst(
            lambda: requests.get(url + path, headers={"Authorization": wrong_basic}, timeout=60),
            tries=100,
            threads=8,
        )
        signins = _burst(
            lambda: requests.post(
                url + "/auth/signin",
                json={"email": victim.email, "password": "wrong-guess"},
                timeout=60,
            ),
            tries=40,
            threads=8,
        )
        # Another account on the same address (loopback) signs in at once.
        other = bystander.api.post(
            "/auth/signin", json={"email": bystander.email, "password": PASSWORD}
        )
        assert other.status_code == 200
    finally:
        stop.set()
        working.join(30)
    assert set(statuses) <= {401, 429} and set(signins) <= {401, 429}
    # At most the free tries, and one per thread already past the check, cost a key derivation.
    assert statuses.count(401) <= FREE_FAILURES + 8, statuses
    assert statuses.count(429) >= 100 - FREE_FAILURES - 8
    assert signins.count(429) >= 40 - 8
    assert bystander_statuses and set(bystander_statuses) == {200}
    # Even the right password waits now: the answer gives the wait.
    refused = victim.api.post("/auth/signin", json={"email": victim.email, "password": PASSWORD})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= MAX_WAIT
    victim.api.close()
    bystander.api.close()


def test_an_unknown_email_is_answered_as_a_known_one(sandbox: SandboxHandle) -> None:
    world = make_world(sandbox.url)
    answers = {}
    for email in (world.email, "nobody-here@example.com"):
        answers[email] = [
            world.api.post("/auth/signin", json={"email": email, "password": "nope"}).status_code
            for _ in range(FREE_FAILURES + 2)
        ]
    expected = [401] * (FREE_FAILURES + 1) + [429]
    assert list(answers.values()) == [expected, expected]
    world.api.close()


def test_waits_double_per_account_and_per_remote_address() -> None:
    guard = GuessingGuard()
    for _ in range(FREE_FAILURES):
        guard.check("a@example.com", "10.0.0.7")
        guard.failed("a@example.com", "10.0.0.7")
    guard.check("a@example.com", "10.0.0.7")  # the free tries are not waited for
    guard.failed("a@example.com", "10.0.0.7")
    for account, address in (("a@example.com", "10.0.0.8"), ("b@example.com", "10.0.0.7")):
        with pytest.raises(ApiError) as refused:
            guard.check(account, address)  # the account, and the address, both wait
        assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
    guard.check("b@example.com", "127.0.0.1")  # another account from elsewhere: no wait
    # Loopback is never blocked as an address (a room may share it), only per account.
    for _ in range(FREE_FAILURES + 3):
        guard.failed(f"user{_}@example.com", "127.0.0.1")
    guard.check("fresh@example.com", "127.0.0.1")
    guard.succeeded("a@example.com")
    guard.check("a@example.com", "127.0.0.1")
