"""Learn the Tiledesk REST API, webhooks and the Realtime API step by step, in a notebook.

Everything a notebook uses is importable from here (``from tiledesk_tutorial import
TiledeskClient, WebhookListener, ConversationView, tutorial``). The names are imported lazily, so
that ``import tiledesk_tutorial`` stays fast and a notebook pays only for what it uses. How the
parts fit together: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the client
    "TiledeskClient": "tiledesk_tutorial.client",
    "new_request_id": "tiledesk_tutorial.client",
    # the configuration
    "Config": "tiledesk_tutorial.config",
    "load_config": "tiledesk_tutorial.config",
    "get_default": "tiledesk_tutorial.config",
    "set_default": "tiledesk_tutorial.config",
    # errors
    "TiledeskTutorialError": "tiledesk_tutorial.errors",
    "InvalidInputError": "tiledesk_tutorial.errors",
    "ConfigError": "tiledesk_tutorial.errors",
    "TiledeskError": "tiledesk_tutorial.errors",
    "AuthenticationError": "tiledesk_tutorial.errors",
    "PermissionDeniedError": "tiledesk_tutorial.errors",
    "EmailAlreadyRegisteredError": "tiledesk_tutorial.errors",
    "NotFoundError": "tiledesk_tutorial.errors",
    "ValidationError": "tiledesk_tutorial.errors",
    "RateLimitError": "tiledesk_tutorial.errors",
    "ServerError": "tiledesk_tutorial.errors",
    "UnexpectedResponseError": "tiledesk_tutorial.errors",
    "TiledeskConnectionError": "tiledesk_tutorial.errors",
    "TiledeskTimeoutError": "tiledesk_tutorial.errors",
    # what the API sends back, and live events
    "Event": "tiledesk_tutorial.models",
    "Message": "tiledesk_tutorial.models",
    "Request": "tiledesk_tutorial.models",
    "Project": "tiledesk_tutorial.models",
    "Subscription": "tiledesk_tutorial.models",
    "REQUEST_STATUS": "tiledesk_tutorial.models",
    "EventHub": "tiledesk_tutorial.event_hub",
    "EventSource": "tiledesk_tutorial.event_hub",
    # webhooks
    "verify_delivery": "tiledesk_tutorial.webhooks",
    "verify_token": "tiledesk_tutorial.webhooks",
    "WebhookVerificationError": "tiledesk_tutorial.webhooks",
    "InvalidDelivery": "tiledesk_tutorial.webhooks",
    "make_delivery": "tiledesk_tutorial.webhooks",
    "make_message_payload": "tiledesk_tutorial.webhooks",
    "WebhookListener": "tiledesk_tutorial.listener",
    "ListenerError": "tiledesk_tutorial.listener",
    "PortInUseError": "tiledesk_tutorial.listener",
    "WebhookTimeout": "tiledesk_tutorial.listener",
    "stop_all_listeners": "tiledesk_tutorial.listener",
    "read_jsonl": "tiledesk_tutorial.jsonl",
    "open_tunnel": "tiledesk_tutorial.tunnel",
    "close_tunnel": "tiledesk_tutorial.tunnel",
    "webhook_target": "tiledesk_tutorial.tunnel",
    "TunnelError": "tiledesk_tutorial.tunnel",
    # the Realtime API
    "RealtimeFeed": "tiledesk_tutorial.realtime",
    "RealtimeError": "tiledesk_tutorial.realtime",
    "stop_all_feeds": "tiledesk_tutorial.realtime",
    "WebhookForwarder": "tiledesk_tutorial.forwarder",
    # the notebook view
    "ConversationView": "tiledesk_tutorial.widgets",
    "render_conversations": "tiledesk_tutorial.widgets",
    "safe_src": "tiledesk_tutorial.widgets",
    "DeliveryInspector": "tiledesk_tutorial.inspector",
    # the sandbox and the tutorial
    "start_sandbox": "tiledesk_tutorial.sandbox",
    "SandboxHandle": "tiledesk_tutorial.sandbox",
    "Tutorial": "tiledesk_tutorial.tutorial",
    "TutorialError": "tiledesk_tutorial.tutorial",
    "run_walkthrough": "tiledesk_tutorial.walkthrough",
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
    from tiledesk_tutorial.client import TiledeskClient as TiledeskClient
    from tiledesk_tutorial.client import new_request_id as new_request_id
    from tiledesk_tutorial.config import Config as Config
    from tiledesk_tutorial.config import get_default as get_default
    from tiledesk_tutorial.config import load_config as load_config
    from tiledesk_tutorial.config import set_default as set_default
    from tiledesk_tutorial.errors import AuthenticationError as AuthenticationError
    from tiledesk_tutorial.errors import ConfigError as ConfigError
    from tiledesk_tutorial.errors import EmailAlreadyRegisteredError as EmailAlreadyRegisteredError
    from tiledesk_tutorial.errors import InvalidInputError as InvalidInputError
    from tiledesk_tutorial.errors import NotFoundError as NotFoundError
    from tiledesk_tutorial.errors import PermissionDeniedError as PermissionDeniedError
    from tiledesk_tutorial.errors import RateLimitError as RateLimitError
    from tiledesk_tutorial.errors import ServerError as ServerError
    from tiledesk_tutorial.errors import TiledeskConnectionError as TiledeskConnectionError
    from tiledesk_tutorial.errors import TiledeskError as TiledeskError
    from tiledesk_tutorial.errors import TiledeskTimeoutError as TiledeskTimeoutError
    from tiledesk_tutorial.errors import TiledeskTutorialError as TiledeskTutorialError
    from tiledesk_tutorial.errors import UnexpectedResponseError as UnexpectedResponseError
    from tiledesk_tutorial.errors import ValidationError as ValidationError
    from tiledesk_tutorial.event_hub import EventHub as EventHub
    from tiledesk_tutorial.event_hub import EventSource as EventSource
    from tiledesk_tutorial.forwarder import WebhookForwarder as WebhookForwarder
    from tiledesk_tutorial.inspector import DeliveryInspector as DeliveryInspector
    from tiledesk_tutorial.jsonl import read_jsonl as read_jsonl
    from tiledesk_tutorial.listener import ListenerError as ListenerError
    from tiledesk_tutorial.listener import PortInUseError as PortInUseError
    from tiledesk_tutorial.listener import WebhookListener as WebhookListener
    from tiledesk_tutorial.listener import WebhookTimeout as WebhookTimeout
    from tiledesk_tutorial.listener import stop_all_listeners as stop_all_listeners
    from tiledesk_tutorial.models import REQUEST_STATUS as REQUEST_STATUS
    from tiledesk_tutorial.models import Event as Event
    from tiledesk_tutorial.models import Message as Message
    from tiledesk_tutorial.models import Project as Project
    from tiledesk_tutorial.models import Request as Request
    from tiledesk_tutorial.models import Subscription as Subscription
    from tiledesk_tutorial.realtime import RealtimeError as RealtimeError
    from tiledesk_tutorial.realtime import RealtimeFeed as RealtimeFeed
    from tiledesk_tutorial.realtime import stop_all_feeds as stop_all_feeds
    from tiledesk_tutorial.sandbox import SandboxHandle as SandboxHandle
    from tiledesk_tutorial.sandbox import start_sandbox as start_sandbox
    from tiledesk_tutorial.tunnel import TunnelError as TunnelError
    from tiledesk_tutorial.tunnel import close_tunnel as close_tunnel
    from tiledesk_tutorial.tunnel import open_tunnel as open_tunnel
    from tiledesk_tutorial.tunnel import webhook_target as webhook_target
    from tiledesk_tutorial.tutorial import Tutorial as Tutorial
    from tiledesk_tutorial.tutorial import TutorialError as TutorialError
    from tiledesk_tutorial.walkthrough import run_walkthrough as run_walkthrough
    from tiledesk_tutorial.webhooks import InvalidDelivery as InvalidDelivery
    from tiledesk_tutorial.webhooks import WebhookVerificationError as WebhookVerificationError
    from tiledesk_tutorial.webhooks import make_delivery as make_delivery
    from tiledesk_tutorial.webhooks import make_message_payload as make_message_payload
    from tiledesk_tutorial.webhooks import verify_delivery as verify_delivery
    from tiledesk_tutorial.webhooks import verify_token as verify_token
    from tiledesk_tutorial.widgets import ConversationView as ConversationView
    from tiledesk_tutorial.widgets import render_conversations as render_conversations
    from tiledesk_tutorial.widgets import safe_src as safe_src
