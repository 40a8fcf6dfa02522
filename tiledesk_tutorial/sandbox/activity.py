"""How busy the API is: background work (webhook delivery) gives way to calls in progress."""

from __future__ import annotations

import threading


class Activity:
    """Counts API calls in progress, and lets a background thread wait for a quiet moment.

    On two cores, a webhook sent while calls are being answered slows those calls down. Under a
    burst (a workshop room all sending at once) the sandbox answers the calls first and sends the
    webhooks a moment later: they are in the outbox already, so nothing is lost, only delayed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0

    def enter(self) -> None:
        """A call starts."""
        with self._cond:
            self._busy += 1

    def leave(self) -> None:
        """A call has been answered."""
        with self._cond:
            self._busy -= 1
            if self._busy == 0:
                self._cond.notify_all()

    @property
    def busy(self) -> int:
        """Calls in progress now."""
        return self._busy

    def wait_quiet(self, timeout: float) -> bool:
        """Wait until no call is in progress, at most ``timeout`` seconds; True if quiet."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)
