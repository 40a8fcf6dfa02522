"""The one way the tests and the benchmark run a tutorial notebook: headless, in a fresh kernel.

``execute_notebook`` runs a copy of ``notebooks/<name>.ipynb`` in a folder of the caller's, so no
output is ever written into the repository, and returns the executed notebook (its outputs, and
the widget state a front end would have).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async

__all__ = [
    "CELL_TIMEOUT",
    "NOTEBOOKS",
    "WIDGET_STATE",
    "cell_outputs",
    "execute_notebook",
    "outputs",
    "tutorial_notebooks",
    "widget_models",
    "widget_value",
]

log = logging.getLogger(__name__)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT = 60  # seconds; a cell of these notebooks takes well under 2


def tutorial_notebooks() -> list[Path]:
    """The tutorial's notebooks, in their numbered order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


class _WidgetKeepingClient(NotebookClient):
    """An nbclient that keeps every widget update, as a front end does.

    nbclient reads only the messages of the cell that runs. A widget updated from a background
    thread (a listener's worker) between two cells sends its update under the cell before, and
    nbclient would drop it: the saved widget state would lag what a learner sees. This client
    reads those updates too (and nothing else of the cells before).
    """

    async def _async_poll_output_msg(
        self, parent_msg_id: str, cell: nbformat.NotebookNode, cell_index: int
    ) -> None:
        assert self.kc is not None
        while True:
            msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=None))
            if msg["parent_header"].get("msg_id") == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    return
            elif msg["msg_type"] in ("comm_open", "comm_msg"):
                self.handle_comm_msg([], msg, cell_index)


def execute_notebook(
    name: str,
    workdir: Path,
    *,
    twice: bool = False,
    cell_timeout: int = CELL_TIMEOUT,
    retry_stall: bool = True,
    allow_errors: bool = False,
    then: Sequence[str] = (),
) -> nbformat.NotebookNode:
    """Run a copy of ``notebooks/<name>.ipynb`` in ``workdir`` in a fresh kernel; return it.

    The kernel inherits this process's environment (``TILEDESK_SANDBOX_URL``,
    ``TILEDESK_TUTORIAL_HOME``...). The executed copy is also written to
    ``<workdir>/<name>.executed.ipynb``.

    ``twice``: run every cell but the last, then the whole notebook again, in the same kernel (a
    learner re-running the notebook without restarting it, listener still running).

    ``allow_errors``: a cell that fails does not stop the run; its error is in its outputs (a
    learner's mistake, as the notebook shows it).

    ``then``: code run after the notebook, in the same kernel, one cell each (what a learner does
    after Run All: type in a reply box, call ``clean_up()``); they are the notebook's last cells,
    ids ``then-0``, ``then-1``...

    A kernel run on this kind of machine stalls for a minute, rarely, with no error
    (docs: environment notes): with ``retry_stall`` such a run is retried once, and logged.
    """
    copy = workdir / f"{name}.ipynb"
    shutil.copyfile(NOTEBOOKS / copy.name, copy)
    for attempt in (1, 2):
        notebook = nbformat.read(copy, as_version=4)
        if twice:
            again = [
                nbformat.from_dict({**cell, "id": f"again-{cell.id}"}) for cell in notebook.cells
            ]
            notebook.cells = notebook.cells[:-1] + again
        notebook.cells += [
            nbformat.v4.new_code_cell(source, id=f"then-{index}")
            for index, source in enumerate(then)
        ]
        client = _WidgetKeepingClient(
            notebook,
            timeout=cell_timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
            shutdown_kernel="immediate",
            allow_errors=allow_errors,
        )
        try:
            client.execute()
        except (CellTimeoutError, DeadKernelError) as exc:
            if attempt == 2 or not retry_stall:
                raise
            log.warning("notebook %s stalled (%s); running it once more", name, exc)
            print(f"note: notebook {name} stalled ({type(exc).__name__}); retried once")
            continue
        nbformat.write(notebook, workdir / f"{name}.executed.ipynb")
        return notebook
    raise AssertionError("unreachable")  # pragma: no cover


def outputs(notebook: nbformat.NotebookNode) -> str:
    """Every text the notebook shows (streams, results, errors), joined."""
    return "\n".join(cell_outputs(cell) for cell in notebook.cells)


def cell_outputs(cell: nbformat.NotebookNode) -> str:
    """Every text one executed cell shows (streams, results, errors), joined."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(str(output.data.get("text/plain", "")))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}\n" + "\n".join(output.traceback))
    return "\n".join(parts)


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def widget_models(notebook: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """The widget models saved with the executed notebook (name, classes and value of each)."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return [
        {
            "model": model["model_name"],
            "classes": model["state"].get("_dom_classes", []),
            "value": model["state"].get("value"),
        }
        for model in state.values()
    ]


def widget_value(notebook: nbformat.NotebookNode, css_class: str) -> str:
    """The value of the (last saved) widget carrying ``css_class``."""
    values = [m["value"] for m in widget_models(notebook) if css_class in m["classes"]]
    assert values, f"no widget with class {css_class!r} was saved"
    return str(values[-1])
