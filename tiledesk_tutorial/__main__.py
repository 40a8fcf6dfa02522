"""``python -m tiledesk_tutorial`` (or ``tiledesk-tutorial``): the tutorial's command line.

python -m tiledesk_tutorial walkthrough          # the whole tutorial, headless
python -m tiledesk_tutorial listen               # every event of the project, live
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per task."""
    parser = argparse.ArgumentParser(
        prog="tiledesk-tutorial",
        description="Learn the Tiledesk REST API and webhooks (see notebooks/ and docs/).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    walk = commands.add_parser(
        "walkthrough",
        help="run the whole tutorial headless and print each step",
        description=(
            "Run every step of the tutorial, printing each result (secrets hidden), and exit "
            "with status 1 at the first failure. Uses a private sandbox, or the Tiledesk named "
            "by TILEDESK_API_URL with TILEDESK_EMAIL / TILEDESK_PASSWORD (environment or .env)."
        ),
    )
    walk.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        help="seconds to wait for each webhook (default: %(default)s)",
    )
    walk.add_argument(
        "--curl", action="store_true", help="print each API call as a curl command (redacted)"
    )
    walk.add_argument(
        "--realtime",
        action="store_true",
        help="receive over Tiledesk's Realtime API instead of webhooks (no tunnel needed)",
    )
    walk.add_argument(
        "--verbose", "-v", action="store_true", help="log what the package does (to stderr)"
    )
    _add_listen(commands)
    return parser


def _add_listen(commands: Any) -> None:
    from tiledesk_tutorial.wire import WEBHOOK_EVENTS

    listen = commands.add_parser(
        "listen",
        help="print every event of the project live; --forward-to relays them to your code",
        description=(
            "Print each event of the project as it happens: one line per event on standard "
            "output (or JSON Lines with --json), everything else on standard error. By default "
            "it connects out to Tiledesk's Realtime API, so it needs no public URL and no "
            "tunnel. --forward-to posts each message to your own webhook receiver in Tiledesk's "
            "webhook format. The server and account are the notebooks' (TILEDESK_API_URL, "
            "TILEDESK_EMAIL, TILEDESK_PASSWORD, else the running sandbox). Ctrl-C stops."
        ),
    )
    listen.add_argument(
        "--project-id",
        help="the project to follow (default: TILEDESK_PROJECT_ID, else the tutorial's project)",
    )
    listen.add_argument(
        "--source",
        choices=("realtime", "webhook"),
        default="realtime",
        help="realtime: subscribe over the Realtime API (default); webhook: run a local webhook "
        "listener and subscribe it (a real Tiledesk then needs a tunnel: NGROK_AUTHTOKEN)",
    )
    listen.add_argument("--json", action="store_true", help="print JSON Lines, one per event")
    listen.add_argument(
        "--forward-to",
        metavar="URL",
        help="also POST each event to URL exactly as a Tiledesk webhook (e.g. "
        "http://127.0.0.1:5000/webhook); retried with backoff while it fails",
    )
    listen.add_argument(
        "--forward-secret",
        metavar="SECRET",
        help="the x-hook-secret to send and sign with (default: TILEDESK_FORWARD_SECRET, else a "
        "new one, shown once)",
    )
    listen.add_argument(
        "--events",
        default="message.create",
        help="comma-separated event kinds to listen for and forward, among "
        f"{', '.join(WEBHOOK_EVENTS)}, or 'all' (default: %(default)s; the realtime source "
        "always prints them all)",
    )
    listen.add_argument(
        "--history",
        action="store_true",
        help="realtime: also print what was there at start (the open conversations and their "
        "messages)",
    )
    listen.add_argument(
        "--port", type=int, default=0, help="webhook source: the listener's port (default: any)"
    )
    listen.add_argument(
        "--verbose", "-v", action="store_true", help="log what the package does (to stderr)"
    )


def _listen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from tiledesk_tutorial.config import get_default
    from tiledesk_tutorial.listen import ListenOptions, run_listen
    from tiledesk_tutorial.wire import WEBHOOK_EVENTS, is_object_id

    if args.project_id is not None and not is_object_id(args.project_id):
        parser.error(f"--project-id must be 24 hexadecimal characters, not {args.project_id!r}")
    if args.events.strip() == "all":
        events = WEBHOOK_EVENTS
    else:
        events = tuple(kind.strip() for kind in args.events.split(",") if kind.strip())
        unknown = [kind for kind in events if kind not in WEBHOOK_EVENTS]
        if unknown or not events:
            parser.error(
                f"--events: unknown {', '.join(unknown) or 'empty list'}; choose among "
                f"{', '.join(WEBHOOK_EVENTS)}, or 'all'"
            )
    if not 0 <= args.port <= 65535:
        parser.error("--port must be from 0 to 65535 (0: any free port)")
    _log_to_stderr(args.verbose)
    try:
        config = get_default()
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    options = ListenOptions(
        source=args.source,
        project_id=args.project_id,
        json_lines=args.json,
        forward_to=args.forward_to,
        forward_secret=args.forward_secret or config.forward_secret,
        events=events,
        include_history=args.history,
        port=args.port,
    )
    return run_listen(options)


def _log_to_stderr(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:  # the client's retries are reported by the step that fails
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "walkthrough":
        if args.timeout <= 0:
            parser.error("--timeout must be more than 0 seconds")
        _log_to_stderr(args.verbose)
        from tiledesk_tutorial.walkthrough import run_walkthrough

        return run_walkthrough(timeout=args.timeout, show_curl=args.curl, realtime=args.realtime)
    if args.command == "listen":
        return _listen(parser, args)
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover (parser.error exits)


if __name__ == "__main__":
    sys.exit(main())
