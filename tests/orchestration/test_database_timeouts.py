"""A paused or cut-off worker cannot hold locks for long: every connection carries
lock_timeout, statement_timeout and idle_in_transaction_session_timeout, so a frozen
worker's session ends, its row locks come back, and its late completion is fenced out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from agents.entrypoints import place_order
from agents.invariants import check_all
from agents.outside import world
from agents.routes import AGENTS
from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus
from orchestration.redis_client import redis_client
from orchestration.testing.fleet import database_url
from orchestration.work.enqueue import enqueue
from orders.models import Order, Product
from orders.states import OrderState
from tests import support
from tests.kernelapp.models import Effect
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PROJECT = Path(__file__).resolve().parents[2]
SHOW_TIMEOUTS = """
import django
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"):
        cursor.execute("SHOW " + name)
        print(name, cursor.fetchone()[0])
"""
TIMEOUT_VARIABLES = (
    "DATABASE_LOCK_TIMEOUT_SECONDS",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS",
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
)
# As in production, below the lease of the test kit's "work" (3 s), here small enough to wait on.
TIGHT_DATABASE = {
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "2",
    "DATABASE_LOCK_TIMEOUT_SECONDS": "1",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "5",
}


def session_timeouts(**env: str) -> dict[str, str]:
    """What a fresh process's connection to the given DATABASE_URL says its timeouts are."""
    inherited = {name: value for name, value in os.environ.items() if name not in TIMEOUT_VARIABLES}
    shown = subprocess.run(
        [sys.executable, "-c", SHOW_TIMEOUTS],
        env={**inherited, **support.child_environment(), **env},
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in shown.splitlines())


def test_a_connection_to_any_database_url_gets_the_session_timeouts(transactional_db):
    url = database_url()  # the test database; not the server's own settings: the client asks for them

    assert session_timeouts(DATABASE_URL=url, AGENT_TASK_DEFAULT_LEASE_SECONDS="120") == {
        "lock_timeout": "20s",
        "statement_timeout": "1min",
        "idle_in_transaction_session_timeout": "1min",
    }
    chosen = {"DATABASE_LOCK_TIMEOUT_SECONDS": "7", "DATABASE_STATEMENT_TIMEOUT_SECONDS": "0"}
    assert session_timeouts(DATABASE_URL=url, **chosen) == {
        "lock_timeout": "7s",
        "statement_timeout": "0",
        "idle_in_transaction_session_timeout": "30s",
    }


def test_a_frozen_worker_holding_a_row_lock_loses_it_and_is_fenced_out(start_worker, start_beat):
    # Given the order agents and a maintenance worker with session timeouts below the lease,
    # and a test agent holding the pen's row lock in a handler that keeps alive while it waits
    for service in world.SERVICES:
        world.configure(service)
    pen = Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=10)
    start_worker([definition.queue for definition in AGENTS], concurrency=2, env=TIGHT_DATABASE)
    start_worker(["orchestration"], name="maintenance", env=TIGHT_DATABASE)
    start_beat()
    holder = start_worker(["agent.testkit"], env=TIGHT_DATABASE)
    lock = {"model": "orders.Product", "pk": pen.pk}
    payload = {"key": "frozen", "seconds": 60, "heartbeat": "keep_alive", "lock": lock}
    task, _ = enqueue("testkit", "work", payload, idempotency_key="frozen")
    wait_until(lambda: redis_client().get("work:holding:frozen"), what="the pen's row to be locked")

    # When its pool process is frozen (SIGSTOP) with the lock held, and orders for pens come in
    [frozen_pid] = holder.pool_pids()
    os.kill(frozen_pid, signal.SIGSTOP)
    try:
        orders = [place_order(f"c{i}@example.com", [("PEN", 1)], idempotency_key=f"pen-{i}")[0] for i in range(3)]
        AgentTask.objects.filter(pk=task.pk).update(payload={**payload, "seconds": 0})  # the next one is quick
        start_worker(["agent.testkit"], env=TIGHT_DATABASE)

        # Then the orders complete on the other workers, and the task is reclaimed and done there,
        # while the frozen process is still frozen, not killed
        wait_until(
            lambda: Order.objects.filter(pk__in=[o.pk for o in orders], state=OrderState.COMPLETED).count() == 3,
            timeout=90,
            what="the pen orders to complete",
        )
        wait_until(lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, timeout=60)
        assert Path(f"/proc/{frozen_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"  # stopped
    finally:
        os.kill(frozen_pid, signal.SIGCONT)

    # And once thawed, the frozen attempt is fenced out and its effects are gone
    first = wait_until(
        lambda: TaskAttempt.objects.filter(task=task, number=1, status=AttemptStatus.FENCED_OUT).first(),
        timeout=60,
        what="the thawed attempt to be fenced out",
    )
    assert first.worker.endswith(f":{frozen_pid}")
    assert list(Effect.objects.filter(key="frozen").values_list("attempt", flat=True)) == [2]
    wait_until(
        lambda: not AgentTask.objects.filter(status__in=[TaskStatus.PENDING, TaskStatus.CLAIMED]).exists(),
        timeout=60,
        what="the system to be quiet",
    )
    assert [result.violations for result in check_all() if not result.holds] == []
