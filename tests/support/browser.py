"""Helpers for the browser tests: Debian's Chromium driven by Playwright, and a JupyterLab server.

Playwright cannot download its own browser on machines without internet, so these tests drive the
system's ``/usr/bin/chromium`` (``make test`` installs it with apt when it is missing, see
``tools/ensure-chromium.sh``); without it they are skipped with a reason. Screenshots go to
``test-output/<test>/`` at the repository root (gitignored); with ``UPDATE_DOC_IMAGES=1`` they
are also copied to ``docs/images/`` for the README.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from support.net import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("TILEDESK_CHROMIUM", "/usr/bin/chromium"))
# Flags measured to work headless as root in a container (docs: /work/shared/environment-notes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DOC_IMAGES = REPO / "docs" / "images"
OUTPUT_ROOT = REPO / "test-output"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium with apt) "
    "or `apt-get install chromium`",
)


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """Start headless Chromium through Playwright; yield the ``Browser`` and always close it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class PageErrors:
    """Collects uncaught exceptions and console errors of a page, to fail a test on any."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )

    def assert_none(self, ignore: tuple[str, ...] = ()) -> None:
        """Fail when an error was seen that does not contain one of the ``ignore`` substrings."""
        seen = [e for e in self.errors if not any(part in e for part in ignore)]
        assert not seen, "errors in the page:\n" + "\n".join(seen)


def output_dir(node: pytest.Item) -> Path:
    """``test-output/<module>/<test name>/``: a fresh folder for one test's screenshots and logs."""
    module = Path(str(node.fspath)).stem
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in node.name)
    folder = OUTPUT_ROOT / module / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def save_screenshot(locator: Any, folder: Path, name: str) -> Path:
    """Screenshot one element to ``folder/name`` (and docs/images with UPDATE_DOC_IMAGES=1)."""
    locator.scroll_into_view_if_needed()
    path = folder / name
    locator.screenshot(path=str(path), animations="disabled", caret="hide")
    if os.environ.get("UPDATE_DOC_IMAGES") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_IMAGES / name)
    return path


class JupyterLab:
    """A JupyterLab server in its own process group, isolated from the user's Jupyter setup.

    Settings, workspaces, config, data and runtime folders are fresh temporary folders, so that no
    earlier workspace is reopened and no user extension or kernelspec is picked up; the "Jupyter
    news" toast is turned off. Kernels use this interpreter (the venv's ``python3`` kernelspec).
    """

    def __init__(
        self,
        root_dir: Path,
        home: Path,
        env: dict[str, str],
        log_file: Path,
        unset: tuple[str, ...] = (),
    ) -> None:
        self.root_dir = root_dir
        self.home = home
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self._extra_env = env
        self._unset = unset
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> JupyterLab:
        """Start the server and wait until its REST API answers."""
        folders = {
            name: self.home / name
            for name in ("settings", "workspaces", "config", "data", "runtime", "ipython")
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        notification = folders["settings"] / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        # Every cell in the DOM (no virtual scrolling), so tests can find cells by their text.
        tracker = folders["settings"] / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True, exist_ok=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        inherited = {k: v for k, v in os.environ.items() if k not in self._unset}
        env = {
            **inherited,
            "JUPYTERLAB_SETTINGS_DIR": str(folders["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(folders["workspaces"]),
            "JUPYTER_CONFIG_DIR": str(folders["config"]),
            "JUPYTER_DATA_DIR": str(folders["data"]),
            "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
            "IPYTHONDIR": str(folders["ipython"]),
            "JUPYTER_PLATFORM_DIRS": "1",
            **self._extra_env,
        }
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        log = self.log_file.open("wb")
        try:
            self._process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited at start:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if self.api("GET", "/api/status").status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the Jupyter server's REST API with the token."""
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def shutdown_kernels(self) -> None:
        """Shut down every kernel of this server (their listeners free their ports)."""
        for kernel in self.api("GET", "/api/kernels").json():
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def lab_url(self, notebook: str) -> str:
        """The URL that opens ``notebook`` (relative to the root folder) in JupyterLab."""
        return f"{self.url}/lab/tree/{notebook}?token={self.token}&reset"

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Shut down kernels, then the server's process group; kill whatever is left behind."""
        process = self._process
        if process is None:
            return
        self._process = None
        try:
            family = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            family = []
        if process.poll() is None:
            with contextlib.suppress(requests.RequestException, ValueError):
                self.shutdown_kernels()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        # Kernels run in sessions of their own: end any that outlived the server, by pid.
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(family, timeout=5)

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
