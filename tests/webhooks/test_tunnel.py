"""The ngrok tunnel, through pyngrok's real code path, with an ngrok stand-in executable.

The stand-in (tests/ngrok_standin.py) starts a local API and a real reverse proxy, so a delivery
POSTed to the "public" URL reaches the listener. Its failure modes print the real agent's errors.
"""

from __future__ import annotations

import logging
import socket

import pytest
import requests
from pyngrok import installer
from support.listener import listener_threads, post
from support.tunnel import STANDIN_AUTHTOKEN as AUTHTOKEN
from support.tunnel import process_alive

from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.tunnel import (
    TunnelError,
    close_tunnel,
    current_tunnel_url,
    is_loopback_url,
    open_tunnel,
    webhook_target,
)
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload

SECRET = "3f2c1a9e-8b7d-4e6f-a5c4-1b2a3c4d5e6f"


@pytest.fixture
def listener():
    with WebhookListener(secret=SECRET) as running:
        yield running
    assert listener_threads() == []


def _send(url: str, text: str) -> requests.Response:
    delivery = make_delivery(make_message_payload(text), SECRET)
    return post(url, delivery.data(), delivery.headers)


def test_a_delivery_to_the_public_url_reaches_the_listener(standin, listener):
    url = standin.open(listener)

    assert url.endswith("/webhook")
    assert url != listener.url
    assert _send(url, "through the tunnel").status_code == 200
    assert [e.text for e in listener.events] == ["through the tunnel"]
    assert current_tunnel_url() == url.removesuffix("/webhook")
    (start,) = standin.starts()
    assert start["argv"][:4] == ["start", "--none", "--log", "stdout"]
    assert start["argv"][start["argv"].index("--authtoken") + 1] == AUTHTOKEN


def test_re_running_the_cell_reuses_the_tunnel(standin, listener):
    first = standin.open(listener)
    again = standin.open(listener)

    assert again == first
    assert len(standin.starts()) == 1
    assert _send(again, "still there").status_code == 200


def test_a_new_listener_port_re_points_the_tunnel_in_the_same_agent(standin, listener):
    old_url = standin.open(listener)
    with WebhookListener(secret=SECRET) as moved:
        new_url = standin.open(moved)

        assert _send(new_url, "to the new listener").status_code == 200
        assert [e.text for e in moved.events] == ["to the new listener"]
        assert len(standin.starts()) == 1  # no second agent session (ERR_NGROK_108 avoided)
        assert new_url != old_url
        with pytest.raises(requests.ConnectionError):
            requests.get(old_url, timeout=5)


def test_close_tunnel_stops_the_agent_and_can_be_repeated(standin, listener):
    url = standin.open(listener)
    (start,) = standin.starts()

    close_tunnel()
    close_tunnel()

    assert current_tunnel_url() is None
    assert not process_alive(start["pid"])
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    assert _send(standin.open(listener), "after reopening").status_code == 200
    assert len(standin.starts()) == 2


def test_the_authtoken_comes_from_the_environment(standin, listener, monkeypatch):
    monkeypatch.setenv("NGROK_AUTHTOKEN", AUTHTOKEN)
    standin.open(listener, authtoken=None)
    (start,) = standin.starts()
    assert AUTHTOKEN in start["argv"]


def test_the_authtoken_comes_from_the_dotenv_file(standin, listener, tmp_path):
    (tmp_path / ".env").write_text(f"NGROK_AUTHTOKEN={AUTHTOKEN}\n")
    standin.open(listener, authtoken=None)
    (start,) = standin.starts()
    assert AUTHTOKEN in start["argv"]


def test_an_authtoken_in_ngroks_own_config_is_enough(standin, listener):
    standin.config_path.write_text(f'version: "3"\nagent:\n  authtoken: {AUTHTOKEN}\n')
    url = standin.open(listener, authtoken=None)
    assert "--authtoken" not in standin.starts()[0]["argv"]
    assert _send(url, "config token").status_code == 200


def test_pyngrok_ngrok_path_selects_the_binary(standin, listener, monkeypatch):
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(standin.path))
    url = open_tunnel(listener, AUTHTOKEN, config_path=str(standin.config_path))
    assert _send(url, "env path").status_code == 200
    assert len(standin.starts()) == 1


def test_no_authtoken_anywhere_says_where_to_get_one_and_starts_nothing(standin, listener):
    with pytest.raises(TunnelError) as caught:
        standin.open(listener, authtoken=None)

    assert caught.value.code == "no-authtoken"
    assert "https://dashboard.ngrok.com/get-started/your-authtoken" in str(caught.value)
    assert "NGROK_AUTHTOKEN" in caught.value.hint
    assert standin.starts() == []


