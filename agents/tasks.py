"""The agents' periodic job: hand expired stock reservations to the InventoryAgent."""

from __future__ import annotations

from celery import shared_task

from orchestration.work.enqueue import enqueue
from orders.actions import orders_with_expired_reservations
from orders.models import Order


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
