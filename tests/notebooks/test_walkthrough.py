"""``python -m tiledesk_tutorial walkthrough``, run as a presenter runs it: a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support.net import free_port
from support.tutorial import FULL_JWT, REPO

from tiledesk_tutorial.client import TiledeskClient
from tiledesk_tutorial.sandbox import SandboxHandle

PASSWORD = "Presenter-Passw0rd-never-shown"


def walkthrough(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the walkthrough in a fresh interpreter with this test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "tiledesk_tutorial", "walkthrough", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        input=stdin or "",
    )


def test_the_whole_tutorial_passes_on_a_private_sandbox(home: Path) -> None:
    run = walkthrough()
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("Tiledesk tutorial walkthrough, sandbox mode: http://127.0.0.1:")
    steps = [line for line in lines if line.startswith("[")]
    assert len(steps) == 12 and all(" ok  " in line for line in steps)
    assert "signed up (password hidden)" in run.stdout
    assert "sub='guest'" in run.stdout and "status ASSIGNED" in run.stdout
    assert "[visitor] John: My order #4242 has not arrived yet. (secret checked)" in run.stdout
    assert "[agent] Ada Lovelace: Hi I'm Ada. How can I help you?" in run.stdout
    assert "refused with 401" in run.stdout and "status CLOSED" in run.stdout
    # visitor message, agent reply, request.close and the "Chat closed" system message
    assert lines[-1].startswith("All 12 steps passed: 4 webhooks received in ")
    assert not FULL_JWT.search(run.stdout + run.stderr)
    assert run.stderr == ""
    assert not (home / "state.json").exists()  # a private sandbox leaves nothing behind


def test_curl_option_prints_each_call_redacted(home: Path) -> None:
    run = walkthrough("--curl")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "curl -X POST http://127.0.0.1:" in run.stdout
    assert '"password": "***"' in run.stdout
    assert "-H 'Authorization: JWT eyJh…" in run.stdout
    assert not FULL_JWT.search(run.stdout)


def test_an_unreachable_server_fails_at_the_first_step_with_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEDESK_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("TILEDESK_EMAIL", "presenter@example.com")
    monkeypatch.setenv("TILEDESK_PASSWORD", PASSWORD)
    run = walkthrough()
    assert run.returncode == 1
    last = run.stdout.splitlines()[-1]
    assert last.startswith("Walkthrough failed at 'Sign up': POST http://127.0.0.1:")
    assert "connection refused" in last
    assert "Traceback" not in run.stdout + run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    assert "[ 2/12]" not in run.stdout


def test_live_mode_without_credentials_says_which_variables(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEDESK_API_URL", "http://127.0.0.1:9")
    run = walkthrough()
    assert run.returncode == 1
    assert "set TILEDESK_EMAIL and TILEDESK_PASSWORD" in run.stdout.splitlines()[-1]
    assert "Traceback" not in run.stderr


def test_live_mode_against_a_server_named_by_the_environment(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a presenter does with a real Tiledesk, here with the sandbox standing in for it."""
    sandbox = sandbox_session
    email = f"presenter-{uuid.uuid4().hex[:8]}@example.com"
    with TiledeskClient(sandbox.url) as owner:
        owner.sign_up(email, PASSWORD, "Pat", "Presenter")
    monkeypatch.setenv("TILEDESK_API_URL", sandbox.url)
    monkeypatch.setenv("TILEDESK_EMAIL", email)
    monkeypatch.setenv("TILEDESK_PASSWORD", PASSWORD)
    first = walkthrough()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "has an account already: signing in with it" in first.stdout
    assert "created the project 'Tiledesk tutorial'" in first.stdout
    state = json.loads((home / "state.json").read_text())
    entry = state["servers"][sandbox.url]
    assert entry["mode"] == "live" and "password" not in entry
    assert PASSWORD not in (home / "state.json").read_text()
    assert PASSWORD not in first.stdout + first.stderr
    # The second run reuses the remembered project, and the subscriptions were deleted.
    second = walkthrough()
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"PROJECT_ID {entry['project_id']}" in second.stdout
    assert "created the project" not in second.stdout
    with TiledeskClient(sandbox.url, project_id=entry["project_id"]) as owner:
        owner.sign_in(email, PASSWORD)
        assert owner.list_subscriptions() == []


def test_the_command_line_without_a_command_shows_help() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tiledesk_tutorial"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert run.returncode == 2
    assert "walkthrough" in run.stdout
