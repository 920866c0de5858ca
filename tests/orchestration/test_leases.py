"""Heartbeats really extend work: a handler that heartbeats keeps its claim, its deadline,
its guard slot and its database session for as long as it heartbeats; one that stops loses
them and is fenced out. Real worker processes, real Redis and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus
from orchestration.redis_client import redis_client
from orchestration.work.enqueue import enqueue
from tests.kernelapp.models import Effect
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = 3  # the test kit's "work" operation
# Session timeouts below the lease, as in production (half the lease): a handler's session
# survives only if its heartbeats keep it.
TIGHT_DATABASE = {
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "2",
    "DATABASE_LOCK_TIMEOUT_SECONDS": "1",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "5",
}
ONE_VAULT_SLOT = {"GUARD_LIMITS": json.dumps({"breakers": {}, "concurrency": {"dependency:vault": 1}, "rates": {}})}


def work_log(kind: str, key: str) -> list[tuple[int, float]]:
    """(attempt, time) of each start or end the "work" handler logged for ``key``."""
    entries = [entry.split() for entry in redis_client().lrange("work:log", 0, -1)]
    return [(int(attempt), float(at)) for what, name, attempt, at in entries if (what, name) == (kind, key)]


def spans(task: AgentTask) -> list[str]:
    return list(TaskAttempt.objects.filter(task=task).order_by("number").values_list("status", flat=True))


@pytest.mark.parametrize("heartbeat", [0.5, "keep_alive"], ids=["heartbeat-every-half-second", "keeping-alive"])
def test_a_handler_that_heartbeats_keeps_its_claim_and_its_slot_for_three_leases(start_worker, start_beat, heartbeat):
    # Given one slot for the vault, a worker with room for two tasks, and the reclaim sweep running
    env = {**TIGHT_DATABASE, **ONE_VAULT_SLOT}
    start_worker(["agent.testkit"], concurrency=2, env=env)
    start_worker(["orchestration"], name="maintenance", env=env)
    start_beat()

    # When a task works for three times its lease, heartbeating, and a second one wants the vault
    payload = {"key": "long", "seconds": 3 * LEASE, "heartbeat": heartbeat}
    long_task, _ = enqueue("testkit", "work", payload, idempotency_key="long")
    wait_until(lambda: work_log("start", "long"), what="the long task to start")
    short_task, _ = enqueue("testkit", "work", {"key": "short", "seconds": 0}, idempotency_key="short")

    # Then the long one ran once, was never reclaimed, and its effects committed
    both = AgentTask.objects.filter(pk__in=[long_task.pk, short_task.pk])
    wait_until(lambda: both.filter(status=TaskStatus.SUCCEEDED).count() == 2, timeout=90, what="both to succeed")
    long_task.refresh_from_db()
    assert (long_task.attempts, long_task.reclaims) == (1, 0)
    assert spans(long_task) == [AttemptStatus.SUCCEEDED]
    assert list(Effect.objects.filter(key="long").values_list("attempt", flat=True)) == [1]
    # And it kept its slot: the second task was put off until the first one ended
    assert TaskAttempt.objects.filter(task=short_task, status=AttemptStatus.DEFERRED).exists()
    [(_, long_ended)] = work_log("end", "long")
    assert all(started > long_ended for _, started in work_log("start", "short"))


def test_a_handler_stuck_in_a_call_without_heartbeats_is_reclaimed_and_fenced_out(start_worker, start_beat):
    # Given a threads-pool worker (Celery enforces no time limit there) and the reclaim sweep
    start_worker(["agent.testkit"], pool="threads", concurrency=2, env=TIGHT_DATABASE)
    start_worker(["orchestration"], name="maintenance", env=TIGHT_DATABASE)
    start_beat()

    # When a handler blocks in a call far longer than its lease, never heartbeating
    task, _ = enqueue("testkit", "work", {"key": "stuck", "seconds": 20}, idempotency_key="stuck")
    wait_until(lambda: work_log("start", "stuck"), what="the stuck attempt to start")
    AgentTask.objects.filter(pk=task.pk).update(payload={"key": "stuck", "seconds": 0})  # the next one is quick

    # Then the sweep takes the task back and a second attempt completes it while the first waits
    wait_until(lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, timeout=60)
    task.refresh_from_db()
    assert task.reclaims == 1 and task.attempts == 2
    # And when its call returns, the stuck attempt is stopped there and fenced out: the rest
    # of its handler never runs, and of its effects only the second attempt's are kept
    first = wait_until(
        lambda: TaskAttempt.objects.filter(task=task, number=1, status=AttemptStatus.FENCED_OUT).first(),
        timeout=60,
        what="the stuck attempt to come back and be fenced out",
    )
    assert "LeaseExpired" in first.error
    assert [attempt for attempt, _ in work_log("end", "stuck")] == [2]
    assert list(Effect.objects.filter(key="stuck").values_list("attempt", flat=True)) == [2]
