"""What one happy-path order costs the database: the SQL statements of its placement and of
each operation, counted (deterministic, unlike a stopwatch) and held to a budget per step.

The tasks run in this process, one after the other, as a worker would run them. The simulated
outside world's statements (its ledgers, tables outside_*) stand for a remote service's work and
are not ours to count; the bench prints them apart.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.entrypoints import place_order
from orchestration.models import AgentTask, TaskStatus
from orchestration.work import runner
from orchestration.work.ids import event_ids, task_ids
from orders.models import Order, Product
from orders.states import OrderState

pytestmark = pytest.mark.django_db(transaction=True)

# The most statements (BEGIN and COMMIT included) each step may take. The coordinator's
# steps run inline, inside the step whose event they hear, and count there.
BUDGET = {
    "place_order": 6,
    "inventory.reserve_stock": 8,
    "payment.charge": 9,
    "inventory.commit_stock": 6,
    "notification.notify": 6,
    "fulfillment.ship": 8,
}
PER_ORDER = 60


def counted(step) -> tuple[object, int]:
    # Enough ids at hand first, so no step draws a block of them while it is counted.
    task_ids.ensure(16)
    event_ids.ensure(16)
    with CaptureQueriesContext(connection) as queries:
        result = step()
    return result, sum("outside_" not in query["sql"] for query in queries.captured_queries)


def run_to_the_end(order: Order) -> dict[str, list[int]]:
    """Run the order's ready tasks in order until none is left; statements per operation."""
    spent: dict[str, list[int]] = defaultdict(list)
    while True:
        task = AgentTask.objects.filter(workflow_id=order.workflow_id, status=TaskStatus.PENDING).order_by("id").first()
        if task is None:
            return spent
        outcome, statements = counted(lambda task=task: runner.run_task(task.pk))
        assert outcome == "succeeded", f"{task.agent}.{task.operation}: {outcome}"
        spent[f"{task.agent}.{task.operation}"].append(statements)


def test_a_happy_order_stays_within_its_statement_budget(redis_client):
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100)
    Product.objects.create(sku="INK", name="Ink", price=Decimal("7.00"), stocked=100)

    (order, _), placing = counted(
        lambda: place_order("ann@example.com", [("PEN", 2), ("INK", 1)], idempotency_key="counted")
    )
    spent = run_to_the_end(order)

    order.refresh_from_db()
    assert order.state == OrderState.COMPLETED
    assert placing <= BUDGET["place_order"], placing
    assert sorted(spent) == sorted(name for name in BUDGET if name != "place_order")
    over = {name: counts for name, counts in spent.items() if max(counts) > BUDGET[name]}
    assert not over, f"over budget: {over} (budget {BUDGET})"
    assert len(spent["notification.notify"]) == 2  # confirmed, shipped
    total = placing + sum(sum(counts) for counts in spent.values())
    assert total <= PER_ORDER, f"{total} statements for one order: {dict(spent)}, placing {placing}"
    # No hop of its own for the coordinator: its steps ran inline and were recorded as done.
    advances = AgentTask.objects.filter(workflow_id=order.workflow_id, agent="order")
    assert advances.count() == 3 and set(advances.values_list("status", flat=True)) == {TaskStatus.SUCCEEDED}
