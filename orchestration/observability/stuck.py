"""Stuck tasks: live work that is not getting anywhere, for operators and alerts.

A task is stuck when it is still live after STUCK_TASK_ATTEMPTS attempts (it keeps
failing and coming back), or when it is claimed past its lease (its worker is gone
and no sweep has taken it back: is beat running?).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from orchestration.models import LIVE_STATUSES, AgentTask, TaskStatus

RETRIED = "retried"  # still live after the threshold of attempts
LEASE_OVERDUE = "lease_overdue"  # claimed, and the lease ran out


def stuck_task_attempts() -> int:
    return settings.STUCK_TASK_ATTEMPTS


def stuck_conditions(now: datetime | None = None, attempts: int | None = None) -> dict[str, Q]:
    """The conditions by reason, to filter or to count with."""
    now = now or timezone.now()
    return {
        RETRIED: Q(status__in=LIVE_STATUSES, attempts__gte=attempts or stuck_task_attempts()),
        LEASE_OVERDUE: Q(status=TaskStatus.CLAIMED, lease_expires_at__lt=now),
    }


@dataclass(frozen=True)
class StuckTask:
    task: AgentTask
    reasons: tuple[str, ...]

    def describe(self, now: datetime) -> str:
        task = self.task
        why = []
        if RETRIED in self.reasons:
            why.append(f"{task.attempts} attempts of {task.max_attempts}")
        if LEASE_OVERDUE in self.reasons and task.lease_expires_at:
            overdue = (now - task.lease_expires_at).total_seconds()
            why.append(f"lease ran out {overdue:.0f}s ago, held by {task.claimed_by}")
        error = (task.last_error.strip().splitlines() or [""])[0][:120]
        return (
            f"task {task.pk} {task.agent}.{task.operation} [{task.status}] workflow {task.workflow_id}: "
            f"{'; '.join(why)}" + (f"; last error: {error}" if error else "")
        )


def stuck_tasks(now: datetime | None = None, attempts: int | None = None, limit: int = 500) -> list[StuckTask]:
    """Stuck tasks, oldest change first, each with the reasons it is stuck."""
    now = now or timezone.now()
    conditions = stuck_conditions(now, attempts)
    flags = {
        reason: ExpressionWrapper(condition, output_field=BooleanField()) for reason, condition in conditions.items()
    }
    matching = AgentTask.objects.filter(conditions[RETRIED] | conditions[LEASE_OVERDUE]).annotate(**flags)
    return [
        StuckTask(task, tuple(reason for reason in conditions if getattr(task, reason)))
        for task in matching.order_by("updated_at", "id")[:limit]
    ]
