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
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from agents.entrypoints import place_order
from orchestration.models import AgentTask, TaskStatus
from orchestration.work import runner
from orchestration.work.ids import event_ids, task_ids
from orders.models import Order, Product, Reservation
from orders.states import OrderState

pytestmark = pytest.mark.django_db(transaction=True)

# The most statements (BEGIN and COMMIT included) each step may take. The coordinator's
# steps run inline, inside the step whose event they hear, and count there.
BUDGET = {
    "place_order": 6,
    "inventory.reserve_stock": 8,
    "payment.charge": 10,
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
    # Nor for booking the sale: it ran inline with the payment's confirmation.
    sale = AgentTask.objects.get(workflow_id=order.workflow_id, operation="commit_stock")
    confirmed_by = AgentTask.objects.get(pk=sale.parent_id)  # the advance that heard payment.charged
    charge = AgentTask.objects.get(pk=confirmed_by.parent_id)
    assert (sale.status, confirmed_by.operation, charge.operation) == (TaskStatus.SUCCEEDED, "advance", "charge")
    assert sorted(Product.objects.values_list("sku", "sold", "reserved")) == [("INK", 1, 0), ("PEN", 2, 0)]


def test_the_statements_an_order_repeats_are_planned_once_per_connection(redis_client):
    """PostgreSQL plans a prepared statement afresh on every run when a parameter decides its
    plan (a status that picks a partial index, an array of ids): planning the stock settlement's
    statement was more of the database's time than running it. Orders run on one connection
    here, so each statement they repeat must be planned a few times, not once a run."""
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=1000)
    first = run_an_order("planned-0")
    rows_of_a_busy_system(first)  # its ANALYZE makes every cached plan go: before counting
    with connection.cursor() as cursor:
        try:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            cursor.execute("SET pg_stat_statements.track_planning = on")
            cursor.execute("SELECT pg_stat_statements_reset()")
        except DatabaseError:
            pytest.skip("pg_stat_statements is not loaded on this server")
    orders = 60
    for n in range(1, orders + 1):
        run_an_order(f"planned-{n}")
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT calls, plans, query FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND calls >= %s AND query NOT LIKE 'SELECT%%pg_stat_statements%%'
            AND query NOT LIKE '%%FOR KEY SHARE OF x'""",  # foreign-key checks: PostgreSQL's own
            [orders],
        )
        repeated = cursor.fetchall()
    assert len(repeated) >= 10, repeated  # the hot path's statements were seen
    # A statement is planned up to 11 times on a connection (5 runs before psycopg prepares it,
    # PostgreSQL's 5 trial plans, its generic plan), and 6 more each time something invalidates
    # its plan (an ANALYZE of one of its tables by autovacuum, say); one planned on every run
    # has as many plans as runs.
    replanned = [(calls, plans, query[:120]) for calls, plans, query in repeated if plans > calls // 2]
    assert not replanned, replanned


def test_an_order_hands_psycopg_no_python_list(redis_client):
    """psycopg adapts a Python list in pure Python, element by element: a dozen lists in the
    completion's statement cost the worker more than the statement cost the database. Rows go
    as one JSON document and lists as array literals (orchestration/work/arrays.py)."""
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100)
    lists: list[str] = []

    def watch(execute, sql, params, many, context):
        values = params.values() if isinstance(params, dict) else params or ()
        if "outside_" not in sql and any(isinstance(value, list | tuple) for value in values):
            lists.append(sql[:160])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        order = run_an_order("no-lists")
    assert order.state == OrderState.COMPLETED
    assert not lists, lists


def run_an_order(key: str) -> Order:
    order, _ = place_order(f"{key}@example.com", [("PEN", 1)], idempotency_key=key)
    run_to_the_end(order)
    order.refresh_from_db()
    assert order.state == OrderState.COMPLETED
    return order


def rows_of_a_busy_system(order: Order) -> None:
    """Finished tasks and settled reservations by the thousand, and fresh statistics: on a handful
    of rows every plan is a sequential scan, whatever the parameters, and the planner has no
    reason to plan again."""
    tasks, reservations, products = AgentTask._meta.db_table, Reservation._meta.db_table, Product._meta.db_table
    copied = [
        field.column for field in AgentTask._meta.concrete_fields if field.column not in ("id", "idempotency_key")
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {tasks} (id, idempotency_key, {", ".join(copied)})
            SELECT %s + g, 'filler-' || g, {", ".join(f"t.{column}" for column in copied)}
            FROM {tasks} t, generate_series(1, 20000) g WHERE t.id = (SELECT min(id) FROM {tasks})""",
            [10**12],
        )
        cursor.execute(
            f"""INSERT INTO {products} (sku, name, price, stocked, reserved, sold)
            SELECT 'filler-' || g, 'filler', 1, 1, 0, 1 FROM generate_series(1, 20000) g"""
        )
        cursor.execute(
            f"""INSERT INTO {reservations} (order_id, product_id, quantity, status, expires_at, created_at, updated_at)
            SELECT %s, id, 1, 'committed', now(), now(), now() FROM {products} WHERE sku LIKE 'filler-%%'""",
            [order.pk],
        )
        cursor.execute(f"ANALYZE {tasks}, {products}, {reservations}")
