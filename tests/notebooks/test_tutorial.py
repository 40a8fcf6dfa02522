"""The notebooks' first cell: finding the sandbox, live mode, and the state shared by notebooks."""

from __future__ import annotations

import json
import re
import socket
import uuid
from pathlib import Path

import pytest
from support.net import free_port

from tiledesk_tutorial import tutorial
from tiledesk_tutorial.client import TiledeskClient
from tiledesk_tutorial.config import get_default, load_config
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox
from tiledesk_tutorial.sandbox_discovery import probe_sandbox
from tiledesk_tutorial.state import Account, TutorialState
from tiledesk_tutorial.tunnel import webhook_target
from tiledesk_tutorial.tutorial import Tutorial, TutorialError, start

PASSWORD = "Real-Passw0rd-never-stored"


def _state(home: Path) -> dict:
    return json.loads((home / "state.json").read_text())


def _email() -> str:
    """A new email for each test: the tests share one sandbox."""
    return f"grace-{uuid.uuid4().hex[:8]}@example.com"


def _sign_up(url: str, email: str, password: str = PASSWORD) -> None:
    with TiledeskClient(url) as client:
        client.sign_up(email, password, "Grace", "Hopper")


# -- finding the sandbox ------------------------------------------------------------------------
def test_sandbox_url_from_the_environment_is_used(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("TILEDESK_SANDBOX_URL", sandbox_session.url + "/")
    tt = start()
    assert (tt.mode, tt.api_url, tt.sandbox) == ("sandbox", sandbox_session.url, None)
    assert (
        f"Sandbox mode: the embedded Tiledesk at {sandbox_session.url}" in capsys.readouterr().out
    )
    assert tt.state.path == home / "state.json"


def test_a_silent_sandbox_url_falls_back_to_the_shared_port(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("TILEDESK_SANDBOX_URL", f"http://127.0.0.1:{free_port()}")
    tt = start(sandbox_port=sandbox_session.port)
    out = capsys.readouterr().out
    assert "does not answer" in out
    assert tt.api_url == f"http://127.0.0.1:{sandbox_session.port}"
    assert "shared by the notebooks" in tt.where
    assert tt.sandbox is None


def test_no_sandbox_anywhere_starts_one_in_the_kernel_and_reuses_it(
    home: Path, kernel_sandbox: None
) -> None:
    port = free_port()
    first = start(sandbox_port=port, quiet=True)
    assert first.sandbox is not None and first.api_url == f"http://127.0.0.1:{port}"
    assert first.sandbox.data_dir == home / "sandbox"  # kept: accounts outlive the kernel
    again = start(sandbox_port=port, quiet=True)
    assert again.sandbox is first.sandbox
    assert probe_sandbox(again.api_url)


def test_a_port_held_by_another_program_gives_a_private_sandbox(
    home: Path, kernel_sandbox: None, capsys
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        tt = start(sandbox_port=port)
    out = capsys.readouterr().out
    assert f"port {port} is used by another program" in out
    assert tt.sandbox is not None and tt.sandbox.port != port
    assert tt.where == "private to this kernel"


def test_a_data_folder_held_by_another_sandbox_gives_a_private_sandbox(
    home: Path, kernel_sandbox: None, capsys
) -> None:
    with start_sandbox(port=0, data_dir=home / "sandbox") as holder:  # not on the shared port
        tt = start(sandbox_port=free_port())
        out = capsys.readouterr().out
        assert "Another sandbox is already running on the data folder" in out
        assert holder.url in out
        assert tt.sandbox is not None and tt.sandbox.data_dir != holder.data_dir
        assert tt.where == "private to this kernel"


def test_a_real_tiledesk_greeting_is_not_taken_for_the_sandbox(
    sandbox_session: SandboxHandle,
) -> None:
    assert probe_sandbox(sandbox_session.url)
    assert not probe_sandbox(f"http://127.0.0.1:{free_port()}")
    # Explicit URLs accept any Tiledesk; the shared port needs the sandbox's own mark.
    assert probe_sandbox(sandbox_session.url, require_mark=False)


# -- the state across notebooks ----------------------------------------------------------------
def test_agent_signs_up_and_creates_the_project_once_then_reuses_them(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("TILEDESK_SANDBOX_URL", sandbox_session.url)
    first = start(quiet=False)
    agent = first.agent()
    out = capsys.readouterr().out
    assert "was signed up now" in out and "created the project" in out
    entry = _state(home)["servers"][sandbox_session.url]
    assert entry["mode"] == "sandbox"
    assert entry["email"] == first.account.email and entry["password"] == first.account.password
    assert entry["project_id"] == agent.project_id == first.project_id
    assert first.agent() is agent

    # The next notebook (a new kernel): same account, same project, nothing announced.
    second = start(quiet=False)
    capsys.readouterr()
    assert second.project_id == agent.project_id
    assert second.account == first.account
    assert "Note:" not in capsys.readouterr().out
    visitor = second.visitor("Jane")
    assert visitor.is_visitor and visitor.project_id == agent.project_id
    first.close()
    second.close()


def test_state_from_another_sandbox_is_repaired(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("TILEDESK_SANDBOX_URL", sandbox_session.url)
    TutorialState(home / "state.json").update(
        sandbox_session.url,
        live=False,
        email="gone@example.com",
        password="old-throwaway",
        project_id="5f0000000000000000000000",
    )
    tt = start()
    agent = tt.agent()
    out = capsys.readouterr().out
    assert "gone@example.com was signed up now" in out
    assert "because the one remembered is gone" in out
    assert agent.project_id != "5f0000000000000000000000"
    assert _state(home)["servers"][sandbox_session.url]["project_id"] == agent.project_id
    tt.close()


def test_remember_makes_a_project_the_one_of_the_next_notebooks(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEDESK_SANDBOX_URL", sandbox_session.url)
    tt = start(quiet=True)
    agent = tt.agent()
    other = agent.create_project("Second project")
    tt.remember(other)
    assert agent.project_id == other.id
    assert start(quiet=True).project_id == other.id
    tt.close()


def test_state_file_problems() -> None:
    state = TutorialState(None)
    with pytest.raises(ValueError, match="never stored"):
        state.update("https://api.example.com", live=True, password="x")
    state.update("https://api.example.com/", live=True, email="a@example.com")
    assert state.get("https://api.example.com")["email"] == "a@example.com"


def test_an_unreadable_state_file_is_ignored(home: Path, caplog) -> None:
    (home / "state.json").write_text("{not json")
    state = TutorialState(home / "state.json")
    assert state.get("http://x") == {}
    assert "ignoring the unreadable tutorial state" in caplog.text
    state.update("http://x", live=False, email="e@example.com")
    assert _state(home)["servers"]["http://x"]["email"] == "e@example.com"


# -- live mode ---------------------------------------------------------------------------------
def test_live_mode_signs_in_creates_a_project_and_never_stores_the_password(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    email = _email()
    _sign_up(sandbox_session.url, email)
    monkeypatch.setenv("TILEDESK_API_URL", sandbox_session.url)
    monkeypatch.setenv("TILEDESK_EMAIL", email)
    monkeypatch.setenv("TILEDESK_PASSWORD", PASSWORD)
    tt = start()
    assert tt.is_live and tt.api_url == sandbox_session.url
    pid = tt.project_id
    assert "Live mode" in capsys.readouterr().out
    text = (home / "state.json").read_text()
    assert PASSWORD not in text and "password" not in text
    assert _state(home)["servers"][sandbox_session.url] | {"updated_at": ""} == {
        "mode": "live",
        "email": email,
        "project_id": pid,
        "project_name": "Tiledesk tutorial",
        "updated_at": "",
    }
    assert repr(tt.account) == (f"Account(email='{email}', password=<hidden>, your account)")
    assert start(quiet=True).project_id == pid  # remembered, not created again
    tt.close()


def test_live_mode_with_a_project_id_uses_it(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = _email()
    _sign_up(sandbox_session.url, email)
    with TiledeskClient(sandbox_session.url) as owner:
        owner.sign_in(email, PASSWORD)
        project = owner.create_project("Existing")
    monkeypatch.setenv("TILEDESK_API_URL", sandbox_session.url)
    monkeypatch.setenv("TILEDESK_EMAIL", email)
    monkeypatch.setenv("TILEDESK_PASSWORD", PASSWORD)
    monkeypatch.setenv("TILEDESK_PROJECT_ID", project.id)
    tt = start(quiet=True)
    assert tt.project_id == project.id
    assert not (home / "state.json").exists()
    tt.close()


def test_live_mode_wrong_password_says_what_to_check(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = _email()
    _sign_up(sandbox_session.url, email)
    monkeypatch.setenv("TILEDESK_API_URL", sandbox_session.url)
    monkeypatch.setenv("TILEDESK_EMAIL", email)
    monkeypatch.setenv("TILEDESK_PASSWORD", "wrong-password")
    tt = start(quiet=True)
    with pytest.raises(TutorialError, match=re.escape(f"refused to sign in {email}")) as info:
        tt.agent()
    assert "wrong-password" not in str(info.value)
    shown = info.value._render_traceback_()  # what a notebook shows: no traceback soup
    assert shown[:2] == [f"TutorialError: {info.value.summary}", f"Hint: {info.value.hint}"]
    assert "TILEDESK_PASSWORD" in shown[1] and not any("Traceback" in line for line in shown)
    tt.close()


def test_live_mode_asks_for_missing_credentials_once(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = _email()
    _sign_up(sandbox_session.url, email)
    monkeypatch.setattr(tutorial, "_asked", {})
    asked: list[tuple[str, bool]] = []

    def ask(prompt: str, secret: bool) -> str:
        asked.append((prompt, secret))
        return PASSWORD if secret else email

    config = load_config(None, environ={"TILEDESK_API_URL": sandbox_session.url})
    make = lambda: Tutorial(  # noqa: E731
        mode="live",
        api_url=sandbox_session.url,
        config=config,
        home=home,
        state=TutorialState(home / "state.json"),
        ask=ask,
        say=lambda _: None,
    )
    tt = make()
    assert tt.agent().user is not None
    assert [secret for _, secret in asked] == [False, True]
    assert make().account == tt.account  # the same kernel does not ask again
    assert len(asked) == 2
    assert PASSWORD not in (home / "state.json").read_text()
    tt.close()


def test_live_mode_that_cannot_ask_explains_the_variables(
    home: Path, monkeypatch: pytest.MonkeyPatch, sandbox_session: SandboxHandle
) -> None:
    monkeypatch.setattr(tutorial, "_asked", {})
    monkeypatch.setenv("TILEDESK_API_URL", sandbox_session.url)  # a server that answers
    monkeypatch.setattr("builtins.input", _no_stdin)
    tt = start(quiet=True)
    with pytest.raises(TutorialError, match="TILEDESK_EMAIL and TILEDESK_PASSWORD"):
        _ = tt.account


def test_live_mode_checks_that_the_server_answers_before_saying_live_mode(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("TILEDESK_API_URL", url)
        with pytest.raises(TutorialError) as info:
            start()
    message = str(info.value)
    assert f"TILEDESK_API_URL is {url} (set in the environment), but could not connect" in message
    assert "connection refused" in message
    assert "Hint: check TILEDESK_API_URL" in message
    assert "sandbox =" not in message and "make sandbox" not in message  # live mode uses none
    assert "Live mode" not in capsys.readouterr().out


def _no_stdin(prompt: str = "") -> str:
    raise OSError("reading from stdin while output is captured")


def test_a_malformed_setting_is_one_clear_error(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEDESK_API_URL", "api.tiledesk.com")
    with pytest.raises(TutorialError, match=r"Did you mean https://api\.tiledesk\.com"):
        start(quiet=True)


def test_account_repr_hides_the_password() -> None:
    account = Account("a@example.com", "s3cret-value", local=True)
    assert "s3cret" not in repr(account) and "throw-away" in repr(account)


def test_describe_shows_no_secret(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEDESK_SANDBOX_URL", sandbox_session.url)
    tt = start(quiet=True)
    tt.agent()
    text = tt.describe()
    assert tt.account.password not in text
    assert f"PROJECT_ID: {tt.project_id}" in text and "Mode:       sandbox" in text
    tt.close()


def test_a_second_sandbox_on_the_shared_port_is_found(home: Path) -> None:
    with start_sandbox(port=0) as running:
        tt = start(sandbox_port=running.port, quiet=True)
        assert tt.api_url == running.url and tt.sandbox is None


def test_start_with_an_env_file_is_what_the_tunnel_and_the_client_see(
    home: Path, sandbox_session: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = home / "workshop.env"
    env_file.write_text(
        f"TILEDESK_SANDBOX_URL={sandbox_session.url}\n"
        "TILEDESK_WEBHOOK_URL=https://hooks.example.com/tiledesk\n"
        "TILEDESK_LISTENER_PORT=8123\n"
    )
    tt = start(env_file=str(env_file), quiet=True)
    assert tt.api_url == sandbox_session.url and tt.listener_port(8099) == 8123
    assert get_default() is tt.config
    with WebhookListener() as listener:  # a remote API: the URL from the file, no tunnel
        assert webhook_target(listener, "https://api.tiledesk.com/v3") == (
            "https://hooks.example.com/tiledesk"
        )
    assert TiledeskClient.from_config(sandbox_url=tt.api_url).base_url == sandbox_session.url
    tt.close()
