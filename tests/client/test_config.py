"""Settings: environment over .env, checked values, and a description that hides secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiledesk_tutorial.settings import ENV_VARS, Settings, load_settings

PASSWORD = "Passw0rd!123-very-secret"
AUTHTOKEN = "2abcDEFghiJKLmnoPQRstuVWXyz_0123456789"


def write_env(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def test_nothing_set_means_the_sandbox(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "missing.env", environ={})
    assert settings == Settings()
    assert settings.uses_sandbox and not settings.has_credentials
    assert "not set → the embedded sandbox is used" in settings.describe()


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = write_env(
        tmp_path / ".env",
        TILEDESK_API_URL="https://api.tiledesk.com/v3/",
        TILEDESK_EMAIL="file@example.com",
        TILEDESK_PASSWORD=PASSWORD,
        TILEDESK_PROJECT_ID="6b0690cb0ed30d16ca8ddc1a",
    )
    environ = {"TILEDESK_EMAIL": " env@example.com ", "TILEDESK_PROJECT_ID": ""}
    settings = load_settings(env_file, environ=environ)
    assert settings.api_url == "https://api.tiledesk.com/v3"  # trailing slash removed
    assert settings.email == "env@example.com"  # the environment wins, spaces removed
    assert settings.project_id == "6b0690cb0ed30d16ca8ddc1a"  # empty in env → from the file
    assert settings.password == PASSWORD
    assert not settings.uses_sandbox and settings.has_credentials
    assert settings.sources["email"] == "environment"
    assert settings.sources["api_url"] == str(env_file.resolve())


def test_loading_does_not_change_os_environ(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env", TILEDESK_EMAIL="file@example.com")
    before = dict(os.environ)
    load_settings(env_file)
    assert dict(os.environ) == before


def test_env_file_found_in_a_parent_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(tmp_path / ".env", TILEDESK_WEBHOOK_URL="https://example.ngrok.app/hook")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)
    assert load_settings(environ={}).webhook_url == "https://example.ngrok.app/hook"
    assert load_settings(None, environ={}).webhook_url is None


def test_describe_and_repr_hide_secrets(tmp_path: Path) -> None:
    environ = {
        "TILEDESK_EMAIL": "ada@example.com",
        "TILEDESK_PASSWORD": PASSWORD,
        "NGROK_AUTHTOKEN": AUTHTOKEN,
    }
    settings = load_settings(None, environ=environ)
    for text in (settings.describe(), repr(settings), str(settings)):
        assert PASSWORD not in text and AUTHTOKEN not in text
        assert AUTHTOKEN[4:12] not in text
    table = settings.describe()
    assert "TILEDESK_PASSWORD     set (hidden)  (from environment)" in table
    assert "NGROK_AUTHTOKEN       2abc…(38 chars)" in table
    assert "TILEDESK_EMAIL        ada@example.com" in table
    assert all(var in table for var in ENV_VARS.values())


@pytest.mark.parametrize(
    ("var", "value", "match"),
    [
        ("TILEDESK_API_URL", "api.tiledesk.com/v3", "Did you mean https://api.tiledesk.com/v3"),
        ("TILEDESK_API_URL", "ftp://x", "full http:// or https:// URL"),
        ("TILEDESK_WEBHOOK_URL", "localhost:8000", "full http:// or https:// URL"),
        ("TILEDESK_PROJECT_ID", "my-project", "24 hexadecimal characters"),
        ("TILEDESK_EMAIL", "ada", "not an email address"),
    ],
)
def test_malformed_values_name_the_variable_and_its_source(
    tmp_path: Path, var: str, value: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match) as info:
        load_settings(None, environ={var: value})
    assert f"{var} (from environment)" in str(info.value)
    env_file = write_env(tmp_path / ".env", **{var: value})
    with pytest.raises(ValueError, match=match) as info:
        load_settings(env_file, environ={})
    assert str(env_file.resolve()) in str(info.value)


def test_settings_are_frozen() -> None:
    settings = Settings(email="a@b.c")
    with pytest.raises(AttributeError):
        settings.email = "x@y.z"  # type: ignore[misc]
