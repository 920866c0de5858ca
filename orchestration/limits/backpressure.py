"""Backpressure: refuse new work at the front of a workflow when the backlog is too deep,
instead of queuing without bound. Callers turn Overloaded into 503 + Retry-After.

The backlog is every agent's ready work (pending and due), counted up to a bound so a huge
backlog costs no more than a large one; both counts read partial indexes of the live and
the finished rows. Retry-After is how long the workers, at the pace of the last minute,
take to bring the backlog back under the limit.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from orchestration.errors import KernelError
from orchestration.models import FINISHED_STATUSES, AgentTask, TaskStatus

DRAIN_WINDOW = timedelta(minutes=1)
MIN_RETRY_AFTER = 1
MAX_RETRY_AFTER = 60  # also the answer when nothing finished lately: check back in a minute


class Overloaded(KernelError):
    """The backlog passed its limit; try again after ``retry_after`` seconds."""

    def __init__(self, backlog: int, limit: int, retry_after: int):
        super().__init__(
            f"overloaded: {backlog} or more tasks are ready and waiting for a worker (limit {limit}); "
            f"retry after {retry_after}s"
        )
        self.backlog = backlog
        self.limit = limit
        self.retry_after = retry_after


def ready_backlog(cap: int, now: datetime | None = None) -> int:
    """Pending tasks of every agent whose run_after has come, counted up to ``cap``."""
    return _bounded_count(f"status = '{TaskStatus.PENDING}' AND run_after <= %s", [now or timezone.now()], cap)


def finished_lately(cap: int, now: datetime | None = None) -> int:
    """Tasks finished (any way) in the last DRAIN_WINDOW, counted up to ``cap``."""
    since = (now or timezone.now()) - DRAIN_WINDOW
    finished = ", ".join(f"'{status}'" for status in FINISHED_STATUSES)
    return _bounded_count(f"status IN ({finished}) AND finished_at >= %s", [since], cap)


def _bounded_count(condition: str, params: list, cap: int) -> int:
    """count(*) of at most ``cap`` task rows meeting ``condition``, counted by the database (one
    statement, no ids sent). The statuses are written into the SQL: a status passed as a
    parameter hides from PostgreSQL which partial index the statement can use, so it would plan
    the statement afresh each time (a placement runs this one) instead of once per connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {AgentTask._meta.db_table} WHERE {condition} LIMIT %s) AS bounded",
            [*params, cap],
        )
        return cursor.fetchone()[0]


def seconds_to_drain(excess: int, finished_per_window: int) -> int:
    """How long the workers take to finish ``excess`` tasks at the recent pace, within bounds."""
    if finished_per_window <= 0:
        return MAX_RETRY_AFTER
    seconds = math.ceil(excess * DRAIN_WINDOW.total_seconds() / finished_per_window)
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def refuse_when_backlogged(limit: int) -> None:
    """Raise Overloaded when ``limit`` or more tasks are ready and waiting."""
    now = timezone.now()
    backlog = ready_backlog(2 * limit, now)  # past the limit, enough to tell a little from a lot
    if backlog < limit:
        return
    excess = backlog - limit + 1
    # Past this many, the answer is the shortest wait anyway.
    pace = finished_lately(math.ceil(excess * DRAIN_WINDOW.total_seconds() / MIN_RETRY_AFTER), now)
    raise Overloaded(backlog, limit, seconds_to_drain(excess, pace))
