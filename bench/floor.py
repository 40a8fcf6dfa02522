"""The floor of the benchmarks: a server that does nothing, on the sandbox's own HTTP stack.

``python bench/floor.py`` prints its URL, then answers every request with ``200 {}`` from a
plain ASGI application on uvicorn with httptools (what the sandbox runs on), until SIGTERM. A
POST round trip to it is the least any call to the sandbox can cost on this machine: the
benchmark's targets are multiples of it (``floor_ms``).
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvicorn

_ANSWER = b"{}"
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def nothing(scope, receive, send) -> None:
    """Read the request, answer ``200 {}``."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


async def main() -> None:
    """Serve on a free loopback port; print the URL first."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        nothing, http="httptools", ws="none", lifespan="off", log_level="error", access_log=False
    )
    server = uvicorn.Server(config)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
