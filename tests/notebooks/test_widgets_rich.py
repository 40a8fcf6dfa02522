"""The conversation view shows image messages as images and file messages as named links, and
nothing in a message's metadata (a ``javascript:`` src, markup in a name) becomes markup or script.
"""

from __future__ import annotations

import base64
import re
import uuid
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tiledesk_tutorial import samples
from tiledesk_tutorial.client import TiledeskClient, new_request_id
from tiledesk_tutorial.listener import WebhookListener
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.sandbox import SandboxHandle
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload, parse_delivery
from tiledesk_tutorial.widgets import ConversationView, render_conversations, safe_src

SECRET = "widget-rich-secret-0123456789abcdef0123"
RID = "support-group-5f00000000000000000000aa-0123456789abcdef0123456789abcdef"


def rich(kind: str, metadata: Any, text: str = "box.png") -> Event:
    """A parsed ``message.create`` of an image or file message, as the real server sends it."""
    payload = make_message_payload(text, request_id=RID)
    payload["type"] = kind
    payload["metadata"] = metadata
    return parse_delivery(make_delivery(payload, SECRET).body)


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser would parse them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_an_image_is_an_image_inside_a_link_with_its_name() -> None:
    meta = {"src": "https://example.com/box.png", "width": 320, "height": 240, "name": "box.png"}
    page = render_conversations([rich("image", meta | {"type": "image/png"})])
    tags = Tags(page).tags
    images = [a for t, a in tags if t == "img"]
    assert images == [
        {
            "class": "tiledesk-image",
            "src": "https://example.com/box.png",
            "alt": "box.png",
            "style": "max-width:240px;max-height:240px;display:block;",
            "referrerpolicy": "no-referrer",
        }
    ]
    links = [a["href"] for t, a in tags if t == "a"]
    assert links == ["https://example.com/box.png"] * 2  # around the image, and the named link
    assert "📎 box.png</a>" in page


def test_a_file_is_a_link_with_its_name() -> None:
    meta = {
        "src": "https://example.com/invoice.pdf",
        "name": "invoice.pdf",
        "type": "application/pdf",
    }
    page = render_conversations([rich("file", meta, "invoice.pdf")])
    tags = Tags(page).tags
    assert not [t for t, _ in tags if t == "img"]
    (link,) = [a for t, a in tags if t == "a"]
    assert link["href"] == "https://example.com/invoice.pdf"
    assert link["rel"] == "noopener noreferrer nofollow" and link["target"] == "_blank"
    assert "📎 invoice.pdf</a>" in page


@pytest.mark.parametrize(
    "src",
    [
        "javascript:alert(1)",
        " JaVaScRiPt:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "//evil.example/x.png",
        "/relative.png",
        None,
        42,
    ],
)
@pytest.mark.parametrize("kind", ["image", "file"])
def test_an_unsafe_src_is_never_loaded_nor_linked(kind: str, src: Any) -> None:
    page = render_conversations([rich(kind, {"src": src, "name": "box.png"})])
    tags = Tags(page).tags
    assert not [t for t, _ in tags if t in ("img", "a", "script", "iframe")]
    assert "box.png (no safe address)" in page
    assert "javascript" not in page.lower()


def test_markup_in_names_and_src_stays_text() -> None:
    evil_name = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    src = 'https://example.com/a.png" onerror="alert(3)'
    page = render_conversations([rich("image", {"src": src, "name": evil_name}, evil_name)])
    tags = Tags(page).tags
    assert [t for t, _ in tags if t == "script"] == []
    (image,) = [a for t, a in tags if t == "img"]
    assert set(image) == {"class", "src", "alt", "style", "referrerpolicy"}  # no onerror
    assert image["src"] == src and image["alt"] == evil_name  # kept as an attribute's text
    assert not any(k.startswith("on") for _, attrs in tags for k in attrs)


def test_a_data_image_is_shown_but_no_other_data_url() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    assert safe_src(png, image=True) == png
    assert safe_src(png, image=False) is None  # a file link never opens a data: URL
    assert safe_src("data:image/svg+xml;base64,PHN2Zz4=", image=True) is None  # SVG can script


def test_image_without_metadata_still_says_what_it_is() -> None:
    page = render_conversations([rich("image", "not an object", "box.png")])
    assert re.search(r"tiledesk-text[^>]*>box\.png</div>", page)


# -- the Attach button, through the sandbox -------------------------------------------------------
def pick(view: ConversationView, name: str, data: bytes) -> None:
    """What the browser sends the Attach button (a FileUpload) when a file is picked."""
    picked = {"name": name, "type": "", "size": len(data), "content": memoryview(data)}
    view._attach.set_state({"value": [picked | {"last_modified": 1_700_000_000_000}]})


