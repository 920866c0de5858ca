"""`manage.py trace <order id | workflow id | correlation id>`: an order's timeline, for
whoever is paged. An order id or a workflow id names one workflow exactly; a correlation
id is the caller's and may name several (one per order placed under it), each shown."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.models import AgentTask
from orchestration.tracing import Mark, Trace, build_trace, render_trace, summarize, workflows_of
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


class Command(BaseCommand):
    help = "Print an order's timeline: its agent tasks, each attempt, and its state changes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference", help="an order id, a workflow id, or a correlation id")
        parser.add_argument(
            "--correlation",
            action="store_true",
            help="read the reference as a correlation id even if it is a number or a workflow id",
        )

    def handle(self, *args, reference: str, correlation: bool, **options) -> None:
        reference = reference.strip()
        traces = []
        for workflow in find_workflows(reference, by_correlation=correlation):
            trace = build_trace(workflow.workflow_id, state_changes(workflow.orders))
            if not trace.is_empty:
                traces.append((workflow, trace))
        if not traces:
            raise CommandError(
                f"nothing matches {reference!r}: no order has that id, workflow id or correlation id, "
                "and no task carries it"
            )
        if len(traces) > 1:
            shown = f" (the first {MAX_WORKFLOWS})" if len(traces) == MAX_WORKFLOWS else ""
            self.stdout.write(f"Correlation {reference}: {len(traces)} workflows{shown}, one after the other")
        for index, (workflow, trace) in enumerate(traces):
            if index or len(traces) > 1:
                self.stdout.write("")
            self.write_trace(workflow, trace)

    def write_trace(self, workflow: Workflow, trace: Trace) -> None:
        for order in workflow.orders:
            reason = f": {order.reason}" if order.reason else ""
            self.stdout.write(f"Order {order.pk} for {order.customer}, now {order.state}{reason}")
        correlations = sorted({task.correlation_id for task in trace.tasks})
        self.stdout.write(
            f"Workflow {workflow.workflow_id}, correlation {', '.join(correlations) or '-'}, "
            f"started {trace.start:%Y-%m-%d %H:%M:%S.%f %Z}"
        )
        self.stdout.write(f"{summarize(trace)}; times are seconds from the start")
        self.stdout.write("")
        for line in render_trace(trace):
            self.stdout.write(line)
