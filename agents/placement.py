"""Placing an order from Python: one call, idempotent on the order's key.

Used by the HTTP API, the demo and the load test.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from orchestration.backpressure import refuse_when_backlogged
from orchestration.events import emit
from orchestration.models import new_workflow_id
from orders.actions import Line, create_order
from orders.models import Order


def place_order(
    customer: str,
    items: list[tuple[str, int]] | list[Line],
    *,
    idempotency_key: str,
    correlation_id: str = "",
) -> tuple[Order, bool]:
    """Accept the order and start its workflow; (order, created). The same key returns
    the same order; the same key with a different body raises IdempotencyKeyReused;
    BACKPRESSURE_MAX_PENDING or more ready tasks (all agents) raise orchestration.backpressure.Overloaded.

    Every order gets a workflow id of its own (its budget, its stop, its trace); the
    caller's correlation id, when given, is kept beside it, so orders placed under one
    X-Request-ID share their logs' id and nothing else."""
    lines = [item if isinstance(item, Line) else Line(sku=item[0], quantity=item[1]) for item in items]
    if not Order.objects.filter(idempotency_key=idempotency_key).exists():
        # A repeat of an accepted order is always answered; new work waits for the backlog.
        refuse_when_backlogged(settings.BACKPRESSURE_MAX_PENDING)
    workflow_id = new_workflow_id()
    with transaction.atomic():
        order, created = create_order(
            customer,
            lines,
            idempotency_key=idempotency_key,
            workflow_id=workflow_id,
            correlation_id=correlation_id or workflow_id,
        )
        if created:
            emit(
                "order.placed",
                {"order_id": order.pk},
                workflow_id=order.workflow_id,
                correlation_id=order.correlation_id,
            )
    return order, created
