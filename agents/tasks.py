"""The agents' periodic jobs: hand expired stock reservations to the InventoryAgent, and reviews
nobody decided in time to the coordinator."""

from __future__ import annotations

from celery import shared_task

from orchestration.work.enqueue import enqueue
from orders.actions import orders_with_expired_reservations
from orders.models import Order
from orders.screening import review_seconds, reviews_past_deadline
from orders.transitions import REVIEW_EXPIRED


@shared_task(name="agents.expire_reservations", ignore_result=True)
def expire_reservations() -> int:
    """One task per order with an expired hold, in the order's own workflow (its budget,
    its trace); the key makes overlapping runs harmless."""
    order_ids = orders_with_expired_reservations()
    rows = Order.objects.filter(pk__in=order_ids).values_list("pk", "workflow_id", "correlation_id")
    ids = {pk: (workflow_id, correlation_id) for pk, workflow_id, correlation_id in rows}
    for order_id in order_ids:
        workflow_id, correlation_id = ids.get(order_id, ("", ""))
        enqueue(
            "inventory",
            "expire_reservation",
            {"order_id": order_id},
            idempotency_key=f"expire-reservation:{order_id}",
            workflow_id=workflow_id,
            correlation_id=correlation_id,
            event_type="reservation.due",
        )
    return len(order_ids)


@shared_task(name="agents.expire_reviews", ignore_result=True)
def expire_reviews() -> int:
    """One coordinator step per order whose review ran past RISK_REVIEW_SECONDS: it cancels the
    order (orders.transitions). The key makes overlapping runs harmless."""
    due = reviews_past_deadline()
    for order_id, workflow_id, correlation_id in due:
        enqueue(
            "order",
            "advance",
            {"order_id": order_id, "reason": f"nobody decided within {review_seconds()} s"},
            idempotency_key=f"review-expired:{order_id}",
            workflow_id=workflow_id,
            correlation_id=correlation_id,
            event_type=REVIEW_EXPIRED,
        )
    return len(due)
