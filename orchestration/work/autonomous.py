"""Writes that must commit on their own, even while the caller is inside a transaction.

A heartbeat or a checkpoint written inside the handler's transaction would stay
invisible (and lost on rollback) until the handler finished, which defeats its
purpose. These writes run on another thread, so on another database connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import close_old_connections, transaction

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_pid: int | None = None


def run_autonomously(function: Callable[..., T], *args, **kwargs) -> T:
    """Run ``function`` in its own transaction on a connection of its own, and wait for it."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():  # a forked child needs its own threads
        _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="autonomous")
        _executor_pid = os.getpid()
    return _executor.submit(_in_transaction, function, args, kwargs).result()


def _in_transaction(function: Callable[..., T], args, kwargs) -> T:
    close_old_connections()
    with transaction.atomic():
        return function(*args, **kwargs)