@pytest.mark.parametrize(
    ("failure", "code", "words"),
    [
        ("108", "ERR_NGROK_108", ["one ngrok agent at a time", "close_tunnel()", "/agents"]),
        ("4018", "ERR_NGROK_4018", ["verified account", "your-authtoken", "NGROK_AUTHTOKEN"]),
        ("105", "ERR_NGROK_105", ["rejected the authtoken", "copy it again"]),
    ],
)
def test_ngrok_errors_become_one_message_with_a_hint(
    standin, listener, monkeypatch, capfd, caplog, failure, code, words
):
    monkeypatch.setenv("NGROK_STANDIN_FAIL", failure)

    with caplog.at_level(logging.DEBUG), pytest.raises(TunnelError) as caught:
        standin.open(listener)

    message = str(caught.value)
    assert caught.value.code == code
    assert all(word in message for word in words), message
    # One line saying what happened, one hint saying what to do: no traceback soup.
    assert message == f"{caught.value.summary}\nHint: {caught.value.hint}"
    assert "\n" not in caught.value.summary and "\n" not in (caught.value.hint or "\n")
    assert caught.value.__suppress_context__  # no chained pyngrok traceback in the notebook
    assert AUTHTOKEN not in message
    assert AUTHTOKEN not in caplog.text  # the real agent echoes the token in ERR_NGROK_105
    assert code in caplog.text  # pyngrok's own DEBUG logs are still there for troubleshooting
    assert capfd.readouterr() == ("", "")
    assert current_tunnel_url() is None


def test_an_agent_that_cannot_reach_ngrok_is_reported_as_offline(standin, listener, monkeypatch):
    monkeypatch.setenv("NGROK_STANDIN_FAIL", "offline")

    with pytest.raises(TunnelError) as caught:
        standin.open(listener, startup_timeout=1)

    assert caught.value.code == "offline"
    assert "no such host" in str(caught.value)
    assert "TILEDESK_WEBHOOK_URL" in caught.value.hint


def test_a_binary_that_cannot_be_downloaded_says_how_to_install_one(
    standin, listener, monkeypatch, tmp_path
):
    # pyngrok downloads the agent when ngrok_path does not exist. Point its download at a closed
    # local port: the same failure as offline or behind a proxy, without depending on a network.
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]
    platform_key = f"{installer.get_system()}_{installer.get_arch()}"
    monkeypatch.setitem(
        installer.PLATFORMS, platform_key, f"http://127.0.0.1:{closed_port}/ngrok-v3.tgz"
    )
    missing = tmp_path / "no-ngrok-here" / "ngrok"

    with pytest.raises(TunnelError) as caught:
        open_tunnel(listener, AUTHTOKEN, ngrok_path=str(missing), config_path=str(tmp_path / "c"))

    assert caught.value.code == "download-failed"
    assert str(missing) in str(caught.value)
    assert "PYNGROK_NGROK_PATH" in caught.value.hint
    assert "https://ngrok.com/download" in caught.value.hint


def test_a_file_that_is_not_executable_is_reported(standin, listener, tmp_path):
    not_executable = tmp_path / "ngrok-not-executable"
    not_executable.write_text("not a program")

    with pytest.raises(TunnelError) as caught:
        open_tunnel(
            listener,
            AUTHTOKEN,
            ngrok_path=str(not_executable),
            config_path=str(standin.config_path),
        )

    assert caught.value.code == "not-runnable"
    assert "chmod +x" in caught.value.hint


def test_webhook_target_prefers_an_explicit_url(standin, listener, monkeypatch):
    monkeypatch.setenv("TILEDESK_WEBHOOK_URL", "https://hooks.example.org/tiledesk")
    assert webhook_target(listener, "https://api.tiledesk.com/v3") == (
        "https://hooks.example.org/tiledesk"
    )
    assert standin.starts() == []


@pytest.mark.parametrize(
    "api_url", ["http://127.0.0.1:3000", "http://localhost:3000/v3", "http://[::1]:3000"]
)
def test_webhook_target_is_the_local_url_when_tiledesk_runs_here(standin, listener, api_url):
    assert webhook_target(listener, api_url) == listener.url
    assert standin.starts() == []


def test_webhook_target_opens_a_tunnel_for_a_remote_tiledesk(standin, listener, monkeypatch):
    monkeypatch.setenv("NGROK_AUTHTOKEN", AUTHTOKEN)
    url = webhook_target(
        listener,
        "https://api.tiledesk.com/v3",
        ngrok_path=str(standin.path),
        config_path=str(standin.config_path),
    )
    assert url != listener.url
    assert _send(url, "from afar").status_code == 200


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:3000", True),
        ("http://127.1.2.3", True),
        ("http://localhost", True),
        ("http://sandbox.localhost:3000", True),
        ("http://[::1]:8080/v3", True),
        ("127.0.0.1:3000", True),
        ("https://api.tiledesk.com/v3", False),
        ("http://192.168.1.10:3000", False),
        ("http://0.0.0.0:3000", False),
    ],
)
def test_is_loopback_url(url, local):
    assert is_loopback_url(url) is local
