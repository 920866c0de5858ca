"""Budgets: each workflow has a cap on steps and on cost units.

A budget belongs to a workflow id, which the system mints when a workflow starts (an
order's placement), never to the correlation id: that one a caller chooses, and callers
who send the same X-Request-ID with many orders must not share, or spend, one budget.

A step is counted when it is claimed, in the claim's own statement (orchestration.work.
lifecycle); a step run inline is counted with its emitter's completion, which also adds the
cost the steps reported. A step that finds the budget spent does not run and is not counted:
the workflow is marked exceeded once, the kernel emits `workflow.budget_exceeded` so the
owning agent stops and compensates, and the task is cancelled with the reason.
Compensating operations (Operation.compensation) always run and are never counted, so a
stopped workflow can still give back what it took.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.utils import timezone

from orchestration.models import WorkflowBudget

BUDGET_EVENT = "workflow.budget_exceeded"
TABLE = WorkflowBudget._meta.db_table


def default_caps() -> tuple[int, Decimal]:
    return (
        settings.WORKFLOW_MAX_STEPS,
        Decimal(str(settings.WORKFLOW_MAX_COST)),
    )


def default_spend_caps() -> tuple[int, Decimal]:
    """The caps on tokens and money of a workflow that has none of its own."""
    return settings.WORKFLOW_MAX_TOKENS, Decimal(str(settings.WORKFLOW_MAX_MONEY))


def set_caps(
    workflow_id: str,
    *,
    max_steps: int | None = None,
    max_cost: Decimal | float | None = None,
    max_tokens: int | None = None,
    max_money: Decimal | float | None = None,
) -> None:
    """Give one workflow its own caps (before or while it runs)."""
    steps, cost = default_caps()
    budget, _ = WorkflowBudget.objects.get_or_create(
        workflow_id=workflow_id, defaults={"max_steps": steps, "max_cost": cost}
    )
    if max_steps is not None:
        budget.max_steps = max_steps
    if max_cost is not None:
        budget.max_cost = Decimal(str(max_cost))
    if max_tokens is not None:
        budget.max_tokens = max_tokens
    if max_money is not None:
        budget.max_money = Decimal(str(max_money))
    budget.save(update_fields=["max_steps", "max_cost", "max_tokens", "max_money"])


def refuse_step(workflow_id: str, reason: str, now: datetime | None = None) -> bool:
    """A step found the budget spent at its claim and does not run: uncount it (the claim
    counted it) and mark the workflow stopped. True only for the first refusal: the workflow
    is told once. One statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH before AS (SELECT id, exceeded_at FROM {TABLE} WHERE workflow_id = %(workflow)s FOR UPDATE)
            UPDATE {TABLE} b SET steps = greatest(b.steps - 1, 0),
                exceeded_at = coalesce(b.exceeded_at, %(now)s),
                exceeded_reason = CASE WHEN b.exceeded_at IS NULL THEN %(reason)s ELSE b.exceeded_reason END
            FROM before WHERE b.id = before.id
            RETURNING before.exceeded_at IS NULL""",
            {"workflow": workflow_id, "now": now or timezone.now(), "reason": reason[:300]},
        )
        row = cursor.fetchone()
    return bool(row and row[0])
