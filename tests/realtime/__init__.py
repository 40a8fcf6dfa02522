"""Tests of the realtime feed, the forwarder and ``tiledesk-tutorial listen``."""
