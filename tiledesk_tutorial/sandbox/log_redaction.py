"""Keep tokens out of the sandbox's log: uvicorn logs each WebSocket's path with its query string.

A Realtime API client sends its JWT as ``?token=JWT%20eyJ...`` and the room view's socket may get
the presenter token the same way; uvicorn's ``"WebSocket /?token=..." [accepted]`` line would
print both in full. :func:`install` adds a filter to uvicorn's logger that hides every ``token``
query value (with :func:`tiledesk_tutorial.redact.redact`) before the line is written.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from tiledesk_tutorial.redact import redact

_TOKEN_IN_QUERY = re.compile(r"([?&]token=)([^&\s\"']*)")


def hide_query_tokens(text: str) -> str:
    """``text`` with the value of every ``token=`` query parameter redacted."""
    return _TOKEN_IN_QUERY.sub(lambda m: m.group(1) + redact(unquote(m.group(2))), text)


class QueryTokenFilter(logging.Filter):
    """Rewrites a record's message and arguments so that no ``?token=`` value is printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if isinstance(record.msg, str):
            record.msg = hide_query_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                hide_query_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def install(logger_name: str = "uvicorn.error") -> None:
    """Add the filter to ``logger_name`` once (calling it again changes nothing)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, QueryTokenFilter) for f in logger.filters):
        logger.addFilter(QueryTokenFilter())
