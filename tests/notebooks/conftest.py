"""Fixtures of the tutorial, walkthrough, widget and notebook tests: a clean environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tutorial import clean_tutorial_env

from tiledesk_tutorial.sandbox_discovery import stop_kernel_sandbox


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No tutorial variables, the tutorial's home in a temporary folder, and work there."""
    return clean_tutorial_env(monkeypatch, tmp_path / "home")


@pytest.fixture
def kernel_sandbox() -> Iterator[None]:
    """Make sure a sandbox that a test made `start()` run in-process is stopped afterwards."""
    yield
    stop_kernel_sandbox()
