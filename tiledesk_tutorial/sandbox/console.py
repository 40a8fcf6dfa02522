"""The agent console: one static page, served by the sandbox at ``/console``.

Offline there is no Tiledesk dashboard, so the sandbox serves a small page where an agent signs in,
watches the project's conversations update, opens one and replies. The page is plain HTML, CSS
and JavaScript (no build step, nothing fetched from elsewhere); it only calls the sandbox's own
REST API, the same routes the tutorial teaches, and follows the conversations live over the
sandbox's Realtime API (a WebSocket, as Tiledesk's dashboard does). See docs/console.md.

The page is served with a strict Content-Security-Policy: scripts and styles are allowed only as
the exact inline blocks of ``static/console.html`` (by their SHA-256 hashes), requests only to the
same origin. Message text is rendered with ``textContent``, and even if that were ever got wrong,
the policy blocks inline event handlers and injected scripts.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

from tiledesk_tutorial.sandbox.asgi import Response

CONSOLE_PATHS = ("/console", "/console/")
_PAGE = "console.html"
_INLINE_BLOCK = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def console_page() -> Response:
    """The console page, never cached, with its security headers."""
    page, policy = _page_and_policy()
    return Response(200, page, page_headers(policy))


def page_headers(policy: str) -> dict[str, str]:
    """The headers of a page the sandbox serves (the console, the room view): never cached,
    never framed, its own ``policy`` for what may run."""
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def content_security_policy(page: str) -> str:
    """The policy for ``page``: only its own inline ``<script>``/``<style>`` blocks may run."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE_BLOCK.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii")
        hashes[kind].append(f"'sha256-{digest}'")
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(hashes["script"] or ["'none'"]),
            "style-src " + " ".join(hashes["style"] or ["'none'"]),
            "connect-src 'self'",
            "img-src 'self' data: blob:",  # blob: the chat images fetched with the token
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@functools.cache
def _page_and_policy() -> tuple[bytes, str]:
    page = resources.files("tiledesk_tutorial.sandbox").joinpath("static", _PAGE).read_text("utf-8")
    return page.encode("utf-8"), content_security_policy(page)
