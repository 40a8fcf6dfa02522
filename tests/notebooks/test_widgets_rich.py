"""The conversation view shows image messages as images and file messages as named links, and
nothing in a message's metadata (a ``javascript:`` src, markup in a name) becomes markup or script.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from tiledesk_tutorial.models import Event
from tiledesk_tutorial.webhooks import make_delivery, make_message_payload, parse_delivery
from tiledesk_tutorial.widgets import render_conversations, safe_src

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
