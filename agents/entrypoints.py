"""How the outside starts, resumes and stops an order's workflow: placing one (idempotent on
the order's key), an operator's decision on one waiting for review, and cancelling one (with
compensation).

Used by the HTTP API, the operators' admin, the demo and the load tools.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from agents.order import announcement
from orchestration.limits.backpressure import Overloaded, refuse_when_backlogged
from orchestration.models import new_workflow_id
from orchestration.work.events import emit
from orders.actions import Line, apply_transition, create_order
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
    BACKPRESSURE_MAX_PENDING or more ready tasks (all agents) raise orchestration.limits.backpressure.Overloaded.

    Every order gets a workflow id of its own (its budget, its stop, its trace); the
    caller's correlation id, when given, is kept beside it, so orders placed under one
    X-Request-ID share their logs' id and nothing else."""
    lines = [item if isinstance(item, Line) else Line(sku=item[0], quantity=item[1]) for item in items]
    try:
        refuse_when_backlogged(settings.BACKPRESSURE_MAX_PENDING)
    except Overloaded:
        # A repeat of an accepted order is always answered; only new work waits.
        if not Order.objects.filter(idempotency_key=idempotency_key).exists():
            raise
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


def cancel_order(order_id: int, *, actor: str, reason: str = "") -> Order:
    """An operator's or a client's cancel: the order becomes CANCELLED and the usual
    compensation (release the stock, refund a charge, tell the customer) follows.

    Raises orders.errors.IllegalTransition, naming the order and its state, when the order
    has shipped or already ended; Order.DoesNotExist when there is no such order."""
    with transaction.atomic():
        order = apply_transition(order_id, "operator.cancel", actor=actor, detail=reason or f"cancelled by {actor}")
        event, payload = announcement(order) or ("order.cancelled", {"order_id": order.pk})
        emit(event, payload, workflow_id=order.workflow_id, correlation_id=order.correlation_id)
    return order


def decide_review(order_id: int, *, approve: bool, actor: str, note: str = "") -> Order:
    """An operator's decision on an order waiting for review: approved, it goes on to payment;
    rejected, it is cancelled with the usual compensation. The audit row names the operator.

    Raises orders.errors.IllegalTransition, naming the order and its state, when the order is
    not waiting for review (decided already, cancelled, or past its deadline)."""
    event = "operator.approve" if approve else "operator.reject"
    detail = note or f"{'approved' if approve else 'rejected'} by {actor}"
    with transaction.atomic():
        order = apply_transition(order_id, event, actor=actor, detail=detail)
        announced = announcement(order)
        if announced:
            emit(*announced, workflow_id=order.workflow_id, correlation_id=order.correlation_id)
    return order
