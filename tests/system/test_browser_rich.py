"""Rich messages in headless Chromium. In the agent console: a visitor's photo shows as an image
(fetched with the agent's token), a file as a named link, hostile metadata stays text, the agent
attaches a file from the reply box, and reopens a closed conversation. In JupyterLab: notebook 07's
view shows the photo and the reply box's Attach sends a PDF and a photo."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.browser import PageErrors, needs_chromium
from support.sandbox import PASSWORD, World, make_world
from test_browser_lab import (  # JupyterLab on a copy of the notebooks, as notebook 05 runs
    KERNEL_IDLE,
    RUN_TIMEOUT_MS,
    LabRun,
    lab_run,  # noqa: F401 (a fixture)
    run_all_above,
    wait_for_widget,
)

from tiledesk_tutorial.samples import DAMAGED_BOX

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 700}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def world(sandbox) -> Iterator[World]:
    world = make_world(sandbox.url)
    yield world
    world.api.close()


def post_message(world: World, rid: str, body: dict) -> None:
    answer = world.api.post(world.messages_path(rid), json=body, token=world.visitor_token)
    assert answer.status_code == 200, answer.text


def test_images_files_attach_and_reopen_in_the_console(sandbox, world, page, tmp_path):
    errors = PageErrors(page)
    rid = world.request_id()
    world.send(rid, "Hello, here is a photo of the damaged box")
    uploaded = world.api.post(
        f"/{world.project_id}/files/chat",
        files={"file": ("damaged-box.png", DAMAGED_BOX.read_bytes(), "image/png")},
        token=world.visitor_token,
    ).json()["filename"]
    src = f"{sandbox.url}/{world.project_id}/files?path={uploaded}"
    photo = {"src": src, "width": 64, "height": 48, "name": "damaged-box.png", "type": "image/png"}
    post_message(world, rid, {"text": "damaged-box.png", "type": "image", "metadata": photo})
    post_message(world, rid, {"text": "invoice.pdf", "type": "file",
                              "metadata": {"src": "https://example.com/invoice.pdf",
                                           "name": "invoice.pdf"}})  # fmt: skip
    hostile = {"src": "javascript:window.__xss=1", "name": '<img src=x onerror="window.__xss=2">'}
    post_message(world, rid, {"text": "x", "type": "image", "metadata": hostile})
    post_message(world, rid, {"text": "away", "type": "image",
                              "metadata": {"src": "https://elsewhere.invalid/a.png",
                                           "name": "away.png"}})  # fmt: skip

    page.goto(sandbox.url + "/console")
    page.get_by_label("Email").fill(world.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.locator(f'#conversations button[data-rid="{rid}"]').click()

    image = page.locator("#messages img.image")
    image.wait_for()
    assert image.evaluate("i => i.complete && i.naturalWidth") == 64
    assert image.get_attribute("src").startswith("blob:")
    assert page.locator("#messages a.file", has_text="damaged-box.png").count() == 1
    pdf = page.locator("#messages a.file", has_text="invoice.pdf")
    assert pdf.get_attribute("href") == "https://example.com/invoice.pdf"
    assert pdf.get_attribute("rel") == "noopener noreferrer nofollow"
    refused = page.locator("#messages .refused")
    assert refused.inner_text() == '<img src=x onerror="window.__xss=2"> (no safe address)'
    # Another origin's image is not loaded (nor given the token): only its link stays.
    away = page.locator("#messages .attachment", has_text="away.png")
    assert away.locator("img").count() == 0 and away.locator("a.file").count() == 1
    assert page.locator("#messages img").count() == 1
    assert page.evaluate("window.__xss") is None

    # The agent attaches a text file from the reply box: uploaded, then sent as a file message.
    note = tmp_path / "note.txt"
    note.write_text("Refund approved.")
    page.locator("#attach-file").set_input_files(str(note))
    page.locator("#messages a.file", has_text="note.txt").wait_for()
    messages = world.api.get(world.messages_path(rid), token=world.agent_token).json()
    sent = messages[-1]
    assert (sent["type"], sent["metadata"]["name"], sent["metadata"]["type"]) == (
        "file", "note.txt", "text/plain")  # fmt: skip
    path = sent["metadata"]["src"].split("path=", 1)[1]
    from urllib.parse import unquote

    got = world.api.get(f"/{world.project_id}/files", params={"path": unquote(path)},
                        token=world.agent_token)  # fmt: skip
    assert got.content == b"Refund approved."

    # A refused extension is a clear status line, and nothing is sent.
    evil = tmp_path / "evil.exe"
    evil.write_bytes(b"MZ")
    page.locator("#attach-file").set_input_files(str(evil))
    page.locator("#status", has_text="does not accept .exe").wait_for()

    # Close, then reopen from the console.
    page.get_by_role("button", name="Close conversation").click()
    page.get_by_role("button", name="Click again to close").click()
    page.get_by_role("button", name="Reopen conversation").click()
    page.locator("#messages", has_text="Chat reopened").wait_for()
    assert world.api.get(f"/{world.project_id}/requests/{rid}",
                         token=world.agent_token).json()["status"] == 200  # fmt: skip
    assert page.get_by_role("button", name="Close conversation").is_visible()
    errors.assert_none()


def pick(page: Any, chat: Any, path: Any) -> None:
    """Click the view's Attach button and choose ``path`` in the file chooser it opens."""
    with page.expect_file_chooser() as chooser:
        chat.locator(".tiledesk-reply-attach").click()
    chooser.value.set_files(str(path))


# -- notebook 07 in JupyterLab: the photo shown in the view, and Attach from the reply box --------
def test_notebook_07_shows_the_photo_and_attaches_in_jupyterlab(
    lab_run: LabRun,  # noqa: F811 (the fixture imported above)
    browser: Any,
    tmp_path: Any,
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    try:
        notebook = context.new_page()
        notebook.set_default_timeout(30_000)
        errors = PageErrors(notebook)
        notebook.goto(lab_run.lab.lab_url("07_rich_messages.ipynb"))
        notebook.wait_for_function(KERNEL_IDLE, timeout=60_000)
        run_all_above(notebook, "feed.stop()")  # everything but the clean-up: the feed stays on
        wait_for_widget(notebook, "damaged-box.png", "A new parcel is on its way.", "Chat reopened")
        notebook.wait_for_function(KERNEL_IDLE, timeout=RUN_TIMEOUT_MS)
        chat = notebook.locator(".tiledesk-conversation")
        photo = chat.locator("img.tiledesk-image")
        # The sandbox reads a chat file only with a token: the view inlined it, so it loads.
        notebook.wait_for_function(
            "(img) => img.complete && img.naturalWidth === 64", arg=photo.element_handle()
        )
        assert chat.locator("a.tiledesk-file", has_text="damaged-box.png").count() == 1

        # The agent attaches a PDF and a second photo from the reply box.
        invoice = tmp_path / "invoice.pdf"
        invoice.write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
        pick(notebook, chat, invoice)
        chat.locator("a.tiledesk-file", has_text="invoice.pdf").wait_for()
        chat.locator(".tiledesk-status", has_text="Sent invoice.pdf to").wait_for()
        second = tmp_path / "second-photo.png"
        second.write_bytes(DAMAGED_BOX.read_bytes())
        pick(notebook, chat, second)
        shown = chat.locator(".tiledesk-role-agent img.tiledesk-image[alt='second-photo.png']")
        shown.wait_for()
        notebook.wait_for_function(
            "(img) => img.complete && img.naturalWidth === 64", arg=shown.element_handle()
        )
        errors.assert_none()
    finally:
        context.close()
        lab_run.lab.shutdown_kernels()
