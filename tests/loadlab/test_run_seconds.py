"""A load run's length: from the first placement to the last task of the last order, read from
the task rows, so neither the loop's half-second look nor an order's trailing notifications
change the orders/s it reports (the bench compares it with the naive chain's, measured alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agents.entrypoints import place_order
from loadlab.loadtest import run_seconds
from orchestration.models import AgentTask
from orders.models import Product

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_run_ends_when_the_last_task_of_its_orders_finished_not_when_it_was_seen(redis_client):
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100)
    first, _ = place_order("ann@example.com", [("PEN", 1)], idempotency_key="first")
    second, _ = place_order("bob@example.com", [("PEN", 1)], idempotency_key="second")
    other, _ = place_order("cy@example.com", [("PEN", 1)], idempotency_key="not-this-run")
    started = datetime(2026, 1, 1, tzinfo=UTC)
    AgentTask.objects.filter(workflow_id=first.workflow_id).update(finished_at=started + timedelta(seconds=3))
    AgentTask.objects.filter(workflow_id=second.workflow_id).update(finished_at=started + timedelta(seconds=7.5))
    AgentTask.objects.filter(workflow_id=other.workflow_id).update(finished_at=started + timedelta(seconds=60))

    seconds = run_seconds([first.pk, second.pk], started.timestamp(), polled=9.0)

    assert seconds == pytest.approx(7.5)


def test_a_run_whose_tasks_never_finished_keeps_the_time_it_was_watched(redis_client):
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100)
    order, _ = place_order("ann@example.com", [("PEN", 1)], idempotency_key="unfinished")

    assert run_seconds([order.pk], datetime(2026, 1, 1, tzinfo=UTC).timestamp(), polled=9.0) == 9.0
