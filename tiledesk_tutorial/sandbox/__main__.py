"""``python -m tiledesk_tutorial.sandbox`` (or ``tiledesk-sandbox``): run the sandbox as a server.

The first line printed is the base URL; the server runs until SIGINT (Ctrl-C) or SIGTERM, then stops
cleanly, leaving every pending webhook delivery in its data folder for the next start.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from tiledesk_tutorial.sandbox.delivery import RetryPolicy
from tiledesk_tutorial.sandbox.errors import SandboxError
from tiledesk_tutorial.sandbox.server import DEFAULT_PREFIXES, lan_address, start_sandbox


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="tiledesk-sandbox",
        description="A local Tiledesk-compatible server: no account, no internet needed.",
    )
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: 127.0.0.1; with --room, 0.0.0.0: every interface)",
    )
    parser.add_argument(
        "--port", type=int, default=3000, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument("--data", default="./.sandbox", help="data folder (default: %(default)s)")
    parser.add_argument(
        "--prefix",
        action="append",
        default=None,
        help="also serve the API under this path prefix (default: /v3); repeat for several",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=RetryPolicy.retries,
        help="webhook retries (default: %(default)s)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=RetryPolicy.backoff,
        help="first retry delay in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--room",
        action="store_true",
        help="serve a workshop room: every interface, and a room view for the presenter",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="start on a data folder whose write-ahead log is damaged: keep its good part and "
        "move the damaged file aside",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.host is None:
        args.host = "0.0.0.0" if args.room else "127.0.0.1"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGINT or SIGTERM."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.port < 0 or args.port > 65535:
        print(f"error: --port must be between 0 and 65535, not {args.port}", file=sys.stderr)
        return 2
    if args.retries < 0 or args.backoff < 0:
        print("error: --retries and --backoff cannot be negative", file=sys.stderr)
        return 2
    try:
        sandbox = start_sandbox(
            port=args.port,
            data_dir=Path(args.data),
            host=args.host,
            prefixes=tuple(args.prefix) if args.prefix else DEFAULT_PREFIXES,
            retry_policy=RetryPolicy(retries=args.retries, backoff=args.backoff),
            room=args.room,
            repair=args.repair,
        )
    except SandboxError as exc:
        hint = f" Hint: {exc.hint}" if exc.hint else ""
        print(f"error: {exc.summary}{hint}", file=sys.stderr)
        return 1
    url = sandbox.url
    if args.host in ("0.0.0.0", "::"):
        url = f"http://{lan_address()}:{sandbox.port}"
    print(url, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host}: anyone on this network can reach the sandbox. "
            "Use it for a workshop room, not on a public network.",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"Tiledesk sandbox ready: {url} (also under {', '.join(args.prefix or DEFAULT_PREFIXES)}), "
        f"data in {sandbox.data_dir}. Press Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
    if sandbox.room is not None:
        print_room(url, sandbox.room.view_url(url))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    print("Stopping the sandbox...", file=sys.stderr, flush=True)
    sandbox.stop()
    return 0


def print_room(url: str, view_url: str) -> None:
    """What the presenter needs: the address for the learners, and the room view's (the only
    place the presenter token is ever shown)."""
    print(
        f"Workshop room. Learners set TILEDESK_API_URL={url} (in .env), with an e-mail and a "
        "password of their choice: notebook 01 signs them up.\n"
        "Learners receive through the realtime feed (notebook 06, tiledesk-tutorial listen): "
        "their laptops need no inbound connection, only this address.",
        file=sys.stderr,
        flush=True,
    )
    print(f"Room view: {view_url}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
