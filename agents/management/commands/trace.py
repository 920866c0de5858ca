"""`manage.py trace <order id | correlation id>`: one order's timeline, for whoever is paged."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.tracing import Mark, build_trace, render_trace, summarize
from orders.models import Order, OrderTransition


def find_orders(reference: str, by_correlation: bool = False) -> list[Order]:
    """The order with this id, else the orders placed under this correlation id."""
    if reference.isdigit() and not by_correlation:
        order = Order.objects.filter(pk=int(reference)).first()
        if order is not None:
            return [order]
    return list(Order.objects.filter(correlation_id=reference).order_by("pk"))


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
        parser.add_argument("reference", help="an order id, or a correlation id")
        parser.add_argument(
            "--correlation", action="store_true", help="read the reference as a correlation id even if it is a number"
        )

    def handle(self, *args, reference: str, correlation: bool, **options) -> None:
        reference = reference.strip()
        orders = find_orders(reference, by_correlation=correlation)
        correlation_id = orders[0].correlation_id if orders else reference
        trace = build_trace(correlation_id, state_changes(orders))
        if trace.is_empty:
            raise CommandError(
                f"nothing matches {reference!r}: no order has that id or correlation id, and no task carries it"
            )

        for order in orders:
            reason = f": {order.reason}" if order.reason else ""
            self.stdout.write(f"Order {order.pk} for {order.customer}, now {order.state}{reason}")
        self.stdout.write(f"Correlation {correlation_id}, started {trace.start:%Y-%m-%d %H:%M:%S.%f %Z}")
        self.stdout.write(f"{summarize(trace)}; times are seconds from the start")
        self.stdout.write("")
        for line in render_trace(trace):
            self.stdout.write(line)
