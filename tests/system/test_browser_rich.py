"""Rich messages in the agent console, in headless Chromium: a visitor's photo shows as an image
(fetched with the agent's token), a file as a named link, hostile metadata stays text, the agent
attaches a file from the reply box, and reopens a closed conversation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.browser import PageErrors, needs_chromium
from support.sandbox import PASSWORD, World, make_world

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
