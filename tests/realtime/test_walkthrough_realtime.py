"""``tiledesk-tutorial walkthrough --realtime``: the tutorial received over the Realtime API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.tutorial import FULL_JWT, clean_tutorial_env


def test_the_walkthrough_receives_the_conversation_over_the_realtime_api(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_tutorial_env(monkeypatch, tmp_path / "home")
    run = subprocess.run(
        [sys.executable, "-m", "tiledesk_tutorial", "walkthrough", "--realtime"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    steps = [line for line in run.stdout.splitlines() if line.startswith("[")]
    assert len(steps) == 10 and all(" ok  " in line for line in steps)
    assert "Realtime feed connected and subscribed  ok  ws://127.0.0.1:" in run.stdout
    assert "[visitor] John: My order #4242 has not arrived yet. (via realtime)" in run.stdout
    assert "[agent] Ada Lovelace: Hi I'm Ada. How can I help you? (via realtime)" in run.stdout
    assert "request.close and the system message received" in run.stdout
    # the visitor's message, the agent's reply, request.close and "Chat closed"
    assert run.stdout.splitlines()[-1].startswith("All 10 steps passed: 4 realtime events")
    assert "webhook" not in run.stdout.lower() and run.stderr == ""
    assert not FULL_JWT.search(run.stdout)
