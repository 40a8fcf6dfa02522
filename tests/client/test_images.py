"""The size of an image read from its header: what an ``image`` message's metadata needs."""

from __future__ import annotations

import base64
import os
import struct
import zlib
from collections.abc import Iterator

import pytest

from tiledesk_tutorial import samples
from tiledesk_tutorial.client import TiledeskClient
from tiledesk_tutorial.images import INLINE_MAX_BYTES, ImageInliner, image_size
from tiledesk_tutorial.sandbox import SandboxHandle


def png(width: int, height: int) -> bytes:
    """A real (one colour) PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int, *, frame: int = 0xC0) -> bytes:
    """A JPEG header as cameras write it: SOI, an APP0 (JFIF) segment, a fill byte, a frame."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = bytes([0xFF, frame]) + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + b"\xff" + sof + b"\xff\xd9"


def test_the_shipped_photo_has_the_size_the_samples_say() -> None:
    assert image_size(samples.DAMAGED_BOX.read_bytes()) == samples.DAMAGED_BOX_SIZE


def test_png_gif_and_jpeg_sizes() -> None:
    assert image_size(png(3, 2)) == (3, 2)
    assert image_size(b"GIF89a" + struct.pack("<HH", 640, 480) + b"\x00" * 8) == (640, 480)
    assert image_size(b"GIF87a" + struct.pack("<HH", 1, 1)) == (1, 1)
    assert image_size(jpeg(1024, 768)) == (1024, 768)
    assert image_size(jpeg(300, 200, frame=0xC2)) == (300, 200)  # progressive


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"%PDF-1.7\n",
        b"hello, a text file",
        png(3, 2)[:20],  # cut inside the header
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 16,  # no IHDR
        b"GIF89a\x00\x00\x00\x00",  # zero by zero
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # cut before any frame
        b"\xff\xd8\x00\x00\x00\x00",  # not a marker where one must be
        jpeg(0, 10),
    ],
)
def test_anything_else_has_no_size(data: bytes) -> None:
    assert image_size(data) is None


# -- the server's own images, inlined for a view --------------------------------------------------
@pytest.fixture
def visitor(sandbox: SandboxHandle) -> Iterator[TiledeskClient]:
    """A visitor of a fresh project on a fresh sandbox."""
    agent = TiledeskClient(sandbox.url, backoff_factor=0.01)
    agent.sign_up("ada@example.com", "Passw0rd!-images", "Ada", "Agent")
    agent.sign_in("ada@example.com", "Passw0rd!-images")
    agent.project_id = agent.create_project("Images").id
    client = agent.as_visitor(firstname="Vic")
    yield client
    client.close()
    agent.close()


def test_an_own_image_is_inlined_once_and_nothing_else_is(visitor: TiledeskClient) -> None:
    photo = samples.DAMAGED_BOX.read_bytes()
    uploaded = visitor.upload_file(samples.DAMAGED_BOX)
    before = visitor.last_curl
    inline = ImageInliner(visitor)
    got = inline(uploaded.src)
    assert got == "data:image/png;base64," + base64.b64encode(photo).decode()
    assert visitor.last_curl == before  # the learner's last call stays theirs
    inline.close()  # a second look is answered from the cache, with no call
    assert inline(uploaded.src) == got and inline._reader is None

    fresh = ImageInliner(visitor)
    elsewhere = "https://example.com/" + uploaded.src.split("/", 3)[3]  # same path, other host
    assert fresh(elsewhere) == elsewhere
    note = visitor.upload_file(b"just text", name="note.txt")
    assert fresh(note.src) == note.src  # not an image
    fake = visitor.upload_file(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, name="fake.png")
    assert fresh(fake.src) == fake.src  # a PNG signature, no PNG behind it
    missing = uploaded.src.replace("damaged-box.png", "missing.png")
    assert fresh(missing) == missing  # 404: left as it is, a view shows the link
    big = png(900, 900)[:33] + os.urandom(INLINE_MAX_BYTES)  # its header, then noise
    assert image_size(big) == (900, 900)
    assert fresh(visitor.upload_file(big, name="big.png").src).startswith("http")
    fresh.close()
    inline.close()


def test_the_inlined_images_are_bounded(visitor: TiledeskClient) -> None:
    first = visitor.upload_file(png(40, 40), name="one.png")
    second = visitor.upload_file(png(41, 41), name="two.png")
    inline = ImageInliner(visitor, cache_bytes=1)
    assert inline(first.src).startswith("data:image/png")
    assert inline(second.src).startswith("data:image/png")
    assert list(inline._cache) == [second.src]  # the least recently shown went first
    inline.close()
