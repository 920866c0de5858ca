"""Writes that must commit on their own, even while the caller is inside a transaction.

A heartbeat or a checkpoint written inside the handler's transaction would stay
invisible (and lost on rollback) until the handler finished, which defeats its
purpose. These writes run on another thread, so on another database connection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import connection, connections, transaction

from orchestration.work.connections import drop_broken_or_old, give_back_if_pooled, pool

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_pid: int | None = None
THREADS = 4


def run_autonomously(function: Callable[..., T], *args, **kwargs) -> T:
    """Run ``function`` in its own transaction on a connection of its own, and wait for it."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():  # a forked child needs its own threads
        _executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="autonomous")
        _executor_pid = os.getpid()
    return _executor.submit(_in_transaction, function, args, kwargs).result()


def run_committed(function: Callable[..., T], *args, **kwargs) -> T:
    """Run ``function`` so that what it writes commits on its own: right here when the caller
    has no transaction open (each of its statements then commits as it runs, so it must not
    need two to agree), else as run_autonomously does. Saves a thread hop and a transaction
    for a caller that is already outside one (an outside call, by design).

    With a connection pool (a thread-pool worker) it goes to the helper threads all the same:
    hundreds of threads in outside calls would otherwise queue for the pool's few connections
    with every result, where the helpers keep theirs."""
    if connection.in_atomic_block or pool() is not None:
        return run_autonomously(function, *args, **kwargs)
    return function(*args, **kwargs)


def _in_transaction(function: Callable[..., T], args, kwargs) -> T:
    drop_broken_or_old()
    try:
        with transaction.atomic():
            return function(*args, **kwargs)
    finally:
        # Helper threads keep their connection between jobs (heartbeats never queue for the
        # pool), unless the pool is so small that they would hold most of it for ever.
        shared = pool()
        if shared is not None and shared.max_size < 2 * THREADS:
            give_back_if_pooled()


def close_connections() -> None:
    """Close the connections the helper threads hold (a test database cannot be dropped while
    they are open). Every thread takes one closing job: the barrier keeps any from taking two."""
    if _executor is None or _executor_pid != os.getpid():
        return
    barrier = threading.Barrier(THREADS)

    def close() -> None:
        barrier.wait(timeout=10)
        connections.close_all()

    for future in [_executor.submit(close) for _ in range(THREADS)]:
        future.result()
