"""The sandbox and the listener listen on 127.0.0.1 unless told otherwise.

On a workshop's room network, a server bound to every interface is open to everyone there. What
each server really listens on is read from /proc (the sockets the process holds in LISTEN state),
not from what it says.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from support.faults import ROOT, SandboxProcess, listening_addresses

from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.sandbox import start_sandbox
from tiledesk_tutorial.sandbox.server import lan_address

pytestmark = pytest.mark.security


def _bound(pid: int, port: int) -> set[str]:
    """The addresses a process listens on at ``port``."""
    return {address for address, bound_port in listening_addresses(pid) if bound_port == port}


def _refused_from_the_lan(port: int) -> None:
    """When this machine has a network address, a connection to it on ``port`` is refused."""
    lan = lan_address()
    if lan == "127.0.0.1":
        return  # no network here: the /proc check above is the proof
    with pytest.raises(OSError), socket.create_connection((lan, port), timeout=2):
        pass


def test_the_sandbox_listens_on_loopback_by_default() -> None:
    with start_sandbox() as sandbox:
        assert sandbox.url.startswith("http://127.0.0.1:")
        assert _bound(os.getpid(), sandbox.port) == {"127.0.0.1"}
        _refused_from_the_lan(sandbox.port)


def test_the_listener_listens_on_loopback_by_default() -> None:
    with WebhookListener() as listener:
        assert listener.url.startswith("http://127.0.0.1:")
        assert _bound(os.getpid(), listener.port) == {"127.0.0.1"}
        _refused_from_the_lan(listener.port)


def test_the_sandbox_command_listens_on_loopback_by_default(tmp_path: Path) -> None:
    sandbox = SandboxProcess(tmp_path / "data")
    try:
        url = sandbox.start()
        port = int(url.rsplit(":", 1)[1])
        assert _bound(sandbox.pid, port) == {"127.0.0.1"}
        _refused_from_the_lan(port)
        assert sandbox.stop() == 0
        assert "warning" not in sandbox.stderr_text()
    finally:
        sandbox.kill()


def test_every_interface_only_when_asked_and_with_a_warning(tmp_path: Path) -> None:
    sandbox = SandboxProcess(tmp_path / "data", "--host", "0.0.0.0")
    try:
        url = sandbox.start()
        port = int(url.rsplit(":", 1)[1])
        assert _bound(sandbox.pid, port) == {"0.0.0.0"}
        assert sandbox.stop() == 0
        assert "anyone on this network can reach the sandbox" in sandbox.stderr_text()
    finally:
        sandbox.kill()
    with start_sandbox(host="0.0.0.0") as everywhere:
        assert _bound(os.getpid(), everywhere.port) == {"0.0.0.0"}
    with WebhookListener(host="0.0.0.0") as listener:
        assert _bound(os.getpid(), listener.port) == {"0.0.0.0"}


def test_make_and_the_lab_script_default_to_loopback() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^HOST\s*\?=\s*127\.0\.0\.1\s*$", makefile, re.MULTILINE)
    lab = (ROOT / "tools" / "lab.sh").read_text()
    assert "HOST=${2:-127.0.0.1}" in lab
