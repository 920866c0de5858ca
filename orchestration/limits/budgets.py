"""Budgets: each workflow has a cap on steps and on cost units.

A budget belongs to a workflow id, which the system mints when a workflow starts (an
order's placement), never to the correlation id: that one a caller chooses, and callers
who send the same X-Request-ID with many orders must not share, or spend, one budget.

A step is counted before its handler runs, in the handler's transaction; cost is
added when the step completes. A step that finds the budget spent does not run: the
workflow is marked exceeded once, the kernel emits `workflow.budget_exceeded` so the
owning agent stops and compensates, and the task goes dead with the reason.
Compensating operations (Operation.compensation) always run, so a stopped workflow
can still give back what it took.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from orchestration.errors import PermanentError
from orchestration.models import WorkflowBudget

BUDGET_EVENT = "workflow.budget_exceeded"
TABLE = WorkflowBudget._meta.db_table


class BudgetExceeded(PermanentError):
    """The workflow spent its steps or cost; this step does not run."""


def default_caps() -> tuple[int, Decimal]:
    return (
        settings.WORKFLOW_MAX_STEPS,
        Decimal(str(settings.WORKFLOW_MAX_COST)),
    )


def set_caps(workflow_id: str, *, max_steps: int | None = None, max_cost: Decimal | float | None = None) -> None:
    """Give one workflow its own caps (before or while it runs)."""
    steps, cost = default_caps()
    budget, _ = WorkflowBudget.objects.get_or_create(
        workflow_id=workflow_id, defaults={"max_steps": steps, "max_cost": cost}
    )
    if max_steps is not None:
        budget.max_steps = max_steps
    if max_cost is not None:
        budget.max_cost = Decimal(str(max_cost))
    budget.save(update_fields=["max_steps", "max_cost"])


def spend_step(workflow_id: str, correlation_id: str = "") -> None:
    """Count one step; raise BudgetExceeded when the workflow has no budget left for it."""
    max_steps, max_cost = default_caps()
    with connection.cursor() as cursor:
        # One statement: create the budget row on first use, or count the step.
        cursor.execute(
            f"""
            INSERT INTO {TABLE} (workflow_id, correlation_id, steps, cost, max_steps, max_cost,
                exceeded_reason, created_at)
            VALUES (%s, %s, 1, 0, %s, %s, '', %s)
            ON CONFLICT (workflow_id) DO UPDATE SET steps = {TABLE}.steps + 1
            RETURNING steps, cost, max_steps, max_cost
            """,
            [workflow_id, correlation_id, max_steps, max_cost, timezone.now()],
        )
        steps, cost, cap_steps, cap_cost = cursor.fetchone()
    if steps > cap_steps:
        raise BudgetExceeded(f"step budget spent: step {steps} of at most {cap_steps}")
    if cost > cap_cost:
        raise BudgetExceeded(f"cost budget spent: {cost} of at most {cap_cost} units")


def add_cost(workflow_id: str, units: Decimal) -> None:
    if units:
        WorkflowBudget.objects.filter(workflow_id=workflow_id).update(cost=F("cost") + units)


def mark_exceeded(workflow_id: str, reason: str) -> bool:
    """True only for the first caller: the workflow is told once (its stop covers every
    step of it that finds the budget spent)."""
    with transaction.atomic():
        return (
            WorkflowBudget.objects.filter(workflow_id=workflow_id, exceeded_at__isnull=True).update(
                exceeded_at=timezone.now(), exceeded_reason=reason[:300]
            )
            == 1
        )
