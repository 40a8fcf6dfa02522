"""Learn the Tiledesk REST API and webhooks, step by step, from a Jupyter notebook.

The names below are imported lazily, so that ``import tiledesk_tutorial`` stays fast and a notebook
pays only for what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "start_sandbox": "tiledesk_tutorial.sandbox",
    "SandboxHandle": "tiledesk_tutorial.sandbox",
    "WebhookListener": "tiledesk_tutorial.listener",
    "ListenerError": "tiledesk_tutorial.listener",
    "stop_all_listeners": "tiledesk_tutorial.listener",
    "WebhookEvent": "tiledesk_tutorial.events",
    "make_delivery": "tiledesk_tutorial.events",
    "read_jsonl": "tiledesk_tutorial.events",
    "open_tunnel": "tiledesk_tutorial.tunnel",
    "close_tunnel": "tiledesk_tutorial.tunnel",
    "webhook_target": "tiledesk_tutorial.tunnel",
    "TunnelError": "tiledesk_tutorial.tunnel",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tiledesk_tutorial' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from tiledesk_tutorial.events import WebhookEvent as WebhookEvent
    from tiledesk_tutorial.events import make_delivery as make_delivery
    from tiledesk_tutorial.events import read_jsonl as read_jsonl
    from tiledesk_tutorial.listener import ListenerError as ListenerError
    from tiledesk_tutorial.listener import WebhookListener as WebhookListener
    from tiledesk_tutorial.listener import stop_all_listeners as stop_all_listeners
    from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox
    from tiledesk_tutorial.tunnel import TunnelError as TunnelError
    from tiledesk_tutorial.tunnel import close_tunnel as close_tunnel
    from tiledesk_tutorial.tunnel import open_tunnel as open_tunnel
    from tiledesk_tutorial.tunnel import webhook_target as webhook_target
