"""The kernel's figures for the operators' dashboard: backlog per agent, throughput and
latency over the last minutes, dead letters, refused messages, circuit breakers, live workers.

Each is one or two aggregate queries that use the task table's indexes (live statuses by
agent, finished tasks by finish time), so the dashboard stays fast on a table of millions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from orchestration.conf import kernel_settings
from orchestration.limits.breakers import all_breakers
from orchestration.models import FINISHED_STATUSES, AgentTask, RejectedMessage, TaskStatus, Worker
from orchestration.observability.stuck import stuck_conditions
from orchestration.registry import registry


@dataclass
class Backlog:
    agent: str
    ready: int = 0  # pending and due: waiting for a worker
    waiting: int = 0  # pending with run_after in the future (backoff, deferral)
    claimed: int = 0
    dead: int = 0
    stuck: int = 0
    oldest_ready_seconds: float = 0.0

    @property
    def pending(self) -> int:
        return self.ready + self.waiting


def backlog(now: datetime | None = None) -> list[Backlog]:
    """Live and dead tasks per agent, in one GROUP BY over the (agent, status) index."""
    now = now or timezone.now()
    any_stuck = Q()
    for condition in stuck_conditions(now).values():
        any_stuck |= condition
    rows = (
        AgentTask.objects.filter(status__in=[TaskStatus.PENDING, TaskStatus.CLAIMED, TaskStatus.DEAD])
        .values("agent", "status")
        .annotate(
            count=Count("id"),
            ready=Count("id", filter=Q(status=TaskStatus.PENDING, run_after__lte=now)),
            stuck=Count("id", filter=any_stuck),
            oldest_ready=Min("run_after", filter=Q(status=TaskStatus.PENDING, run_after__lte=now)),
        )
    )
    by_agent = {agent: Backlog(agent) for agent in registry.agents}
    for row in rows:
        entry = by_agent.setdefault(row["agent"], Backlog(row["agent"]))
        if row["status"] == TaskStatus.PENDING:
            entry.ready += row["ready"]
            entry.waiting += row["count"] - row["ready"]
        elif row["status"] == TaskStatus.CLAIMED:
            entry.claimed += row["count"]
        else:
            entry.dead += row["count"]
        entry.stuck += row["stuck"]
        if row["oldest_ready"] is not None:
            entry.oldest_ready_seconds = max(entry.oldest_ready_seconds, (now - row["oldest_ready"]).total_seconds())
    return sorted(by_agent.values(), key=lambda entry: entry.agent)


@dataclass
class AgentThroughput:
    agent: str
    succeeded: int = 0
    dead: int = 0
    cancelled: int = 0
    p50_seconds: float | None = None  # creation to finish, succeeded tasks
    p95_seconds: float | None = None
    max_seconds: float | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + self.dead + self.cancelled


@dataclass
class Throughput:
    minutes: int
    since: datetime
    per_minute: list[tuple[datetime, int, int]] = field(default_factory=list)  # (minute, succeeded, failed)
    per_agent: list[AgentThroughput] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return sum(agent.finished for agent in self.per_agent)

    @property
    def per_second(self) -> float:
        return self.finished / (self.minutes * 60)


def throughput(minutes: int = 15, now: datetime | None = None) -> Throughput:
    """Tasks finished in the last ``minutes``, per minute and per agent, with the time each
    took from creation to finish (queueing, backoff and running together)."""
    now = now or timezone.now()
    since = now - timedelta(minutes=minutes)
    table = AgentTask._meta.db_table
    # The status list repeats the partial index's condition so PostgreSQL can use it.
    statuses = ", ".join(f"'{status}'" for status in FINISHED_STATUSES)  # constants, not input
    finished = f"status IN ({statuses}) AND finished_at >= %(since)s AND finished_at <= %(now)s"
    params = {"since": since, "now": now}
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT date_trunc('minute', finished_at) AS minute,
                       count(*) FILTER (WHERE status = 'succeeded'),
                       count(*) FILTER (WHERE status <> 'succeeded')
                FROM {table} WHERE {finished} GROUP BY minute ORDER BY minute""",
            params,
        )
        counted = {minute: (ok, failed) for minute, ok, failed in cursor.fetchall()}
        cursor.execute(
            f"""SELECT agent,
                       count(*) FILTER (WHERE status = 'succeeded'),
                       count(*) FILTER (WHERE status = 'dead'),
                       count(*) FILTER (WHERE status = 'cancelled'),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
                           FILTER (WHERE status = 'succeeded'),
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
                           FILTER (WHERE status = 'succeeded'),
                       max(extract(epoch FROM finished_at - created_at)) FILTER (WHERE status = 'succeeded')
                FROM {table} WHERE {finished} GROUP BY agent ORDER BY agent""",
            params,
        )
        per_agent = [
            AgentThroughput(agent, ok, dead, cancelled, *(_float(value) for value in latencies))
            for agent, ok, dead, cancelled, *latencies in cursor.fetchall()
        ]
    first = since.replace(second=0, microsecond=0)
    per_minute = []
    for step in range(minutes + 1):
        minute = first + timedelta(minutes=step)
        if minute <= now:
            per_minute.append((minute, *counted.get(minute, (0, 0))))
    return Throughput(minutes, since, per_minute, per_agent)


def _float(value) -> float | None:
    return None if value is None else float(value)


def breakers() -> tuple[list[dict], str]:
    """Every circuit breaker's state, and an error text when Redis cannot be read."""
    try:
        return all_breakers(), ""
    except RedisError as error:
        return [], f"could not read the circuit breakers from Redis: {error}"


def live_workers(now: datetime | None = None) -> list[Worker]:
    """Worker processes that touched their row within WORKER_GONE_AFTER_SECONDS."""
    now = now or timezone.now()
    seen_since = now - timedelta(seconds=kernel_settings().worker_gone_after_seconds)
    return list(Worker.objects.filter(stopped_at__isnull=True, last_seen_at__gte=seen_since).order_by("name"))


def bounded_count(queryset: QuerySet, up_to: int = 1000) -> int | str:
    """How many rows, reading at most ``up_to`` + 1: "1000+" is all an operator needs to know."""
    count = queryset[: up_to + 1].count()
    return f"{up_to}+" if count > up_to else count


def rejected_messages() -> int | str:
    """Broker messages refused and kept as dead letters (orchestration.broker.rejection)."""
    return bounded_count(RejectedMessage.objects.all())
