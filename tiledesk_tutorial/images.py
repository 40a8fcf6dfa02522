"""Images of chat messages: the size of a PNG, GIF or JPEG from its header (an ``image`` message
carries it), and a server's own chat images inlined for a view.

A chat file is read with a token (``GET /<pid>/files?path=...``), which an ``<img>`` cannot send:
:class:`ImageInliner` fetches such an image with the view's client and gives it back as a
``data:`` URL, so a notebook view shows the photo instead of a broken frame.
"""

from __future__ import annotations

import base64
import struct
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:  # pragma: no cover
    from tiledesk_tutorial.client import TiledeskClient

__all__ = ["ImageInliner", "image_size"]

#: Media types an inlined image may have (never SVG: it can carry script).
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})
#: The largest image inlined (a bigger one stays a link: the page is re-sent on every update).
INLINE_MAX_BYTES = 512 * 1024
#: What the inlined images of one view may hold together; the least recently shown go first.
INLINE_CACHE_BYTES = 8 * 1024 * 1024

_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, GIF or JPEG; ``None`` for anything else or a broken header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return (width, height) if width and height else None
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return (width, height) if width and height else None
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _JPEG_FRAMES and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return (width, height) if width and height else None
        at += 2 + length
    return None


class ImageInliner:
    """Turns the address of an image on the client's own server into a ``data:`` URL.

    Call it with an image's ``src``: an address of the form ``<base URL>/<pid>/files?path=...``
    is downloaded once with the client's token (on a client of its own, so the learner's
    ``last_curl`` stays theirs) and answered as ``data:image/...;base64,...``; any other address,
    an image that is not PNG, JPEG or GIF, one over :data:`INLINE_MAX_BYTES` or one that cannot be
    read is answered unchanged (a view then shows its name as a link).
    """

    def __init__(self, client: TiledeskClient, *, cache_bytes: int = INLINE_CACHE_BYTES) -> None:
        self._client = client
        self._reader: TiledeskClient | None = None  # made at the first image (most views have none)
        self._base = urlsplit(client.base_url)
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._held = 0
        self._lock = threading.Lock()

    def __call__(self, src: str) -> str:
        """``src`` as a ``data:`` URL when it is one of the server's own images, else ``src``."""
        target = self._own_file(src)
        if target is None:
            return src
        with self._lock:
            if src in self._cache:
                self._cache.move_to_end(src)
                return self._cache[src] or src
        inlined = self._fetch(*target)
        with self._lock:
            if src not in self._cache:
                self._cache[src] = inlined
                self._held += len(inlined or "")
                while self._held > self._cache_bytes and len(self._cache) > 1:
                    _, dropped = self._cache.popitem(last=False)
                    self._held -= len(dropped or "")
        return inlined or src

    def close(self) -> None:
        """Release the inliner's own connections."""
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _own_file(self, src: str) -> tuple[str, str] | None:
        """``(project id, filename)`` when ``src`` is a chat file of the client's server."""
        parts = urlsplit(src)
        if (parts.scheme, parts.netloc) != (self._base.scheme, self._base.netloc):
            return None
        prefix = self._base.path.rstrip("/") + "/"
        if not parts.path.startswith(prefix):
            return None
        segments = parts.path[len(prefix) :].split("/")
        paths = parse_qs(parts.query).get("path", [])
        if len(segments) != 2 or segments[1] != "files" or len(paths) != 1:
            return None
        return segments[0], paths[0]

    def _own_reader(self) -> TiledeskClient:
        from tiledesk_tutorial.client import TiledeskClient

        with self._lock:
            if self._reader is None:
                self._reader = TiledeskClient(self._client.base_url, retries=0, timeout=10)
            return self._reader

    def _fetch(self, project_id: str, filename: str) -> str | None:
        token = self._client.token
        if token is None:
            return None
        try:
            reader = self._own_reader()
            if reader.token != token:
                reader.use_token(token)
            got = reader.download_file(filename, project_id=project_id)
        except Exception:  # unreadable: the view shows the name as a link instead
            return None
        content_type = (got.content_type or "").split(";")[0].strip().lower()
        data = got.content
        if content_type not in INLINE_TYPES or len(data) > INLINE_MAX_BYTES:
            return None
        if image_size(data) is None:  # not the image it says it is
            return None
        return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
