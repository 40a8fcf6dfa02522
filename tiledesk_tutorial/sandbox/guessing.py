"""Bounds on password guessing: after a few wrong passwords, an account (and a remote address)
must wait before the next try, and the wait doubles with each failure.

A wrong password costs ~75 ms of scrypt; without a bound, a room guessing from eight threads
spends the whole CPU on it. The first :data:`FREE_FAILURES` failures cost nothing more; then each
one sets a wait of 1, 2, 4 ... up to :data:`MAX_WAIT` seconds, during which a try is answered
``429`` with ``Retry-After`` before any key derivation. A success clears the account's count.

Addresses on loopback are never counted: a workshop room may share one machine's 127.0.0.1 (the
sandbox and the learners on one laptop, or behind one tunnel), and blocking it would lock out
everyone; the account's count still holds there. Unknown e-mails are counted like known ones, and
checked against a decoy hash (see :mod:`tiledesk_tutorial.sandbox.passwords`), so neither the
answers' timing nor the waits tell them apart.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from tiledesk_tutorial.sandbox.errors import ApiError

#: Wrong passwords allowed per account (and per address) before any wait.
FREE_FAILURES = 5
#: The longest wait, in seconds.
MAX_WAIT = 60.0
#: Accounts and addresses remembered at most (the oldest are forgotten first).
MAX_TRACKED = 10_000


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0


class GuessingGuard:
    """Per-account and per-address failure counts, with a doubling wait once past the free ones."""

    def __init__(self) -> None:
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _keys(account: str, address: str | None) -> list[str]:
        keys = [f"account:{account.strip().lower()}"]
        if address and not _is_loopback(address):
            keys.append(f"address:{address}")
        return keys

    def check(self, account: str, address: str | None) -> None:
        """Raise a ``429`` answer when the account or the address must still wait."""
        now = time.monotonic()
        with self._lock:
            wait = max(
                (record.blocked_until - now for key in self._keys(account, address)
                 if (record := self._records.get(key)) is not None),
                default=0.0,
            )  # fmt: skip
        if wait > 0:
            seconds = math.ceil(wait)
            raise ApiError(
                429,
                {
                    "success": False,
                    "msg": f"Too many wrong passwords: try again in {seconds} s.",
                },
                headers={"Retry-After": str(seconds)},
            )

    def failed(self, account: str, address: str | None) -> None:
        """Count one wrong password (or unknown e-mail) for the account and the address."""
        now = time.monotonic()
        with self._lock:
            for key in self._keys(account, address):
                record = self._records.pop(key, None) or _Record()
                record.failures += 1
                if record.failures > FREE_FAILURES:
                    wait = min(MAX_WAIT, 2.0 ** (record.failures - FREE_FAILURES - 1))
                    record.blocked_until = now + wait
                self._records[key] = record
            while len(self._records) > MAX_TRACKED:
                self._records.popitem(last=False)

    def succeeded(self, account: str) -> None:
        """The right password: the account starts afresh (its address's count stays)."""
        with self._lock:
            self._records.pop(f"account:{account.strip().lower()}", None)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True  # not an IP address (a unix socket): counted by account only
