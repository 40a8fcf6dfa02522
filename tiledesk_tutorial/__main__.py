"""``python -m tiledesk_tutorial`` (or ``tiledesk-tutorial``): the tutorial's command line.

python -m tiledesk_tutorial walkthrough          # the whole tutorial, headless
"""

from __future__ import annotations

import argparse
import logging
import sys


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
        "--verbose", "-v", action="store_true", help="log what the package does (to stderr)"
    )
    return parser


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
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if not args.verbose:  # the client's retries are reported by the step that fails
            logging.getLogger("urllib3").setLevel(logging.ERROR)
        from tiledesk_tutorial.walkthrough import run_walkthrough

        return run_walkthrough(timeout=args.timeout, show_curl=args.curl)
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover (parser.error exits)


if __name__ == "__main__":
    sys.exit(main())
