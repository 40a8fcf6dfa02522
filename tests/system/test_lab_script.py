"""``make lab``'s script starts the sandbox, hands its URL to the notebooks, and stops it after."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.net import free_port

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


def _make_lab_in_a_terminal(tmp_path: Path) -> tuple[int, int, bytearray, int, str]:
    """Type ``make lab`` into an interactive shell in a pseudo-terminal; wait until it is ready.

    Returns the terminal's process id and file descriptor, what it showed, JupyterLab's port and
    the sandbox's URL.
    """
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
    env["PS1"] = "$ "
    pid, fd = pty.fork()
    if pid == 0:  # the child: a learner's interactive shell, the terminal's session leader
        os.chdir(ROOT)
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)  # noqa: S606
    # Typed at the prompt, as a learner does; the shell exits when make does.
    os.write(fd, (shlex.join(argv) + "; exit\n").encode())
    seen = bytearray()
    ready = b"the link with its token is in JupyterLab's log above)\r\n  Press Ctrl-C once"
    if not _read_until(fd, ready, 120, seen):
        _stop_terminal(pid, fd)
        raise AssertionError(seen.decode(errors="replace"))
    text = seen.decode(errors="replace")
    sandbox_url = re.search(r"Tiledesk sandbox:\s+(http://\S+)", text).group(1)
    return pid, fd, seen, lab_port, sandbox_url


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _assert_nothing_left(lab_port: int, sandbox_url: str, tmp_path: Path) -> None:
    """Within 20 s, neither JupyterLab nor the sandbox answers, and no JupyterLab process is left;
    whatever is left is killed, so that a failed test leaves nothing running."""
    ports = (lab_port, int(sandbox_url.rsplit(":", 1)[1]))
    deadline = time.monotonic() + 20
    while any(_answers(port) for port in ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    answering = [port for port in ports if _answers(port)]
    pattern = f"--port {lab_port}|{tmp_path / 'sandbox-data'}"
    leftovers = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    subprocess.run(["pkill", "-KILL", "-f", pattern], capture_output=True)
    assert answering == [], f"still answering on {answering}"
    assert leftovers.split() == [], f"still running: {leftovers.split()}"


@pytest.mark.timeout(180)
def test_one_ctrl_c_in_make_lab_stops_jupyterlab_and_the_sandbox(tmp_path: Path) -> None:
    """``make lab`` in a terminal, as a learner runs it; one Ctrl-C; nothing is left running."""
    pid, fd, seen, lab_port, sandbox_url = _make_lab_in_a_terminal(tmp_path)
    try:
        text = seen.decode(errors="replace")
        assert requests.get(sandbox_url + "/", timeout=5).status_code == 200
        # The addresses come again after JupyterLab's own log, with how to stop.
        last = text.rsplit("Jupyter Server", 1)[-1]
        assert f"Agent console:     {sandbox_url}/console" in last
        assert "Press Ctrl-C once to stop JupyterLab and the sandbox." in last

        os.write(fd, b"\x03")  # one Ctrl-C: the terminal sends SIGINT to its foreground group
        assert _read_until(fd, b"Stopped.", 60, seen), seen.decode(errors="replace")
        # A job stopped by Ctrl-C ends the command line: the learner is back at the prompt.
        os.write(fd, b"exit\n")
        _read_until(fd, b"\0", 20, seen)  # until every process holding the terminal has exited
        text = seen.decode(errors="replace")
        assert "Shut down this Jupyter server" not in text
        assert "Stopping JupyterLab" in text
        assert "Stopping the sandbox" in text
    finally:
        _stop_terminal(pid, fd)
        _assert_nothing_left(lab_port, sandbox_url, tmp_path)


@pytest.mark.timeout(180)
def test_closing_the_terminal_of_make_lab_stops_both(tmp_path: Path) -> None:
    """A learner closes the terminal window instead of pressing Ctrl-C: nothing is left running."""
    pid, fd, _seen, lab_port, sandbox_url = _make_lab_in_a_terminal(tmp_path)
    os.close(fd)  # the window closes: the terminal hangs up
    try:
        _wait_for_the_shell(pid)
    finally:
        _assert_nothing_left(lab_port, sandbox_url, tmp_path)


def _wait_for_the_shell(pid: int) -> None:
    for _ in range(300):
        if os.waitpid(pid, os.WNOHANG)[0]:
            break
        time.sleep(0.1)
    else:
        ps = ["ps", "-o", "pid,pgid,stat,wchan:24,cmd", "-s", str(pid)]
        processes = subprocess.run(ps, capture_output=True, text=True).stdout
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"make lab still runs 30 s after its terminal closed:\n{processes}")
