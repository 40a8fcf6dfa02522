"""``tiledesk-sandbox --room`` as a presenter runs it: every interface, what it prints, the token.

The sandbox listens on every interface here, as in a workshop; the test itself only connects to
127.0.0.1 (the address it prints for the learners is the machine's LAN address).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from support.faults import SandboxProcess, listening_addresses

pytestmark = pytest.mark.security


def _output(sandbox: SandboxProcess, data: Path, lines: int = 1) -> str:
    """What the sandbox printed on stdout, once it has printed ``lines`` lines."""
    path = data.parent / f"{data.name}-run{sandbox.runs}.out"
    deadline = time.monotonic() + 10
    while path.read_text().count("\n") < lines and time.monotonic() < deadline:
        time.sleep(0.02)
    return path.read_text()


def _loopback(url: str) -> str:
    """The same port on 127.0.0.1: this test never sends to another address."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"127.0.0.1:{parts.port}").geturl()


def test_room_mode_listens_everywhere_and_prints_what_the_room_needs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sandbox = SandboxProcess(data, "--room")
    try:
        url = sandbox.start()
        port = int(url.rsplit(":", 1)[1])
        assert {a for a, p in listening_addresses(sandbox.pid) if p == port} == {"0.0.0.0"}
        [first, view_line] = _output(sandbox, data, 2).splitlines()[:2]
        assert first == url  # the learners' TILEDESK_API_URL: the machine's LAN address
        match = re.fullmatch(
            r"Room view: (http://[^/]+/room\?token=([A-Za-z0-9_-]{20,}))", view_line
        )
        assert match, view_line
        view, token = match.groups()
        assert urlsplit(view).netloc == urlsplit(url).netloc

        assert requests.get(_loopback(url) + "/room", timeout=10).status_code == 401
        page = requests.get(_loopback(view), timeout=10)
        assert page.status_code == 200 and "Room view" in page.text
        assert sandbox.stop() == 0
        stderr = sandbox.stderr_text()
        assert "anyone on this network can reach the sandbox" in stderr
        assert f"TILEDESK_API_URL={url}" in stderr
        assert "realtime feed" in stderr and "no inbound connection" in stderr
        # The token is in the "Room view:" line and nowhere else: not in the log.
        assert token not in stderr
        assert _output(sandbox, data).count(token) == 1
    finally:
        sandbox.kill()


def test_room_mode_on_loopback_when_asked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sandbox = SandboxProcess(data, "--room", "--host", "127.0.0.1")
    try:
        url = sandbox.start()
        port = int(url.rsplit(":", 1)[1])
        assert {a for a, p in listening_addresses(sandbox.pid) if p == port} == {"127.0.0.1"}
        assert _output(sandbox, data, 2).splitlines()[1].startswith(f"Room view: {url}/room?token=")
        assert sandbox.stop() == 0
    finally:
        sandbox.kill()


def test_without_room_mode_no_room_view_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sandbox = SandboxProcess(data)
    try:
        sandbox.start()
        assert sandbox.stop() == 0
        assert "Room view" not in _output(sandbox, data)
    finally:
        sandbox.kill()
