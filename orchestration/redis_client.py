"""The kernel's Redis connection (guards, wake-ups, the simulated world's settings): one client per process."""

from __future__ import annotations

import os

import redis
from django.conf import settings

_client: redis.Redis | None = None
_client_pid: int | None = None


def redis_client() -> redis.Redis:
    """One client per process (a forked worker child gets its own)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, decode_responses=True)
        _client_pid = os.getpid()
    return _client
