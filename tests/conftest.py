"""Fixtures shared by every test: the embedded sandbox, started on a free port."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pyngrok import conf, ngrok, process
from support.ngrok_standin import install_standin
from support.sandbox import FAST_RETRIES
from support.tunnel import Standin, process_alive

from tiledesk_tutorial import config
from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox
from tiledesk_tutorial.tunnel import close_tunnel, current_tunnel_url


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
def fresh_config() -> Iterator[None]:
    """Each test reads the configuration anew: what one test set (``tutorial.start()``, an
    environment variable) is not the process-wide default of the next."""
    config.set_default(None)
    yield
    config.set_default(None)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves one of our server or worker threads running."""
    before = {t.ident for t in threading.enumerate()}
    yield
    # The sandbox's event loop thread is "tiledesk-sandbox-<port>" (its deliveries and sockets
    # run on it); its key-derivation pool ("sandbox-kdf") starts threads lazily and is shut down
    # by stop() with the loop, so a leaked sandbox shows as its loop thread.
    ours = ("tiledesk-sandbox", "sandbox-store", "tiledesk-listener")
    leftover = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and t.name.startswith(ours)
    ]
    assert not leftover, f"threads left running: {leftover}"


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """An ngrok stand-in, an empty environment (no token, no .env) and full cleanup."""
    for var in ("NGROK_AUTHTOKEN", "TILEDESK_WEBHOOK_URL", "PYNGROK_NGROK_PATH", "NGROK_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env above a tmp directory
    record = tmp_path / "runs.jsonl"
    monkeypatch.setenv("NGROK_STANDIN_RECORD", str(record))
    fake = Standin(install_standin(tmp_path / "bin"), tmp_path / "ngrok.yml", record)
    yield fake
    close_tunnel()
    ngrok.kill(conf.PyngrokConfig(ngrok_path=str(fake.path)))
    assert current_tunnel_url() is None
    assert not process.is_process_running(str(fake.path))
    assert [run["pid"] for run in fake.runs() if process_alive(run["pid"])] == []
    monitors = [t for t in threading.enumerate() if "_monitor_process" in t.name]
    for monitor in monitors:  # pyngrok's log readers end once their agent has exited
        monitor.join(timeout=10)
    assert [t for t in monitors if t.is_alive()] == []
