"""The order workflow's metrics, read from the database at each scrape.

Registered with the kernel's /metrics by METRICS_COLLECTORS. Orders and reservations are
never pruned, so the end-to-end histogram and the expiry counter only ever grow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count, F, Q, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from orders.models import Order, Reservation
from orders.states import TERMINAL_STATES, OrderState, ReservationStatus
from orders.stuck import stuck_condition

logger = logging.getLogger(__name__)

END_TO_END_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LIVE_STATES = [state.value for state in OrderState if state not in TERMINAL_STATES]


class OrderCollector:
    def collect(self) -> Iterable[Metric]:
        try:
            finished = self._finished_orders()
            live = self._live_orders()
            expiries = Reservation.objects.filter(status=ReservationStatus.EXPIRED).count()
        except DatabaseError:
            logger.warning("metrics: could not read order numbers", exc_info=True)
            return
        yield finished
        yield from live
        yield CounterMetricFamily(
            "order_reservation_expiries", "Stock reservations that expired before payment.", value=expiries
        )

    def _finished_orders(self) -> Metric:
        """Placement to terminal state, by the state it ended in: one aggregate query."""
        buckets = {f"le_{index}": bound for index, bound in enumerate(END_TO_END_BUCKETS)}
        rows = (
            Order.objects.filter(finished_at__isnull=False)
            .alias(took=F("finished_at") - F("created_at"))
            .values("state")
            .annotate(
                count=Count("id"),
                total=Sum("took"),
                **{name: Count("id", filter=Q(took__lte=timedelta(seconds=bound))) for name, bound in buckets.items()},
            )
        )
        family = HistogramMetricFamily(
            "order_end_to_end_seconds",
            "Time from placing an order to its terminal state, by that state.",
            labels=["state"],
        )
        for row in rows:
            cumulative = [(str(float(bound)), row[name]) for name, bound in buckets.items()]
            total = row["total"].total_seconds() if row["total"] else 0.0
            family.add_metric([row["state"]], [*cumulative, ("+Inf", row["count"])], sum_value=total)
        return family

    def _live_orders(self) -> Iterable[Metric]:
        """Unfinished orders by state, and how many of them are stuck: one GROUP BY."""
        rows = (
            Order.objects.filter(state__in=LIVE_STATES)
            .values("state")
            .annotate(count=Count("id"), stuck=Count("id", filter=stuck_condition(timezone.now())))
        )
        counts = {state: (0, 0) for state in LIVE_STATES}
        for row in rows:
            counts[row["state"]] = (row["count"], row["stuck"])
        live = GaugeMetricFamily("orders_in_progress", "Unfinished orders by state.", labels=["state"])
        stuck = GaugeMetricFamily(
            "orders_stuck", "Unfinished orders with no progress for STUCK_ORDER_AFTER_SECONDS.", labels=["state"]
        )
        for state, (count, stuck_count) in counts.items():
            live.add_metric([state], count)
            stuck.add_metric([state], stuck_count)
        return [live, stuck]
