"""Fixtures shared by every test: the embedded sandbox, started on a free port."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tiledesk_tutorial.sandbox import RetryPolicy, SandboxHandle, start_sandbox

# Fast retries, so that tests of retried deliveries take a second, not minutes.
FAST_RETRIES = RetryPolicy(retries=3, backoff=0.05, max_backoff=0.2)


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    """A fresh sandbox (temporary data folder) for one test."""
    with start_sandbox(port=0, retry_policy=FAST_RETRIES) as handle:
        yield handle


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[SandboxHandle]:
    """One sandbox shared by a whole test session, for tests that only add their own data."""
    with start_sandbox(port=0, retry_policy=FAST_RETRIES) as handle:
        yield handle


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves one of our server or worker threads running."""
    before = {t.ident for t in threading.enumerate()}
    yield
    ours = ("tiledesk-sandbox", "sandbox-delivery", "sandbox-store", "tiledesk-listener")
    leftover = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and t.name.startswith(ours)
    ]
    assert not leftover, f"threads left running: {leftover}"
