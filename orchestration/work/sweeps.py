"""Periodic jobs that keep the task table honest. Each is a SKIP LOCKED batch of
conditional updates, so two overlapping runs split the rows instead of doubling work."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from orchestration.conf import kernel_settings
from orchestration.models import AgentTask, AttemptStatus, Event, RejectedMessage, TaskAttempt, TaskStatus
from orchestration.observability.metrics import DEAD_LETTERS
from orchestration.work.dispatch import after_commit, queue_depth, queue_for, wake_on_commit, wake_queue
from orchestration.work.events import emit_dead_event

TABLE = AgentTask._meta.db_table
ATTEMPTS = TaskAttempt._meta.db_table
EVENTS = Event._meta.db_table


def _locked_batch(condition: str, columns: str = "id") -> str:
    return f"SELECT {columns} FROM {TABLE} WHERE {condition} ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"


def reclaim_expired_leases(now: datetime | None = None, limit: int | None = None) -> int:
    """Claims whose lease ran out go back to pending, or dead when out of attempts."""
    now = now or timezone.now()
    params = {"now": now, "limit": limit or kernel_settings().sweep_batch_size}
    out_of_attempts = "t.attempts >= t.max_attempts"
    sql = f"""
        UPDATE {TABLE} AS t SET
            status = CASE WHEN {out_of_attempts} THEN 'dead' ELSE 'pending' END,
            last_error = 'lease expired while claimed by ' || t.claimed_by
                || ' (attempt ' || t.attempts || ' of ' || t.max_attempts || ')',
            finished_at = CASE WHEN {out_of_attempts} THEN %(now)s ELSE NULL END,
            lease_expires_at = NULL, run_after = %(now)s, dispatched_at = %(now)s,
            reclaims = t.reclaims + 1, updated_at = %(now)s
        FROM ({_locked_batch("status = 'claimed' AND lease_expires_at < %(now)s")}) AS expired
        WHERE t.id = expired.id
        RETURNING t.id, t.fence, t.status, t.agent, t.operation, t.correlation_id
    """
    with transaction.atomic():
        rows = _fetch(sql, params)
        for task_id, fence, *_rest in rows:
            TaskAttempt.objects.filter(task_id=task_id, fence=fence, status=AttemptStatus.RUNNING).update(
                status=AttemptStatus.RECLAIMED, error="lease expired; task reclaimed", finished_at=now
            )
        _after_sweep(rows)
    return len(rows)


def expire_overdue_tasks(now: datetime | None = None, limit: int | None = None) -> int:
    """Pending tasks past their TTL are dead-lettered, and their owners told."""
    now = now or timezone.now()
    params = {"now": now, "limit": limit or kernel_settings().sweep_batch_size}
    sql = f"""
        UPDATE {TABLE} AS t SET
            status = 'dead', finished_at = %(now)s, updated_at = %(now)s,
            last_error = 'expired: still pending when its TTL ran out at ' || t.expires_at
        FROM ({_locked_batch("status = 'pending' AND expires_at IS NOT NULL AND expires_at <= %(now)s")}) AS o
        WHERE t.id = o.id
        RETURNING t.id, t.fence, t.status, t.agent, t.operation, t.correlation_id
    """
    with transaction.atomic():
        rows = _fetch(sql, params)
        _after_sweep(rows)
    return len(rows)


def republish_lost_messages(now: datetime | None = None, limit: int | None = None) -> int:
    """Wake the agents of ready pending tasks that no wake-up covers: those that became ready
    after a backoff or a deferral, and those whose wake-up is older than the re-publish window
    (lost) while their queue holds no message."""
    config = kernel_settings()
    now = now or timezone.now()
    stale = now - timedelta(seconds=config.republish_after_seconds)
    params = {
        "now": now,
        "stale": stale,
        "limit": limit or config.sweep_batch_size,
        "crowded": crowded_agents(now, stale),
    }
    # A queue that still holds a message is not woken again for old work: that message will
    # drain it, and re-sending every 30 s behind a backlog would grow the queue without bound.
    ready = (
        "status = 'pending' AND run_after <= %(now)s AND (expires_at IS NULL OR expires_at > %(now)s)"
        " AND (dispatched_at IS NULL OR dispatched_at < run_after"
        " OR (dispatched_at < %(stale)s AND NOT agent = ANY(%(crowded)s)))"
    )
    sql = f"""
        UPDATE {TABLE} AS t SET dispatched_at = %(now)s
        FROM ({_locked_batch(ready, columns="id, dispatched_at")}) AS r
        WHERE t.id = r.id
        RETURNING t.agent, r.dispatched_at IS NULL OR r.dispatched_at < %(stale)s
    """
    with transaction.atomic():
        rows = _fetch(sql, params)
        lost = sorted({queue_for(agent) for agent, was_lost in rows if was_lost})
        woken = sorted({queue_for(agent) for agent, was_lost in rows if not was_lost})
        after_commit(lambda: [wake_queue(queue, force=queue in lost) for queue in sorted({*lost, *woken})])
    return len(rows)


def crowded_agents(now: datetime, stale: datetime) -> list[str]:
    """Of the agents with a wake-up old enough to send again, those whose queue still holds a
    message (it will drain them). A quiet system asks the broker nothing."""
    ready = AgentTask.objects.filter(status=TaskStatus.PENDING, run_after__lte=now)
    with_stale = ready.filter(dispatched_at__lt=stale).values_list("agent", flat=True).distinct()
    crowded = []
    for agent in with_stale:
        depth = queue_depth(queue_for(agent))
        if depth:
            crowded.append(agent)
    return crowded


def prune_finished_tasks(now: datetime | None = None, limit: int = 5000) -> int:
    """Delete finished tasks (and their spans and events) past the retention window, and
    refused messages past the dead letters' one; returns the tasks deleted."""
    config = kernel_settings()
    now = now or timezone.now()
    params = {
        "done_before": now - timedelta(days=config.finished_retention_days),
        "dead_before": now - timedelta(days=config.dead_retention_days),
        "limit": limit,
    }
    condition = (
        "(status IN ('succeeded', 'cancelled') AND finished_at < %(done_before)s)"
        " OR (status = 'dead' AND finished_at < %(dead_before)s)"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {TABLE} WHERE id IN ({_locked_batch(condition)}) RETURNING id",
            params,
        )
        ids = [row[0] for row in cursor.fetchall()]
        if ids:
            cursor.execute(f"DELETE FROM {ATTEMPTS} WHERE task_id = ANY(%s)", [ids])
            cursor.execute(f"DELETE FROM {EVENTS} WHERE source_task_id = ANY(%s)", [ids])
    old_refusals = RejectedMessage.objects.filter(received_at__lt=params["dead_before"]).values("pk")[:limit]
    RejectedMessage.objects.filter(pk__in=old_refusals).delete()
    return len(ids)


def _fetch(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _after_sweep(rows: list[tuple]) -> None:
    """Wake the agents of the tasks that went back to pending; tell owners about the dead ones."""
    dead_ids = [task_id for task_id, _fence, status, *_rest in rows if status == "dead"]
    for task in AgentTask.objects.filter(id__in=dead_ids):
        emit_dead_event(task)
        DEAD_LETTERS.labels(task.agent).inc()
    wake_on_commit(agent for _id, _fence, status, agent, *_rest in rows if status == "pending")