def test_attach_sends_a_photo_as_an_image_and_a_pdf_as_a_file(
    sandbox_session: SandboxHandle,
) -> None:
    agent = TiledeskClient(sandbox_session.url, backoff_factor=0.01)
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    agent.sign_up(email, "Passw0rd!-attach", "Ada", "Lovelace")
    agent.sign_in(email, "Passw0rd!-attach")
    agent.project_id = agent.create_project("Attach").id
    rid = new_request_id(agent.project_id)
    visitor = agent.as_visitor(firstname="John")
    visitor.send_message(rid, "Here is my problem")
    view = ConversationView(client=agent, request_id=rid)
    assert view._attach.accept == ".jpg,.jpeg,.png,.gif,.pdf,.txt"

    photo = samples.DAMAGED_BOX.read_bytes()
    pick(view, "box.png", photo)
    assert view.status_text.startswith("Sent box.png to ")
    assert view._attach.value == ()  # ready for the next file
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    pick(view, "invoice.pdf", pdf)
    assert view.status_text.startswith("Sent invoice.pdf to ")

    messages = agent.list_messages(rid)
    image, file = messages[-2:]
    assert (image.type, image.text, image.role) == ("image", "box.png", "agent")
    assert image.metadata is not None
    assert (image.metadata["width"], image.metadata["height"]) == samples.DAMAGED_BOX_SIZE
    assert image.metadata["name"] == "box.png" and image.metadata["type"] == "image/png"
    (stored,) = parse_qs(urlsplit(image.metadata["src"]).query)["path"]
    assert agent.download_file(stored).content == photo
    assert (file.type, file.text) == ("file", "invoice.pdf")
    assert file.metadata is not None and file.metadata["type"] == "application/pdf"
    assert "width" not in file.metadata
    view.close()
    visitor.close()
    agent.close()


def test_attach_refusals_are_shown_not_raised(sandbox_session: SandboxHandle) -> None:
    agent = TiledeskClient(sandbox_session.url, backoff_factor=0.01)
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    agent.sign_up(email, "Passw0rd!-attach", "Ada", "Lovelace")
    agent.sign_in(email, "Passw0rd!-attach")
    agent.project_id = agent.create_project("Attach").id
    waiting = ConversationView(client=agent)  # no conversation yet
    pick(waiting, "box.png", samples.DAMAGED_BOX.read_bytes())
    assert waiting.status_text.startswith("No conversation yet")
    waiting.close()

    rid = new_request_id(agent.project_id)
    agent.as_visitor(firstname="John").send_message(rid, "hello")
    view = ConversationView(client=agent, request_id=rid)
    view.attach(b"MZ\x90\x00", "tool.exe")
    assert view.status_text.startswith("Not sent: Tiledesk does not accept .exe uploads")
    view.attach(b"x" * (1024 * 1024 + 1), "big.txt")
    assert view.status_text.startswith("Not sent: big.txt is 1048577 bytes, over")
    view.attach(b"<html><script>alert(1)</script>", "fake.png")  # the sandbox sniffs the content
    assert view.status_text.startswith("Not sent: ")
    assert [m.text for m in agent.list_messages(rid)] == ["hello"]
    view.close()
    agent.close()


def test_the_servers_own_photo_is_shown_inline_and_its_link_kept(
    sandbox_session: SandboxHandle,
) -> None:
    agent = TiledeskClient(sandbox_session.url, backoff_factor=0.01)
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    agent.sign_up(email, "Passw0rd!-inline", "Ada", "Lovelace")
    agent.sign_in(email, "Passw0rd!-inline")
    agent.project_id = agent.create_project("Inline").id
    uploaded = agent.upload_file(samples.DAMAGED_BOX)
    view = ConversationView(client=agent)
    meta = {"src": uploaded.src, "name": "damaged-box.png", "width": 64, "height": 48}
    view.add(rich("image", meta, "damaged-box.png"))
    (image,) = [a for t, a in Tags(view.html).tags if t == "img"]
    # An <img> cannot send the token the sandbox asks for: the view read it and shows it inline.
    assert image["src"] == "data:image/png;base64," + base64.b64encode(
        samples.DAMAGED_BOX.read_bytes()
    ).decode("ascii")
    links = [a["href"] for t, a in Tags(view.html).tags if t == "a"]
    assert links == [uploaded.src] * 2
    assert not any(k.startswith("on") for _, attrs in Tags(view.html).tags for k in attrs)
    view.close()
    plain = render_conversations([rich("image", meta, "damaged-box.png")])  # no client: as sent
    assert [a["src"] for t, a in Tags(plain).tags if t == "img"] == [uploaded.src]
    agent.close()


def test_attach_refuses_when_the_views_source_is_stopped(sandbox_session: SandboxHandle) -> None:
    agent = TiledeskClient(sandbox_session.url, backoff_factor=0.01)
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    agent.sign_up(email, "Passw0rd!-attach", "Ada", "Lovelace")
    agent.sign_in(email, "Passw0rd!-attach")
    agent.project_id = agent.create_project("Attach").id
    rid = new_request_id(agent.project_id)
    agent.as_visitor(firstname="John").send_message(rid, "first")
    listener = WebhookListener(port=0).start()
    view = ConversationView(listener, client=agent, request_id=rid)
    listener.stop()
    pick(view, "box.png", samples.DAMAGED_BOX.read_bytes())
    assert view.status_text.startswith(
        "Not sent: the webhook listener this view follows is stopped"
    )
    assert [m.text for m in agent.list_messages(rid)] == ["first"]  # nothing uploaded nor sent
    view.close()
    agent.close()
