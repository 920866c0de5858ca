"""Every change of a task's status: one conditional statement whose row count decides.

pending -> claimed -> succeeded | pending (retry, backoff) | dead
pending -> cancelled | dead (expired);  dead -> pending (operator replay)

Claims raise the row's fencing token; every later step of that attempt names the
token, so a worker whose lease was reclaimed while it slept changes nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from orchestration.conf import kernel_settings
from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus
from orchestration.work.dispatch import publish_on_commit
from orchestration.work.events import emit_dead_event

TABLE = AgentTask._meta.db_table
UNSET: Any = object()


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never above the cap.

    Jitter spreads the retries of many tasks that failed together (a dependency
    outage) so they do not come back as one storm.
    """
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Claim:
    task: AgentTask
    attempt: TaskAttempt

    @property
    def fence(self) -> int:
        return self.task.fence


CLAIM_SET = """
    status = 'claimed', fence = t.fence + 1, attempts = t.attempts + 1,
    claimed_by = %(worker)s, lease_expires_at = %(lease_expires_at)s,
    heartbeat_at = %(now)s, updated_at = %(now)s
"""
READY = "t.status = 'pending' AND t.run_after <= %(now)s AND (t.expires_at IS NULL OR t.expires_at > %(now)s)"


def claim(
    task_id: int,
    *,
    worker: str,
    queue: str = "",
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> Claim | None:
    """Take a ready pending task; None when it is taken, finished, not ready or gone."""
    now = now or timezone.now()
    params = _claim_params(worker, lease_seconds, now) | {"id": task_id}
    sql = f"UPDATE {TABLE} AS t SET {CLAIM_SET} WHERE t.id = %(id)s AND {READY} RETURNING t.*"
    with transaction.atomic():
        claimed = list(AgentTask.objects.raw(sql, params))
        if not claimed:
            return None
        return Claim(claimed[0], _start_attempt(claimed[0], worker, queue, now))


def claim_batch(
    agents: list[str],
    *,
    worker: str,
    limit: int,
    queue: str = "",
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> list[Claim]:
    """Claim up to ``limit`` ready tasks of these agents; concurrent claimers skip each other's rows."""
    now = now or timezone.now()
    params = _claim_params(worker, lease_seconds, now) | {"agents": agents, "limit": limit}
    sql = f"""
        UPDATE {TABLE} AS t SET {CLAIM_SET}
        FROM (
            SELECT t.id FROM {TABLE} AS t
            WHERE t.agent = ANY(%(agents)s) AND {READY}
            ORDER BY t.priority DESC, t.run_after, t.id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ) AS picked
        WHERE t.id = picked.id
        RETURNING t.*
    """
    with transaction.atomic():
        claimed = list(AgentTask.objects.raw(sql, params))
        return [Claim(task, _start_attempt(task, worker, queue, now)) for task in claimed]


def _claim_params(worker: str, lease_seconds: int | None, now: datetime) -> dict[str, Any]:
    lease = lease_seconds or kernel_settings().default_lease_seconds
    return {"worker": worker, "now": now, "lease_expires_at": now + timedelta(seconds=lease)}


def _start_attempt(task: AgentTask, worker: str, queue: str, now: datetime) -> TaskAttempt:
    return TaskAttempt.objects.create(
        task=task,
        number=task.attempts,
        fence=task.fence,
        agent=task.agent,
        operation=task.operation,
        correlation_id=task.correlation_id,
        worker=worker,
        queue=queue,
        started_at=now,
    )


def _finish_attempt(task_id: int, fence: int, status: str, error: str = "", now: datetime | None = None) -> None:
    TaskAttempt.objects.filter(task_id=task_id, fence=fence, status=AttemptStatus.RUNNING).update(
        status=status, error=error[:10000], finished_at=now or timezone.now()
    )


def _owned(task_id: int, fence: int):
    return AgentTask.objects.filter(id=task_id, status=TaskStatus.CLAIMED, fence=fence)


def heartbeat(
    task_id: int,
    fence: int,
    *,
    lease_seconds: int | None = None,
    checkpoint: Any = UNSET,
    now: datetime | None = None,
) -> bool:
    """Extend the lease (and store a checkpoint); False when the lease is no longer ours.
    A lease that already ran out is not revived, even before the sweep reclaims it: its
    guard slots expired with it and may have gone to someone else."""
    now = now or timezone.now()
    lease = lease_seconds or kernel_settings().default_lease_seconds
    changes: dict[str, Any] = {
        "lease_expires_at": now + timedelta(seconds=lease),
        "heartbeat_at": now,
        "updated_at": now,
    }
    if checkpoint is not UNSET:
        changes["checkpoint"] = checkpoint
    return _owned(task_id, fence).filter(lease_expires_at__gte=now).update(**changes) == 1


def complete(
    task_id: int, fence: int, *, result: Any = None, cost: Decimal | float = 0, now: datetime | None = None
) -> bool:
    """Mark the task succeeded, in the caller's transaction; False when fenced out."""
    now = now or timezone.now()
    done = (
        _owned(task_id, fence).update(
            status=TaskStatus.SUCCEEDED,
            result=result,
            cost=F("cost") + cost,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
        == 1
    )
    if done:
        _finish_attempt(task_id, fence, AttemptStatus.SUCCEEDED, now=now)
    return done


def fail(
    task_id: int,
    fence: int,
    *,
    error: str,
    retryable: bool,
    attempt: int,
    now: datetime | None = None,
) -> str | None:
    """Record a failed attempt: back to pending with backoff, or dead. Returns the new status."""
    now = now or timezone.now()
    config = kernel_settings()
    delay = backoff_delay(attempt, config.backoff_base_seconds, config.backoff_cap_seconds)
    out_of_attempts = When(attempts__gte=F("max_attempts"), then=Value(TaskStatus.DEAD))
    with transaction.atomic():
        changed = _owned(task_id, fence).update(
            status=Case(out_of_attempts, default=Value(TaskStatus.PENDING)) if retryable else Value(TaskStatus.DEAD),
            run_after=now + timedelta(seconds=delay) if retryable else F("run_after"),
            last_error=error[:10000],
            lease_expires_at=None,
            finished_at=Case(When(attempts__gte=F("max_attempts"), then=Value(now)), default=None)
            if retryable
            else Value(now),
            updated_at=now,
        )
        if changed != 1:
            return None
        task = AgentTask.objects.get(id=task_id)
        attempt_status = AttemptStatus.FAILED if task.status == TaskStatus.DEAD else AttemptStatus.RETRYING
        _finish_attempt(task_id, fence, attempt_status, error, now)
        if task.status == TaskStatus.DEAD:
            emit_dead_event(task)
        return task.status


def defer(task_id: int, fence: int, *, run_after: datetime, reason: str, now: datetime | None = None) -> bool:
    """Put the task off without spending its attempt (a guard said "not now")."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = _owned(task_id, fence).update(
            status=TaskStatus.PENDING,
            attempts=F("attempts") - 1,
            run_after=run_after,
            last_error=f"deferred: {reason}",
            lease_expires_at=None,
            updated_at=now,
        )
        if changed == 1:
            _finish_attempt(task_id, fence, AttemptStatus.DEFERRED, reason, now)
        return changed == 1


def record_fenced_out(task_id: int, fence: int, *, error: str = "", now: datetime | None = None) -> None:
    """Note on the span that this attempt's effects were rolled back after a reclaim, and the
    error it ended with, if any."""
    reason = "lease was reclaimed before completion; effects rolled back"
    TaskAttempt.objects.filter(task_id=task_id, fence=fence).update(
        status=AttemptStatus.FENCED_OUT,
        error=f"{reason}: {error}"[:10000] if error else reason,
        finished_at=now or timezone.now(),
    )


def cancel_claimed(task_id: int, fence: int, *, reason: str, now: datetime | None = None) -> bool:
    """Withdraw a claimed task without running it (its workflow was stopped)."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = _owned(task_id, fence).update(
            status=TaskStatus.CANCELLED, last_error=reason, lease_expires_at=None, finished_at=now, updated_at=now
        )
        if changed == 1:
            _finish_attempt(task_id, fence, AttemptStatus.FAILED, reason, now)
        return changed == 1


def cancel(task_id: int, *, reason: str = "cancelled", now: datetime | None = None) -> bool:
    """Withdraw a pending task. A claimed or finished one is not touched."""
    now = now or timezone.now()
    return (
        AgentTask.objects.filter(id=task_id, status=TaskStatus.PENDING).update(
            status=TaskStatus.CANCELLED, last_error=reason, finished_at=now, updated_at=now
        )
        == 1
    )


def replay(task_id: int, *, now: datetime | None = None) -> bool:
    """An operator's second chance for a dead task: fresh attempts, same idempotency key,
    so outside effects that did happen are not repeated."""
    now = now or timezone.now()
    with transaction.atomic():
        task = AgentTask.objects.filter(id=task_id, status=TaskStatus.DEAD).first()
        changed = AgentTask.objects.filter(id=task_id, status=TaskStatus.DEAD).update(
            status=TaskStatus.PENDING,
            attempts=0,
            run_after=now,
            expires_at=None,
            finished_at=None,
            dispatched_at=now,
            updated_at=now,
        )
        if changed == 1 and task is not None:
            publish_on_commit(task_id, task.agent, task.operation, task.correlation_id)
        return changed == 1
