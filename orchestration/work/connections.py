"""Keeping a worker's database connection between pieces of work, without a round trip.

Django checks a reused connection before a web request (close_old_connections, with a
`SELECT 1` when health checks are on). A worker reuses its connection far more often than a
web process: before every wake-up, every heartbeat, every call of the simulated services. So
it checks only a connection that saw an error since it was last used, and closes one that
outlived DATABASE_CONN_MAX_AGE; a healthy connection costs nothing.
"""

from __future__ import annotations

import time

from django.db import connection


def drop_broken_or_old() -> None:
    """Close this thread's connection if it saw an error and fails its check, or is too old;
    the next query opens a new one."""
    if connection.connection is None:
        return
    if connection.errors_occurred:
        connection.close_if_unusable_or_obsolete()  # one SELECT 1: closed if the server went away
    elif connection.close_at is not None and time.monotonic() >= connection.close_at:
        connection.close()


def pool():
    """The connection pool behind this thread's connection (DATABASE_POOL_SIZE), or None."""
    return getattr(connection, "pool", None)


def give_back_if_pooled() -> None:
    """With a pool (DATABASE_POOL_SIZE), hand this thread's connection back once its work is
    done: an idle thread of a thread-pool worker must not sit on one of the few connections."""
    if pool() is not None and connection.connection is not None:
        connection.close()
