"""The tutorial in JupyterLab, in a real browser: the live conversation widget renders and updates.

JupyterLab runs as its own process on a free port, on a temporary copy of ``notebooks/`` (so no
output ever lands in the repository), with fresh settings and workspaces. Its kernels find this
test's sandbox through ``TILEDESK_SANDBOX_URL`` and keep the tutorial's state in a private
``TILEDESK_TUTORIAL_HOME``. Headless Chromium opens notebook 04 and runs it as a learner would,
up to its clean-up cell; the widget must show the visitor's and the agent's messages. Then, with
the kernel idle, the agent answers from the sandbox's agent console in a second tab, and the
answer must appear in the notebook's widget, pushed by the webhook.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    REPO,
    JupyterLab,
    PageErrors,
    launch_chromium,
    needs_chromium,
    output_dir,
    save_screenshot,
)

from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox
from tiledesk_tutorial.settings import ENV_VARS

pytestmark = [pytest.mark.browser, needs_chromium]

NOTEBOOK = "04_receive_webhooks.ipynb"
CLEANUP_MARK = "listener.stop()"  # the notebook's last cell: run everything above it
VISITOR_TEXT = "Hello, I need help with my order"
AGENT_TEXT = "Hi I'm Rosy. How can help you?"
CONSOLE_REPLY = "Thanks for waiting, John: your order ships today."
RUN_TIMEOUT_MS = 120_000

# True once every cell has finished (no "[*]" prompt) and the kernel says Idle.
KERNEL_IDLE = """() => {
    const bar = document.querySelector('#jp-main-statusbar');
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')];
    return !!bar && bar.textContent.includes('Idle')
        && !prompts.some((p) => p.textContent.includes('*'));
}"""
# 'ok' when the widget shows every text, 'error: ...' as soon as a cell shows a traceback.
WIDGET_SHOWS = """(needles) => {
    const errors = [...document.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map((e) => e.textContent).filter((t) => /Error|Traceback|Exception/.test(t));
    if (errors.length) return 'error: ' + errors[0].slice(0, 3000);
    const widget = document.querySelector('.tiledesk-conversation');
    return !!widget && needles.every((n) => widget.textContent.includes(n)) && 'ok';
}"""


@dataclass
class LabRun:
    """A JupyterLab serving a copy of the notebooks, and where its tutorial keeps its state."""

    lab: JupyterLab
    sandbox: SandboxHandle
    tutorial_home: Path

    def tutorial_account(self) -> dict[str, Any]:
        """The tutorial's entry for this sandbox: email, password, project id (state.json)."""
        state = json.loads((self.tutorial_home / "state.json").read_text())
        return state["servers"][self.sandbox.url]


def _listener_ports(notebook: Path) -> list[int]:
    text = "".join("".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"])
    return [int(port) for port in re.findall(r"WebhookListener\(port=(\d+)", text)]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    source = REPO / "notebooks" / NOTEBOOK
    assert source.exists(), f"notebooks/{NOTEBOOK} is missing"
    metadata = json.loads(source.read_text())["metadata"]
    # Without a kernelspec, JupyterLab stops at a "Select Kernel" dialog: learners would too.
    assert metadata.get("kernelspec", {}).get("name") == "python3", metadata
    busy = [port for port in _listener_ports(source) if not _port_is_free(port)]
    if busy:
        pytest.fail(f"port {busy} (the notebook's webhook listener) is used by another program")

    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    home = base / "tutorial-home"
    log_folder = REPO / "test-output" / "test_browser_lab"
    log_folder.mkdir(parents=True, exist_ok=True)
    with start_sandbox(port=0) as sandbox:
        lab = JupyterLab(
            root,
            base / "jupyter",
            {"TILEDESK_SANDBOX_URL": sandbox.url, "TILEDESK_TUTORIAL_HOME": str(home)},
            log_folder / "jupyterlab.log",
            unset=tuple(ENV_VARS.values()),  # never live mode, whatever the developer has set
        )
        with lab:
            yield LabRun(lab, sandbox, home)


def run_all_above(page: Any, marker: str) -> None:
    """Select the cell whose source contains ``marker``; Run → Run All Above Selected Cell."""
    cell = page.locator(".jp-Notebook .jp-CodeCell", has_text=marker)
    assert cell.count() == 1, f"expected one cell with {marker!r}, found {cell.count()}"
    cell.locator(".jp-InputPrompt").click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Above Selected Cell").click()


def wait_for_widget(page: Any, *texts: str) -> None:
    """Wait until the conversation widget shows every text; fail at once on a cell's error."""
    outcome = page.wait_for_function(WIDGET_SHOWS, arg=list(texts), timeout=RUN_TIMEOUT_MS)
    result = outcome.json_value()
    assert result == "ok", f"a notebook cell failed:\n{result}"


def prompts(page: Any) -> list[str]:
    """The execution prompts of every cell, e.g. ``['[1]:', '[2]:', '[ ]:']``."""
    return page.locator(".jp-Notebook .jp-InputPrompt").all_inner_texts()


def test_notebook_04_widget_updates_live_in_jupyterlab(lab_run: LabRun, browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    try:
        notebook = context.new_page()
        notebook.set_default_timeout(30_000)
        notebook_errors = PageErrors(notebook)
        notebook.goto(lab_run.lab.lab_url(NOTEBOOK))
        notebook.wait_for_function(KERNEL_IDLE, timeout=60_000)

        run_all_above(notebook, CLEANUP_MARK)
        wait_for_widget(notebook, VISITOR_TEXT, AGENT_TEXT)
        notebook.wait_for_function(KERNEL_IDLE, timeout=RUN_TIMEOUT_MS)
        widget = notebook.locator(".tiledesk-conversation")
        assert widget.count() == 1
        visitor = widget.locator(".tiledesk-role-visitor", has_text=VISITOR_TEXT)
        agent = widget.locator(".tiledesk-role-agent", has_text=AGENT_TEXT)
        assert visitor.count() == 1 and agent.count() == 1
        request_id = widget.locator(".tiledesk-conversation-block").last.get_attribute(
            "data-request-id"
        )
        assert request_id and request_id.startswith("support-group-")
        ran = prompts(notebook)
        assert ran[-1].strip() == "[ ]:", f"the clean-up cell must not have run: {ran}"

        # The agent opens the same conversation in the console, in another tab, and answers.
        account = lab_run.tutorial_account()
        console = context.new_page()
        console.set_default_timeout(15_000)
        console_errors = PageErrors(console)
        console.goto(lab_run.sandbox.url + "/console")
        console.get_by_label("Email").fill(account["email"])
        console.get_by_label("Password").fill(account["password"])
        console.get_by_role("button", name="Sign in").click()
        console.locator(f'#conversations button[data-rid="{request_id}"]').click()
        console.locator('#messages li[data-role="visitor"]', has_text=VISITOR_TEXT).wait_for()
        console.locator('#messages li[data-role="agent"]', has_text=AGENT_TEXT).wait_for()
        assert notebook.evaluate(KERNEL_IDLE) is True
        console.get_by_label("Reply").fill(CONSOLE_REPLY)
        console.get_by_role("button", name="Send").click()
        console.locator("#messages li", has_text=CONSOLE_REPLY).wait_for()
        console_errors.assert_none()

        # No cell runs: the listener's thread updates the widget while the kernel is idle.
        widget.locator(".tiledesk-role-agent", has_text=CONSOLE_REPLY).wait_for()
        assert notebook.evaluate(KERNEL_IDLE) is True
        assert prompts(notebook) == ran
        save_screenshot(widget, output_dir(request.node), "widget-jupyterlab.png")
        notebook_errors.assert_none()
    finally:
        context.close()
