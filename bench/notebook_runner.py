"""Execute every tutorial notebook headless, in order, against a fresh sandbox; time it.

The notebooks run through the tests' one runner (``tests/support/notebooks.py``), so the
benchmark times exactly what ``make test`` executes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, start_sandbox_process

sys.path.insert(0, str(ROOT / "tests"))

from support.net import free_port
from support.notebooks import execute_notebook, tutorial_notebooks


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
        TILEDESK_LISTENER_PORT=str(free_port()),
    )
    os.environ.pop("TILEDESK_API_URL", None)
    try:
        started = time.perf_counter()
        for source in tutorial_notebooks():
            execute_notebook(source.stem, workdir, cell_timeout=cell_timeout, retry_stall=False)
        return round(time.perf_counter() - started, 2)
    finally:
        sandbox.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(workdir, ignore_errors=True)
