"""The configuration: environment over .env, checked values, one process-wide default, and a
description that hides secrets."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
from pathlib import Path

import pytest

from tiledesk_tutorial.config import (
    ENV_VARS,
    TILEDESK_CLOUD_DASHBOARD_URL,
    TILEDESK_CLOUD_REALTIME_URL,
    Config,
    agent_console_url_for,
    get_default,
    import_colab_secrets,
    load_config,
    realtime_url_for,
    set_default,
)
from tiledesk_tutorial.errors import ConfigError, TiledeskTutorialError

PASSWORD = "Passw0rd!123-very-secret"
AUTHTOKEN = "2abcDEFghiJKLmnoPQRstuVWXyz_0123456789"


def write_env(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def test_nothing_set_means_the_sandbox(tmp_path: Path) -> None:
    config = load_config(tmp_path / "missing.env", environ={})
    assert config == Config()
    assert config.uses_sandbox and not config.has_credentials
    assert "not set → the embedded sandbox is used" in config.describe()


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = write_env(
        tmp_path / ".env",
        TILEDESK_API_URL="https://api.tiledesk.com/v3/",
        TILEDESK_EMAIL="file@example.com",
        TILEDESK_PASSWORD=PASSWORD,
        TILEDESK_PROJECT_ID="6b0690cb0ed30d16ca8ddc1a",
    )
    environ = {"TILEDESK_EMAIL": " env@example.com ", "TILEDESK_PROJECT_ID": ""}
    config = load_config(env_file, environ=environ)
    assert config.api_url == "https://api.tiledesk.com/v3"  # trailing slash removed
    assert config.email == "env@example.com"  # the environment wins, spaces removed
    assert config.project_id == "6b0690cb0ed30d16ca8ddc1a"  # empty in env → from the file
    assert config.password == PASSWORD
    assert not config.uses_sandbox and config.has_credentials
    assert config.sources["email"] == "environment"
    assert config.sources["api_url"] == str(env_file.resolve())


def test_loading_does_not_change_os_environ(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env", TILEDESK_EMAIL="file@example.com")
    before = dict(os.environ)
    load_config(env_file)
    assert dict(os.environ) == before


def test_env_file_found_in_a_parent_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(tmp_path / ".env", TILEDESK_WEBHOOK_URL="https://example.ngrok.app/hook")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)
    assert load_config(environ={}).webhook_url == "https://example.ngrok.app/hook"
    assert load_config(None, environ={}).webhook_url is None


def test_describe_and_repr_hide_secrets(tmp_path: Path) -> None:
    environ = {
        "TILEDESK_EMAIL": "ada@example.com",
        "TILEDESK_PASSWORD": PASSWORD,
        "NGROK_AUTHTOKEN": AUTHTOKEN,
    }
    config = load_config(None, environ=environ)
    for text in (config.describe(), repr(config), str(config)):
        assert PASSWORD not in text and AUTHTOKEN not in text
        assert AUTHTOKEN[4:12] not in text
    table = config.describe()
    assert re.search(r"TILEDESK_PASSWORD +set \(hidden\)  \(from environment\)", table)
    assert re.search(r"NGROK_AUTHTOKEN +2abc…\(38 chars\)", table)
    assert re.search(r"TILEDESK_EMAIL +ada@example.com", table)
    assert all(var in table for var in ENV_VARS.values())


@pytest.mark.parametrize(
    ("var", "value", "match"),
    [
        ("TILEDESK_API_URL", "api.tiledesk.com/v3", "Did you mean https://api.tiledesk.com/v3"),
        ("TILEDESK_API_URL", "ftp://x", "full http:// or https:// URL"),
        ("TILEDESK_WEBHOOK_URL", "localhost:8000", "full http:// or https:// URL"),
        ("TILEDESK_PROJECT_ID", "my-project", "24 hexadecimal characters"),
        ("TILEDESK_EMAIL", "ada", "not an email address"),
        ("TILEDESK_SANDBOX_URL", "127.0.0.1:3000", "full http:// or https:// URL"),
        ("TILEDESK_REALTIME_URL", "https://eu.rtmv3.tiledesk.com/api/", "ws:// or wss:// URL"),
        ("TILEDESK_LISTENER_PORT", "eighty", "a port is a number from 1 to 65535"),
        ("TILEDESK_LISTENER_PORT", "70000", "a port is a number from 1 to 65535"),
    ],
)
def test_malformed_values_name_the_variable_and_its_source(
    tmp_path: Path, var: str, value: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match) as info:
        load_config(None, environ={var: value})
    assert f"{var} (from environment)" in str(info.value)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, TiledeskTutorialError)
    env_file = write_env(tmp_path / ".env", **{var: value})
    with pytest.raises(ValueError, match=match) as info:
        load_config(env_file, environ={})
    assert str(env_file.resolve()) in str(info.value)


def test_a_config_is_frozen() -> None:
    config = Config(email="a@b.c")
    with pytest.raises(AttributeError):
        config.email = "x@y.z"  # type: ignore[misc]


def test_every_variable_the_package_reads_is_a_field(tmp_path: Path) -> None:
    environ = {
        "TILEDESK_LISTENER_PORT": "8123",
        "TILEDESK_TUTORIAL_HOME": "~/tutorial-home",
        "TILEDESK_SANDBOX_URL": "http://127.0.0.1:3000/",
        "TILEDESK_REALTIME_URL": "ws://127.0.0.1:3000/",
        "PYNGROK_NGROK_PATH": "/opt/ngrok",
    }
    config = load_config(None, environ=environ)
    assert config.listener_port == 8123
    assert config.home == Path("~/tutorial-home").expanduser() == config.tutorial_home
    assert config.sandbox_url == "http://127.0.0.1:3000"
    assert config.realtime_url == "ws://127.0.0.1:3000/"
    assert config.ngrok_path == "/opt/ngrok"
    assert Config().tutorial_home == Path.home() / ".tiledesk-tutorial"
    assert set(ENV_VARS) == {f.name for f in dataclasses.fields(Config)} - {"sources"}


def test_the_realtime_url_is_derived_from_the_api_url() -> None:
    assert realtime_url_for("http://127.0.0.1:3000") == "ws://127.0.0.1:3000/"
    assert realtime_url_for("https://tiledesk.example.com/api") == "wss://tiledesk.example.com/"
    assert realtime_url_for("https://api.tiledesk.com/v3") == TILEDESK_CLOUD_REALTIME_URL
    assert Config(api_url="http://localhost:3000").realtime_url_for() == "ws://localhost:3000/"
    set_explicitly = Config(api_url="http://localhost:3000", realtime_url="ws://other:1/ws/")
    assert set_explicitly.realtime_url_for() == "ws://other:1/ws/"
    with pytest.raises(ValueError, match="TILEDESK_REALTIME_URL"):
        Config().realtime_url_for()


def test_the_agent_console_is_the_sandboxs_or_the_clouds_dashboard() -> None:
    url = "http://127.0.0.1:3000"
    assert agent_console_url_for(url + "/", sandbox=True) == url + "/console"
    assert agent_console_url_for(url + "/v3", sandbox=True) == url + "/v3/console"
    cloud = "https://api.tiledesk.com/v3"
    assert agent_console_url_for(cloud, sandbox=False) == TILEDESK_CLOUD_DASHBOARD_URL
    assert agent_console_url_for("https://tiledesk.example.com/api", sandbox=False) is None


def test_the_default_is_read_once_and_can_be_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env above a tmp directory
    monkeypatch.setenv("TILEDESK_EMAIL", "first@example.com")
    set_default(None)
    first = get_default()
    monkeypatch.setenv("TILEDESK_EMAIL", "second@example.com")
    assert get_default() is first and first.email == "first@example.com"
    chosen = Config(email="chosen@example.com")
    set_default(chosen)
    assert get_default() is chosen
    set_default(None)  # read again on next use
    assert get_default().email == "second@example.com"


def test_colab_secrets_are_copied_into_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class SecretNotFoundError(Exception):
        pass

    secrets = {"TILEDESK_EMAIL": "colab@example.com", "TILEDESK_PASSWORD": PASSWORD}

    def get(name: str) -> str:
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)  # type: ignore[attr-defined]
    google = types.ModuleType("google")
    google.colab = colab  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.delenv("TILEDESK_PASSWORD", raising=False)
    monkeypatch.setenv("TILEDESK_EMAIL", "env-wins@example.com")
    assert import_colab_secrets() == ["TILEDESK_PASSWORD"]
    assert os.environ["TILEDESK_PASSWORD"] == PASSWORD
    assert os.environ["TILEDESK_EMAIL"] == "env-wins@example.com"


def test_outside_colab_nothing_is_copied() -> None:
    assert import_colab_secrets() == []
