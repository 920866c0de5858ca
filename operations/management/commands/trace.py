"""`manage.py trace <order id | workflow id | correlation id>`: an order's timeline, for
whoever is paged. An order id or a workflow id names one workflow exactly; a correlation
id is the caller's and may name several (one per order placed under it), each shown."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from operations.trace import MAX_WORKFLOWS, Workflow, find_workflows, state_changes
from orchestration.observability.tracing import Trace, build_trace, render_trace, summarize


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
