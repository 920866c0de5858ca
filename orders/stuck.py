"""Stuck orders: not finished, and nothing has happened to them for too long.

"Too long" is STUCK_ORDER_AFTER_SECONDS since the order's last change of state (its
updated_at moves with every audit row), and RISK_REVIEW_SECONDS more for an order waiting for
an operator's review. A stuck order is one nobody is working on:
a queue without workers, a dead task nobody compensated, a lost wake-up.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from orders.models import Order
from orders.screening import review_seconds, waiting_for_review
from orders.states import TERMINAL_STATES, OrderState


def stuck_order_after_seconds() -> int:
    return settings.STUCK_ORDER_AFTER_SECONDS


def stuck_condition(now: datetime | None = None, after_seconds: int | None = None) -> Q:
    """Quiet for too long and not finished; an order waiting for an operator is stuck only once
    its review deadline is that long past (the deadline job should have ended it)."""
    now = now or timezone.now()
    after = stuck_order_after_seconds() if after_seconds is None else after_seconds
    quiet_since = now - timedelta(seconds=after)
    return Q(updated_at__lt=quiet_since) & ~Q(state__in=TERMINAL_STATES) & ~waiting_for_review(now, after)


def stuck_orders(now: datetime | None = None, after_seconds: int | None = None) -> QuerySet[Order]:
    """Unfinished orders with no progress for longer than expected, the longest stuck first."""
    return Order.objects.filter(stuck_condition(now, after_seconds)).order_by("updated_at", "id")


def is_stuck(order: Order, now: datetime | None = None) -> bool:
    """For one order already loaded (the admin's flag)."""
    quiet_for = ((now or timezone.now()) - order.updated_at).total_seconds()
    allowed = stuck_order_after_seconds() + (review_seconds() if order.state == OrderState.AWAITING_REVIEW else 0)
    return order.state not in TERMINAL_STATES and quiet_for > allowed
