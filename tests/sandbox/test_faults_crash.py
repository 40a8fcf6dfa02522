"""The sandbox killed with SIGKILL under load from 8 concurrent senders, three times over.

After each restart on the same data folder: every message answered 200 is stored (verbatim, once),
and every webhook delivery that was not made before the crash is made after it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.faults import (
    ConcurrentSenders,
    DeliveryLedger,
    SandboxProcess,
    Sender,
    bare,
    find_secrets,
    open_db,
)
from support.sandbox import PASSWORD, Api, Receiver, make_world

pytestmark = pytest.mark.faults

SENDERS = 8
CRASHES = 3
ACKS_BEFORE_CRASH = 120  # per round: the kill lands while all 8 senders are mid-flight


def test_sigkill_under_load_loses_no_acknowledged_message_and_no_delivery(tmp_path: Path) -> None:
    # Each delivery's first attempt gets a 503, and the retry comes 0.5 s later: at every crash
    # some deliveries are surely still in the outbox, waiting.
    ledger = DeliveryLedger(failures_per_delivery=1)
    receiver = Receiver(respond=ledger)
    sandbox = SandboxProcess(tmp_path / "data", "--retries", "30", "--backoff", "0.5", "--verbose")
    try:
        url = sandbox.start()
        world = make_world(url)
        subscriptions = [
            world.subscribe(receiver.url, event) for event in ("message.create", "request.create")
        ]
        senders = [Sender(world.new_visitor(f"V{i}")[0], world.request_id()) for i in range(8)]
        acked: dict[str, tuple[str, str]] = {}
        unacked = 0
        pending_at_crash = []
        for crash in range(CRASHES):
            load = ConcurrentSenders(url, world.project_id, senders, label=f"round{crash}").start()
            load.wait_for_acks(ACKS_BEFORE_CRASH)
            sandbox.kill()
            load.join()
            assert load.errors == []
            assert len(load.unacked) == SENDERS  # every thread was cut off mid-send
            acked.update(load.acked)
            unacked += len(load.unacked)
            with open_db(sandbox.db_path) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                pending_at_crash.append(
                    db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
                )
            url = sandbox.start()

        api = Api(url)
        stored: dict[str, dict] = {}
        for sender in senders:
            messages = api.get(world.messages_path(sender.request_id), token=world.agent_token)
            assert messages.status_code == 200
            for message in messages.json():
                assert message["_id"] not in stored  # nothing stored twice
                stored[message["_id"]] = message
        missing = [acked[i] for i in acked if i not in stored]
        assert missing == [], f"acknowledged but lost: {missing[:5]}"
        for message_id, (request_id, text) in acked.items():
            assert (stored[message_id]["recipient"], stored[message_id]["text"]) == (
                request_id,
                text,
            )
        # At most the one send each thread had in flight at each crash is stored without an ack.
        assert len(stored) - len(acked) <= unacked

        wanted = {("message.create", message_id) for message_id in stored}
        requests_listed = api.get(
            f"/{world.project_id}/requests", params={"status": "all"}, token=world.agent_token
        ).json()["requests"]
        assert sorted(r["request_id"] for r in requests_listed) == sorted(
            s.request_id for s in senders
        )
        wanted |= {("request.create", r["_id"]) for r in requests_listed}
        assert ledger.wait_for(wanted, timeout=60) == set()
        assert sum(pending_at_crash) > 0  # the premise: deliveries were waiting at the crashes

        # The tokens signed before the crashes still work, and so does signing in.
        signin = api.post("/auth/signin", json={"email": world.email, "password": PASSWORD})
        assert signin.status_code == 200
        assert sandbox.stop() == 0
        log = sandbox.stderr_text()
        assert "Traceback" not in log
        secrets = {"password": PASSWORD, "agent token": bare(world.agent_token)}
        secrets.update({f"visitor token {i}": bare(s.token) for i, s in enumerate(senders)})
        secrets.update({f"webhook secret {s['_id']}": s["secret"] for s in subscriptions})
        assert find_secrets(log, secrets) == []
        api.close()
        world.api.close()
        print(
            f"\ncrash test: {len(acked)} messages acknowledged, {len(stored)} stored, "
            f"{CRASHES} SIGKILLs, pending deliveries at each crash {pending_at_crash}, "
            f"{ledger.faults} deliveries failed on purpose, {len(ledger.accepted)} accepted"
        )
    finally:
        sandbox.kill()
        receiver.stop()
