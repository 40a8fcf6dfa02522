"""Soak: the sandbox under 8 concurrent clients for 60 s; no error, memory growth under 50 MB.

The sandbox runs as its own process (the CLI, as in a workshop), so that its resident memory is
its own: ``VmRSS`` is read from /proc before, during and after. Each client plays a visitor and
the agent: signs in, sends, replies, reads, lists, closes and starts over; every message is
delivered to a webhook receiver. Run with ``make soak`` (``pytest -m soak``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from support.faults import DeliveryLedger, SandboxProcess, find_secrets
from support.sandbox import PASSWORD, Receiver, make_world

pytestmark = [pytest.mark.soak, pytest.mark.timeout(600)]

CLIENTS = 8
SECONDS = 60
MAX_GROWTH_KIB = 50 * 1024


def test_eight_clients_for_a_minute(tmp_path: Path) -> None:
    ledger = DeliveryLedger(failures_per_delivery=0)
    receiver = Receiver(respond=ledger)
    sandbox = SandboxProcess(tmp_path / "data")
    try:
        url = sandbox.start()
        world = make_world(url)
        world.subscribe(receiver.url, "message.create")
        world.subscribe(receiver.url, "request.close")
        counts: Counter[str] = Counter()
        errors: list[str] = []
        lock = threading.Lock()
        start_rss = sandbox.rss_kib()
        samples = [(0.0, start_rss)]
        deadline = time.monotonic() + SECONDS

        def client(index: int) -> None:
            agent = {"Authorization": world.agent_token}
            with requests.Session() as session:

                def call(op: str, method: str, path: str, **kwargs) -> dict | list | None:
                    try:
                        response = session.request(method, url + path, timeout=30, **kwargs)
                    except requests.RequestException as exc:
                        answer, status = None, type(exc).__name__
                    else:
                        answer, status = response, response.status_code
                    with lock:
                        counts[op] += 1
                        if status != 200:
                            errors.append(f"{op}: {status} {getattr(answer, 'text', '')[:200]}")
                    return answer.json() if status == 200 else None

                conversation = 0
                while time.monotonic() < deadline:
                    visitor = call(
                        "sign in anonymously",
                        "POST",
                        "/auth/signinAnonymously",
                        json={"id_project": world.project_id, "firstname": f"Soak {index}"},
                    )
                    if visitor is None:
                        return
                    me = {"Authorization": visitor["token"]}
                    rid = f"{world.request_id()}"
                    path = world.messages_path(rid)
                    conversation += 1
                    for n in range(20):
                        call("send", "POST", path, json={"text": f"c{index}-{conversation}-{n}"},
                             headers=me)  # fmt: skip
                        if n % 4 == 1:
                            call("reply", "POST", path, json={"text": f"re {n}"}, headers=agent)
                        if n % 5 == 2:
                            call("read messages", "GET", path, headers=me)
                        if n % 10 == 3:
                            call("my requests", "GET", f"/{world.project_id}/requests/me",
                                 headers=me)  # fmt: skip
                            call("list requests", "GET", f"/{world.project_id}/requests",
                                 headers=agent, params={"limit": 100})  # fmt: skip
                        if time.monotonic() >= deadline:
                            break
                    call("close", "PUT", f"/{world.project_id}/requests/{rid}/close",
                         headers=agent)  # fmt: skip

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(5)
            samples.append((time.monotonic() - began, sandbox.rss_kib()))
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - began
        end_rss = sandbox.rss_kib()
        samples.append((elapsed, end_rss))

        assert errors == [], errors[:10]
        sent = sum(counts.values())
        # Every stored message reaches the receiver (system "Chat closed" messages included).
        assert sandbox.url is not None
        stored = []
        listed = requests.get(
            f"{url}/{world.project_id}/requests",
            params={"status": "all", "limit": 100},
            headers={"Authorization": world.agent_token},
            timeout=30,
        ).json()
        pages = (listed["count"] + 99) // 100
        for page in range(pages):
            batch = requests.get(
                f"{url}/{world.project_id}/requests",
                params={"status": "all", "limit": 100, "page": page},
                headers={"Authorization": world.agent_token},
                timeout=30,
            ).json()["requests"]
            for request in batch:
                stored += requests.get(
                    url + world.messages_path(request["request_id"]),
                    headers={"Authorization": world.agent_token},
                    timeout=30,
                ).json()
        assert len(stored) >= counts["send"] + counts["reply"]
        missing = ledger.wait_for({("message.create", m["_id"]) for m in stored}, timeout=120)
        assert missing == set()
        assert sandbox.stop() == 0
        log = sandbox.stderr_text()
        assert "Traceback" not in log and " ERROR " not in log
        assert find_secrets(log, {"password": PASSWORD}) == []
        growth = end_rss - start_rss
        print(
            f"\nsoak: {CLIENTS} clients, {elapsed:.0f} s, {sent} requests "
            f"({sent / elapsed:.0f}/s), "
            f"{dict(counts)}, {len(stored)} messages stored and delivered, "
            f"{len(ledger.accepted)} deliveries accepted; RSS {start_rss / 1024:.1f} MiB -> "
            f"{end_rss / 1024:.1f} MiB (+{growth / 1024:.1f} MiB), peak "
            f"{max(rss for _, rss in samples) / 1024:.1f} MiB; samples (s, MiB): "
            f"{[(round(t), round(rss / 1024, 1)) for t, rss in samples]}"
        )
        assert growth < MAX_GROWTH_KIB, f"RSS grew by {growth / 1024:.1f} MiB"
        world.api.close()
    finally:
        sandbox.kill()
        receiver.stop()
