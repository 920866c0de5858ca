"""Which orders are screened for risk before payment, and how long an operator has for a review.

The screening rule is settings (RISK_SCREEN_ABOVE, RISK_SCREEN_NEW_CUSTOMERS): the common path
pays for it with nothing but a comparison, unless new customers are screened too (one indexed
query per order). A review's deadline is RISK_REVIEW_SECONDS after the order entered
AWAITING_REVIEW (its ``updated_at``: nothing else changes the order while it waits); past it,
the order is cancelled (agents.tasks.expire_reviews). While it waits, its stock is held until
the deadline plus RESERVATION_TTL_SECONDS (actions.hold_for_review), so the hold never runs
out first, and an approval at the last minute still leaves the payment a whole hold.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from orders.models import Order
from orders.states import OrderState


def needs_screening(order: Order) -> str:
    """Why the rule wants this order screened before payment, or "" when it does not."""
    if not settings.RISK_SCREENING:
        return ""
    above = Decimal(str(settings.RISK_SCREEN_ABOVE))
    if order.total > above:
        return f"total {order.total} is above {above}"
    if settings.RISK_SCREEN_NEW_CUSTOMERS and not (
        Order.objects.filter(customer=order.customer, state=OrderState.COMPLETED).exists()
    ):
        return "the customer has no completed order yet"
    return ""


def review_seconds() -> int:
    return settings.RISK_REVIEW_SECONDS


def review_deadline(order: Order) -> datetime:
    """When an order waiting for review is cancelled if nobody decided."""
    return order.updated_at + timedelta(seconds=review_seconds())


def waiting_for_review(now: datetime | None = None, grace_seconds: float = 0) -> Q:
    """Orders waiting for an operator whose review deadline (plus a grace) has not passed yet."""
    since = (now or timezone.now()) - timedelta(seconds=review_seconds() + grace_seconds)
    return Q(state=OrderState.AWAITING_REVIEW, updated_at__gt=since)


def reviews_past_deadline(now: datetime | None = None, limit: int = 500) -> list[tuple[int, str, str]]:
    """(order id, workflow id, correlation id) of the orders whose review ran out, oldest first
    (one range scan of the state-and-time index)."""
    waited_since = (now or timezone.now()) - timedelta(seconds=review_seconds())
    return list(
        Order.objects.filter(state=OrderState.AWAITING_REVIEW, updated_at__lte=waited_since)
        .order_by("updated_at")
        .values_list("pk", "workflow_id", "correlation_id")[:limit]
    )
