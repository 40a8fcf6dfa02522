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
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.browser import (
    REPO,
    JupyterLab,
    PageErrors,
    needs_chromium,
    output_dir,
    save_screenshot,
)
from support.net import free_port
from support.sandbox import Api

from tiledesk_tutorial.config import ENV_VARS
from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox

pytestmark = [pytest.mark.browser, needs_chromium]

NOTEBOOK = "04_receive_webhooks.ipynb"
CLEANUP_MARK = "listener.stop()"  # the notebook's last cell: run everything above it
VISITOR_TEXT = "Hello, I need help with my order"
AGENT_TEXT = "Hi I'm Rosy. How can help you?"
CONSOLE_REPLY = "Thanks for waiting, John: your order ships today."
RUN_TIMEOUT_MS = 120_000
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'

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


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    source = REPO / "notebooks" / NOTEBOOK
    assert source.exists(), f"notebooks/{NOTEBOOK} is missing"
    metadata = json.loads(source.read_text())["metadata"]
    # Without a kernelspec, JupyterLab stops at a "Select Kernel" dialog: learners would too.
    assert metadata.get("kernelspec", {}).get("name") == "python3", metadata

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
            {
                "TILEDESK_SANDBOX_URL": sandbox.url,
                "TILEDESK_TUTORIAL_HOME": str(home),
                # A free port for the notebook's listener, not 8099 (a learner's lab may hold it).
                "TILEDESK_LISTENER_PORT": str(free_port()),
            },
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

        # Another visitor types markup: the widget shows it as text, and nothing runs.
        api = Api(lab_run.sandbox.url)
        try:
            project_id = account["project_id"]
            guest = api.post(
                "/auth/signinAnonymously", json={"id_project": project_id, "firstname": "Eve"}
            ).json()
            path = f"/{project_id}/requests/support-group-{project_id}-{uuid.uuid4().hex}/messages"
            sent = api.post(path, json={"text": XSS}, token=guest["token"])
            assert sent.status_code == 200, sent.text
        finally:
            api.close()
        shown = widget.locator(".tiledesk-role-visitor .tiledesk-text", has_text="window.__xss=1")
        shown.wait_for()
        assert shown.inner_text() == XSS
        assert widget.locator("img, script").count() == 0
        assert notebook.evaluate("window.__xss") is None

        # Last, the clean-up cell, as the notebook asks: the listener stops, the port is free.
        cleanup = notebook.locator(".jp-Notebook .jp-CodeCell", has_text=CLEANUP_MARK)
        cleanup.locator(".jp-InputPrompt").click()
        notebook.get_by_role("menuitem", name="Run", exact=True).click()
        notebook.locator('.lm-Menu-item[data-command="notebook:run-cell"]').click()
        cleanup.locator(".jp-OutputArea-output", has_text="listener stopped").wait_for()
        notebook_errors.assert_none()
    finally:
        context.close()
        lab_run.lab.shutdown_kernels()


def test_notebook_05_reply_box_sends_from_the_browser(lab_run: LabRun, browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    try:
        notebook = context.new_page()
        notebook.set_default_timeout(30_000)
        notebook_errors = PageErrors(notebook)
        notebook.goto(lab_run.lab.lab_url("05_live_conversation.ipynb"))
        notebook.wait_for_function(KERNEL_IDLE, timeout=60_000)

        # Up to the chat, before the notebook closes the conversation.
        run_all_above(notebook, "agent.close_request(request_id)")
        wait_for_widget(notebook, "My order #4242", "Let me check order #4242", "It was a gift")
        notebook.wait_for_function(KERNEL_IDLE, timeout=RUN_TIMEOUT_MS)
        chat = notebook.locator(".tiledesk-conversation")
        assert chat.count() == 1

        # The learner answers in the widget's reply box: the click runs in the kernel, the
        # message goes to Tiledesk, and its webhook brings it back into the view.
        answer = "Found it: order #4242 arrives tomorrow morning."
        chat.locator(".tiledesk-reply-text input").fill(answer)
        chat.locator(".tiledesk-reply-send").click()
        chat.locator(".tiledesk-role-agent", has_text=answer).wait_for()
        chat.locator(".tiledesk-status", has_text="Sent at").wait_for()
        assert chat.locator(".tiledesk-reply-text input").input_value() == ""
        save_screenshot(chat, output_dir(request.node), "widget-reply-box.png")

        # Enter sends too, as in any chat box.
        second = "Anything else I can do for you?"
        chat.locator(".tiledesk-reply-text input").fill(second)
        chat.locator(".tiledesk-reply-text input").press("Enter")
        chat.locator(".tiledesk-role-agent", has_text=second).wait_for()
        assert chat.locator(".tiledesk-reply-text input").input_value() == ""
        notebook_errors.assert_none()
    finally:
        context.close()
        lab_run.lab.shutdown_kernels()
