"""Fixtures of the system tests: one headless Chromium per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.browser import launch_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (skipped where it is missing: see needs_chromium)."""
    with launch_chromium() as chromium:
        yield chromium
