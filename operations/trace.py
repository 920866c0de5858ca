"""An order's trace: which workflows a reference names, and the order's state changes as
marks on the kernel's timeline. Used by `manage.py trace` and the order page."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestration.models import AgentTask
from orchestration.observability.tracing import Mark, workflows_of
from orders.models import Order, OrderTransition

MAX_WORKFLOWS = 100  # shown for one correlation id


@dataclass
class Workflow:
    workflow_id: str
    orders: list[Order] = field(default_factory=list)


def find_workflows(reference: str, by_correlation: bool = False) -> list[Workflow]:
    """The workflow of the order with this id, else the workflow with this id, else every
    workflow under this correlation id (its orders' and any other task's)."""
    if not by_correlation:
        if reference.isdigit():
            order = Order.objects.filter(pk=int(reference)).first()
            if order is not None:
                return [Workflow(order.workflow_id, [order])]
        orders = list(Order.objects.filter(workflow_id=reference).order_by("pk"))
        if orders or AgentTask.objects.filter(workflow_id=reference).exists():
            return [Workflow(reference, orders)]
    found: dict[str, Workflow] = {}
    for order in Order.objects.filter(correlation_id=reference).order_by("pk")[:MAX_WORKFLOWS]:
        found.setdefault(order.workflow_id, Workflow(order.workflow_id)).orders.append(order)
    for workflow_id in workflows_of(reference, limit=MAX_WORKFLOWS):
        found.setdefault(workflow_id, Workflow(workflow_id))
    return list(found.values())[:MAX_WORKFLOWS]


def state_changes(orders: list[Order]) -> list[Mark]:
    """The orders' audit rows, each under the task that wrote it."""
    marks = []
    for change in OrderTransition.objects.filter(order__in=orders).order_by("created_at", "pk"):
        text = f"order {change.order_id}: {change.from_state or '(new)'} -> {change.to_state} on {change.event}"
        if change.actor:
            text += f" by {change.actor}"
        if change.detail:
            text += f" ({change.detail})"
        marks.append(Mark(change.created_at, text, change.task_id))
    return marks
