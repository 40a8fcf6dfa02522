"""Execute every tutorial notebook headless, in order, against a fresh sandbox; time it."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import nbformat
from common import ROOT, start_sandbox_process
from nbclient import NotebookClient


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_all_notebooks(cell_timeout: int = 60) -> float:
    """Wall time, in seconds, to execute notebooks 00 to 05 one after the other (kernels included).

    The sandbox runs as its own process, as ``make lab`` starts it; the tutorial's state goes to a
    temporary folder, so nothing of the user's is touched.
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-notebooks-"))
    sandbox = start_sandbox_process()
    names = ("TILEDESK_SANDBOX_URL", "TILEDESK_TUTORIAL_HOME", "TILEDESK_LISTENER_PORT")
    saved = {key: os.environ.get(key) for key in (*names, "TILEDESK_API_URL")}
    os.environ.update(
        TILEDESK_SANDBOX_URL=sandbox.url,
        TILEDESK_TUTORIAL_HOME=str(workdir / "home"),
        TILEDESK_LISTENER_PORT=str(_free_port()),
    )
    os.environ.pop("TILEDESK_API_URL", None)
    try:
        started = time.perf_counter()
        for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):  # in their order
            copy = workdir / source.name
            shutil.copyfile(source, copy)
            notebook = nbformat.read(copy, as_version=4)
            NotebookClient(
                notebook,
                timeout=cell_timeout,
                kernel_name="python3",
                resources={"metadata": {"path": str(workdir)}},
                shutdown_kernel="immediate",
            ).execute()
        return round(time.perf_counter() - started, 2)
    finally:
        sandbox.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(workdir, ignore_errors=True)
