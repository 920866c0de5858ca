"""No index that every write keeps up and no query needs, on the tables the workflow writes for
every order: each index is one more write per row version (a task row has three), and the
database's share of an order's cost is mostly such writes (BENCHMARKS.md, lever 17)."""

from __future__ import annotations

import pytest
from django.db import connection

from orchestration.models import AgentTask, Event, TaskAttempt, WorkflowBudget
from orders.models import CustomerNotification, Order, OrderTransition, Reservation

pytestmark = pytest.mark.django_db

WRITTEN_FOR_EVERY_ORDER = [
    AgentTask,
    TaskAttempt,
    Event,
    WorkflowBudget,
    Order,
    OrderTransition,
    Reservation,
    CustomerNotification,
]


def indexes_of(table: str) -> list[tuple[str, list[str], bool, bool, str]]:
    """(name, columns, unique, partial, definition) of each index of a table."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT c.relname, array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n),
                i.indisunique, i.indpred IS NOT NULL, pg_get_indexdef(i.indexrelid)
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass""",
            [table],
        )
        return [
            (name, list(columns), unique, partial, definition) for name, columns, unique, partial, definition in cursor
        ]


@pytest.mark.parametrize("model", WRITTEN_FOR_EVERY_ORDER, ids=lambda model: model.__name__)
def test_no_index_on_a_hot_table_is_for_prefix_searches(model):
    # Django adds a varchar_pattern_ops twin to every indexed text column; every lookup here is
    # by equality, which the plain index serves. A migration that changes such a column's type
    # makes the twin again: drop it in the same migration (orchestration/migrations/0011).
    pattern_ops = [
        name for name, _, _, _, definition in indexes_of(model._meta.db_table) if "pattern_ops" in definition
    ]
    assert not pattern_ops, f"{model._meta.db_table}: {pattern_ops}"


@pytest.mark.parametrize("model", WRITTEN_FOR_EVERY_ORDER, ids=lambda model: model.__name__)
def test_no_index_on_a_hot_table_is_the_start_of_another(model):
    # A lookup by the shorter index's columns can use the longer one; a unique or partial
    # index says something the longer one does not, and stays.
    indexes = indexes_of(model._meta.db_table)
    redundant = [
        (name, other)
        for name, columns, unique, partial, _ in indexes
        if not unique and not partial
        for other, longer, _, other_partial, _ in indexes
        if other != name and not other_partial and len(longer) > len(columns) and longer[: len(columns)] == columns
    ]
    assert not redundant, f"{model._meta.db_table}: each first index is the start of the second: {redundant}"
