"""The sandbox's retry policy in tests: fast, so that testing retried deliveries takes a second."""

from __future__ import annotations

from tiledesk_tutorial.sandbox import RetryPolicy

FAST_RETRIES = RetryPolicy(retries=3, backoff=0.05, max_backoff=0.2)
