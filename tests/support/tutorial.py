"""Helpers for the tutorial, widget, walkthrough and notebook tests: a clean environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tiledesk_tutorial.config import ENV_VARS

REPO = Path(__file__).resolve().parents[2]
# A JWT in full (three dot-separated base64url parts): it must never be printed.
FULL_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")


def clean_tutorial_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Unset every tutorial variable, point the tutorial's home at ``home`` and work in it.

    The working directory matters: the configuration is also read from a ``.env`` file in the
    current folder or its parents, and a developer's own ``.env`` must not leak into a test.
    """
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv(ENV_VARS["home"], str(home))
    monkeypatch.chdir(home)
    return home
