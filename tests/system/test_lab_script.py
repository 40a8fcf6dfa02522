"""``make lab``'s script starts the sandbox, hands its URL to the notebooks, and stops it after."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.tutorial import free_port

from tiledesk_tutorial.sandbox import start_sandbox

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)


def run_lab(port: str, probe: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run tools/lab.sh with a stand-in for JupyterLab that runs ``probe`` in Python."""
    script = tmp_path / "probe.py"
    script.write_text(probe)
    env = {
        **os.environ,
        "TILEDESK_LAB_COMMAND": f"{sys.executable} {script}",
        "PYTHONPATH": str(ROOT),
        "TILEDESK_SANDBOX_DATA": str(tmp_path / "sandbox-data"),
    }
    env.pop("TILEDESK_API_URL", None)
    return subprocess.run(
        ["bash", str(ROOT / "tools" / "lab.sh"), BIN, "127.0.0.1", port, "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )


PROBE = """
import os, requests
url = os.environ["TILEDESK_SANDBOX_URL"]
print("PROBE", url, requests.get(url + "/", timeout=5).status_code)
open(os.environ["PROBE_OUT"], "w").write(url)
"""


def test_lab_starts_a_sandbox_and_stops_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PROBE_OUT", str(tmp_path / "url.txt"))
    result = run_lab("0", PROBE, tmp_path)
    assert result.returncode == 0, result.stderr
    url = (tmp_path / "url.txt").read_text()
    assert f"PROBE {url} 200" in result.stdout
    assert f"Agent console:     {url}/console" in result.stdout
    assert (tmp_path / "sandbox-data" / "sandbox.sqlite3").exists()
    try:
        requests.get(url + "/", timeout=2)
    except requests.ConnectionError:
        pass  # stopped with the lab, as it should be
    else:
        raise AssertionError("the sandbox outlived make lab")


def test_lab_reuses_a_running_sandbox(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PROBE_OUT", str(tmp_path / "url.txt"))
    with start_sandbox() as sandbox:
        result = run_lab(str(sandbox.port), PROBE, tmp_path)
        assert result.returncode == 0, result.stderr
        assert "already running" in result.stdout
        assert (tmp_path / "url.txt").read_text() == sandbox.url
        assert requests.get(sandbox.url + "/", timeout=5).status_code == 200


def _read_until(fd: int, needle: bytes, timeout: float, seen: bytearray) -> bool:
    """Read the terminal into ``seen`` until ``needle`` shows, the terminal closes, or timeout."""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other side of the terminal closed: every process has exited
            return needle in seen
        if not chunk:
            return needle in seen
        seen.extend(chunk)
    return needle in seen


def _stop_terminal(pid: int, fd: int) -> None:
    """Make sure the terminal's processes are gone, even when the test failed half-way."""
    for attempt in range(300):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if attempt == 0:
            with contextlib.suppress(OSError):
                os.write(fd, b"\x03")
        elif attempt == 200:
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.1)
    os.close(fd)


@pytest.mark.timeout(180)
def test_one_ctrl_c_in_make_lab_stops_jupyterlab_and_the_sandbox(tmp_path: Path) -> None:
    """``make lab`` in a terminal, as a learner runs it; one Ctrl-C; nothing is left running."""
    lab_port = free_port()
    venv = Path(sys.prefix)
    env = {
        **os.environ,
        "TILEDESK_SANDBOX_DATA": str(tmp_path / "sandbox-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "BROWSER": "true",  # the learner's browser: a command that opens nothing
        "TERM": "xterm",
    }
    for name in ("TILEDESK_API_URL", "TILEDESK_LAB_COMMAND", "MAKEFLAGS", "MFLAGS"):
        env.pop(name, None)
    # -o: the virtualenv counts as installed (no reinstall from inside a test); VENV: this one.
    argv = ["make", "-s", "-o", f"{venv}/.installed", "lab", f"VENV={venv}", "PORT=0"]
    argv.append(f"LAB_PORT={lab_port}")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal's foreground process, as in a learner's shell
        os.chdir(ROOT)
        os.execvpe("make", argv, env)  # noqa: S606 (a fixed command, as a learner types it)
    seen = bytearray()
    try:
        ready = b"the link with its token is in JupyterLab's log above)\r\n  Press Ctrl-C once"
        assert _read_until(fd, ready, 120, seen), seen.decode(errors="replace")
        text = seen.decode(errors="replace")
        sandbox_url = re.search(r"Tiledesk sandbox:\s+(http://\S+)", text).group(1)
        assert requests.get(sandbox_url + "/", timeout=5).status_code == 200
        # The addresses come again after JupyterLab's own log, with how to stop.
        last = text.rsplit("Jupyter Server", 1)[-1]
        assert f"Agent console:     {sandbox_url}/console" in last
        assert "Press Ctrl-C once to stop JupyterLab and the sandbox." in last

        os.write(fd, b"\x03")  # one Ctrl-C: the terminal sends SIGINT to its foreground group
        assert _read_until(fd, b"Stopped.", 60, seen), seen.decode(errors="replace")
        _read_until(fd, b"\0", 10, seen)  # until every process holding the terminal has exited
        text = seen.decode(errors="replace")
        assert "Shut down this Jupyter server" not in text
        assert "Stopping JupyterLab" in text
        assert "Stopping the sandbox" in text
    finally:
        _stop_terminal(pid, fd)
    for port in (lab_port, int(sandbox_url.rsplit(":", 1)[1])):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    leftovers = subprocess.run(
        ["pgrep", "-f", f"--port {lab_port}"], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], f"JupyterLab still runs: {leftovers}"
