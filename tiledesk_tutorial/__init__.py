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
    from tiledesk_tutorial.sandbox import SandboxHandle, start_sandbox
