"""The embedded sandbox: a local Tiledesk-compatible server for the tutorial's subset of the API,
REST and Realtime (WebSocket) on one port.

>>> from tiledesk_tutorial.sandbox import start_sandbox
>>> with start_sandbox() as sandbox:   # a free port, a temporary data folder
...     print(sandbox.url)              # doctest: +SKIP
"""

from __future__ import annotations

from tiledesk_tutorial.sandbox.delivery import RetryPolicy
from tiledesk_tutorial.sandbox.errors import SandboxError
from tiledesk_tutorial.sandbox.server import SandboxHandle, start_sandbox

__all__ = ["RetryPolicy", "SandboxError", "SandboxHandle", "start_sandbox"]
