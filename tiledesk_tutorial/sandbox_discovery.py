"""Finding the sandbox a notebook should talk to, or starting one in the kernel.

In this order: ``TILEDESK_SANDBOX_URL`` (set by ``make lab`` and the tests) when it answers; a
sandbox already answering on ``http://127.0.0.1:3000`` (another notebook's, or ``make sandbox``);
the one this kernel started earlier; else a new one started in this kernel on port 3000, with its
data in ``<home>/sandbox`` so that accounts and projects outlive the kernel. A port held by another
program gives a private sandbox on a free port instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:  # pragma: no cover
    from tiledesk_tutorial.sandbox import SandboxHandle

__all__ = ["DEFAULT_SANDBOX_PORT", "find_sandbox", "probe_sandbox", "stop_kernel_sandbox"]

#: The port a sandbox started by a notebook listens on, so other notebooks find it.
DEFAULT_SANDBOX_PORT = 3000
#: What every Tiledesk server answers on ``GET /``; the sandbox adds :data:`SANDBOX_MARK`.
HEALTH_PREFIX = "Hello from Tiledesk server"
SANDBOX_MARK = "tiledesk-tutorial sandbox"

# The sandbox this kernel started (re-running the first cell reuses it).
_kernel_sandbox: SandboxHandle | None = None
_lock = threading.RLock()


def probe_sandbox(url: str, *, timeout: float = 1.0, require_mark: bool = True) -> bool:
    """Whether ``url`` answers ``GET /`` like the tutorial's sandbox.

    With ``require_mark=False`` any Tiledesk server's greeting is enough (the real server says
    "Hello from Tiledesk server" too); by default the sandbox's own mark is required, so that a
    real Tiledesk on port 3000 is not mistaken for a throw-away sandbox.
    """
    try:
        answer = requests.get(url.rstrip("/") + "/", timeout=timeout)
    except requests.RequestException:
        return False
    text = answer.text if answer.ok else ""
    return text.startswith(HEALTH_PREFIX) and (not require_mark or SANDBOX_MARK in text)


def find_sandbox(
    explicit: str | None, home: Path, port: int, say: Callable[[str], None]
) -> tuple[str, SandboxHandle | None, str]:
    """The sandbox to use: ``(url, the handle if this kernel runs it, how it was found)``.

    ``explicit`` is ``TILEDESK_SANDBOX_URL``; ``say`` prints the notes for the learner.
    """
    global _kernel_sandbox
    from tiledesk_tutorial.sandbox import SandboxError, start_sandbox
    from tiledesk_tutorial.sandbox.folder import DataFolderError

    if explicit:
        if probe_sandbox(explicit, timeout=2.0, require_mark=False):
            return explicit, None, "from TILEDESK_SANDBOX_URL"
        say(f"Note: TILEDESK_SANDBOX_URL={explicit} does not answer; looking for another sandbox.")
    with _lock:
        if _kernel_sandbox is not None and _kernel_sandbox.running:
            return _kernel_sandbox.url, _kernel_sandbox, "started by this kernel"
        shared = f"http://127.0.0.1:{port}"
        if probe_sandbox(shared):
            return shared, None, "already running, shared by the notebooks"
        data_dir = home / "sandbox"
        try:
            _kernel_sandbox = start_sandbox(port=port, data_dir=data_dir)
            where = "started by this kernel; other notebooks share it while this kernel runs"
            return _kernel_sandbox.url, _kernel_sandbox, where
        except DataFolderError as exc:  # another sandbox runs on that folder, on another port
            _kernel_sandbox = start_sandbox(port=0)
            say(f"Note: {exc.summary} This notebook has its own sandbox on a free port instead.")
            return _kernel_sandbox.url, _kernel_sandbox, "private to this kernel"
        except SandboxError:
            if probe_sandbox(shared):  # another notebook started one just now
                return shared, None, "already running, shared by the notebooks"
        # Port 3000 belongs to another program (perhaps a real Tiledesk: use it with
        # TILEDESK_API_URL). A private sandbox on a free port keeps this notebook going.
        _kernel_sandbox = start_sandbox(port=0)
        say(
            f"Note: port {port} is used by another program, so this notebook has its own sandbox "
            "on a free port; its data goes away with the kernel. (If that program is a Tiledesk "
            f"server, set TILEDESK_API_URL=http://127.0.0.1:{port} to use it.)"
        )
        return _kernel_sandbox.url, _kernel_sandbox, "private to this kernel"


def stop_kernel_sandbox() -> None:
    """Stop the sandbox this kernel started, if any (other notebooks then lose it too)."""
    global _kernel_sandbox
    with _lock:
        handle, _kernel_sandbox = _kernel_sandbox, None
    if handle is not None:
        handle.stop()
