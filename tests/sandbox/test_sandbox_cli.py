"""``python -m tiledesk_tutorial.sandbox`` as a user runs it: first line, signals, busy port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running(*args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start the sandbox CLI; yield the process and the URL it printed first."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tiledesk_tutorial.sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        first_line = process.stdout.readline().strip()
        yield process, first_line
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_prints_its_url_first_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    with running("--port", "0", "--data", str(tmp_path / "data")) as (process, url):
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url + "/", timeout=5).text.startswith("Hello from Tiledesk server")
        assert requests.get(url + "/v3/", timeout=5).status_code == 200
        process.send_signal(signum)
        assert process.wait(15) == 0
        stderr = process.stderr.read()
        assert "Traceback" not in stderr
        assert "Stopping the sandbox" in stderr
    assert (tmp_path / "data" / "sandbox.sqlite3").exists()


def test_data_persists_between_runs(tmp_path: Path) -> None:
    account = {"email": "cli@example.com", "password": "pw", "firstname": "C", "lastname": "L"}
    with running("--port", "0", "--data", str(tmp_path)) as (process, url):
        assert requests.post(url + "/auth/signup", json=account, timeout=10).json()["success"]
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    with running("--port", "0", "--data", str(tmp_path)) as (process, url):
        signin = requests.post(
            url + "/auth/signin", json={"email": "cli@example.com", "password": "pw"}, timeout=10
        )
        assert signin.status_code == 200
        process.send_signal(signal.SIGTERM)


def test_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with running("--port", str(port), "--data", str(tmp_path)) as (process, first_line):
            assert process.wait(15) == 1
            stderr = process.stderr.read().strip()
    assert first_line == ""
    assert stderr.count("\n") == 0, stderr
    assert stderr.startswith("error: Cannot start the sandbox on 127.0.0.1:")
    assert "already in use" in stderr


def test_custom_prefix(tmp_path: Path) -> None:
    with running("--port", "0", "--data", str(tmp_path), "--prefix", "/api") as (process, url):
        assert requests.get(url + "/api/", timeout=5).status_code == 200
        assert requests.get(url + "/v3/", timeout=5).status_code == 400  # not served any more
        process.send_signal(signal.SIGTERM)


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with running("--port", "99999", "--data", str(tmp_path)) as (process, _):
        assert process.wait(15) == 2
        assert "--port must be between 0 and 65535" in process.stderr.read()
