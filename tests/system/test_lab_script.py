"""``make lab``'s script starts the sandbox, hands its URL to the notebooks, and stops it after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

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
