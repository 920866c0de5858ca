"""Delivery, crashes and leases with real Celery worker processes, real Redis and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest
from celery import current_app
from django.db import connection, transaction
from django.utils import timezone

from orchestration.models import (
    AgentTask,
    AttemptStatus,
    RejectedMessage,
    RejectionReason,
    TaskAttempt,
    TaskStatus,
    Worker,
)
from orchestration.work.dispatch import RUN_AGENT_TASK, publish
from orchestration.work.enqueue import enqueue
from tests.kernelapp.models import Effect, Gate, StepLog
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RECLAIM_INTERVAL = 5  # orchestration.schedules: reclaim_expired_leases every 5 s
STARTUP_SLACK = 15  # a fresh worker process and beat tick


def task_status(task_id: int) -> str:
    return AgentTask.objects.get(pk=task_id).status


def test_a_task_whose_worker_is_sigkilled_is_reclaimed_and_completed_once(start_worker, start_beat):
    # Given a worker running a 3-second-lease task, and beat sweeping
    doomed = start_worker(["agent.testkit"])
    start_beat()
    start_worker(["orchestration"], name="maintenance")
    task, _ = enqueue("testkit", "slow_record", {"key": "crash", "sleep": 30}, idempotency_key="crash")
    wait_until(lambda: TaskAttempt.objects.filter(task=task, status=AttemptStatus.RUNNING).exists())

    # When the worker is killed mid-task and another takes its place
    doomed.kill()
    AgentTask.objects.filter(pk=task.pk).update(payload={"key": "crash", "sleep": 0})
    start_worker(["agent.testkit"])

    # Then the task is reclaimed and completed exactly once, within lease + reclaim interval
    wait_until(
        lambda: task_status(task.pk) == TaskStatus.SUCCEEDED,
        timeout=3 + RECLAIM_INTERVAL + STARTUP_SLACK,
        what="reclaimed task to complete",
    )
    task.refresh_from_db()
    assert task.reclaims == 1 and task.attempts == 2
    assert list(Effect.objects.filter(key="crash").values_list("attempt", flat=True)) == [2]
    spans = list(TaskAttempt.objects.filter(task=task).order_by("number").values_list("status", flat=True))
    assert spans == [AttemptStatus.RECLAIMED, AttemptStatus.SUCCEEDED]


def test_the_same_message_delivered_twice_runs_the_task_once(start_worker):
    start_worker(["agent.testkit"], concurrency=2)
    task, _ = enqueue("testkit", "record", {"key": "twice", "sleep": 0.5}, idempotency_key="twice")

    publish(task.pk, "testkit", "record")  # a duplicate, as a redelivery would make
    publish(task.pk, "testkit", "record")

    wait_until(lambda: task_status(task.pk) == TaskStatus.SUCCEEDED)
    time.sleep(1)  # let the duplicates arrive and be turned away
    assert Effect.objects.filter(key="twice").count() == 1
    assert TaskAttempt.objects.filter(task=task).count() == 1


def test_a_task_whose_message_was_never_published_runs_once(start_worker, start_beat):
    start_worker(["agent.testkit", "orchestration"])
    start_beat()
    # A row committed without its message, as if the broker failed right after the commit.
    task = AgentTask.objects.create(
        agent="testkit",
        operation="record",
        payload={"key": "unpublished"},
        idempotency_key="unpublished",
        correlation_id="c-unpublished",
        dispatched_at=None,
    )

    wait_until(lambda: task_status(task.pk) == TaskStatus.SUCCEEDED, timeout=STARTUP_SLACK)
    assert Effect.objects.filter(key="unpublished").count() == 1


def test_a_reclaimed_long_task_resumes_from_its_checkpoint(start_worker, start_beat):
    doomed = start_worker(["agent.testkit"])
    start_beat()
    start_worker(["orchestration"], name="maintenance")
    task, _ = enqueue("testkit", "long_job", {"key": "long", "steps": 8, "step_seconds": 0.4}, idempotency_key="long")
    wait_until(lambda: StepLog.objects.filter(key="long").count() >= 3, what="three steps done")

    doomed.kill()
    start_worker(["agent.testkit"])

    wait_until(lambda: task_status(task.pk) == TaskStatus.SUCCEEDED, timeout=3 + RECLAIM_INTERVAL + 20)
    task.refresh_from_db()
    assert task.result["resumed_from"] >= 3
    steps = list(StepLog.objects.filter(key="long").values_list("step", "attempt"))
    assert {step for step, _ in steps} == set(range(8))
    assert all(attempt == 1 for step, attempt in steps if step < task.result["resumed_from"])
    assert len(steps) <= 9  # at most the step in flight at the crash runs twice


def test_a_poison_message_is_dead_lettered_and_the_worker_lives_on(start_worker):
    worker = start_worker(["agent.testkit"])

    current_app.send_task(RUN_AGENT_TASK, kwargs={"task_id": "not-a-number"}, queue="agent.testkit")
    task, _ = enqueue("testkit", "record", {"key": "after-poison"}, idempotency_key="after-poison")

    wait_until(lambda: task_status(task.pk) == TaskStatus.SUCCEEDED)
    poison = RejectedMessage.objects.get()
    assert poison.reason == RejectionReason.BAD_ARGUMENTS and poison.queue == "agent.testkit"
    assert "not-a-number" in poison.body
    assert worker.is_running()


def test_live_workers_keep_a_heartbeat_row_and_silent_ones_show_as_gone(start_worker):
    worker = start_worker(["agent.testkit", "agent.listener"])
    task, _ = enqueue("testkit", "record", {"key": "hb"}, idempotency_key="hb")
    wait_until(lambda: task_status(task.pk) == TaskStatus.SUCCEEDED)

    row = wait_until(lambda: Worker.objects.filter(last_seen_at__gte=task.created_at).first())
    assert row.is_alive()
    assert row.queues == "agent.listener,agent.testkit"  # what the operators' workers page shows
    assert row.pid in worker.pool_pids()  # a pool process; the prefork main process runs no task
    assert not Worker.objects.filter(pid=worker.pid).exists()
    claimed_by = AgentTask.objects.get(pk=task.pk).claimed_by
    assert claimed_by.endswith(f":{row.pid}") or Worker.objects.filter(name=claimed_by).exists()

    Worker.objects.filter(pk=row.pk).update(last_seen_at=timezone.now() - timezone.timedelta(minutes=5))
    row.refresh_from_db()
    assert not row.is_alive()


def test_a_worker_whose_commit_outlived_its_time_limit_runs_the_next_task(start_worker):
    # Given a row held locked elsewhere (a cut-off host's transaction), which the handler's
    # commit must wait for, past its 3 s lease and so its deadline
    gate = Gate.objects.create()
    locked, release = threading.Event(), threading.Event()

    def hold_the_gate() -> None:
        with transaction.atomic():
            Gate.objects.select_for_update().get(pk=gate.pk)
            locked.set()
            release.wait(60)
        connection.close()

    holder = threading.Thread(target=hold_the_gate)
    holder.start()
    locked.wait(10)
    start_worker(["agent.testkit"], concurrency=1)
    enqueue("testkit", "slow_record", {"key": "stuck", "gate": gate.pk}, idempotency_key="stuck")
    try:
        wait_until(
            lambda: (
                TaskAttempt.objects.filter(task__idempotency_key="stuck").exclude(status=AttemptStatus.RUNNING).exists()
            ),
            timeout=30,
            what="the deadline to cut the commit short, and the attempt to end",
        )
    finally:
        release.set()
        holder.join()

    # When the same worker process gets the next task
    task, _ = enqueue("testkit", "record", {"key": "next"}, idempotency_key="next")

    # Then it runs it: the interrupted statement did not leave its connection unusable
    wait_until(lambda: task_status(task.pk) == TaskStatus.SUCCEEDED, timeout=30, what="the next task to run")
    assert list(Effect.objects.filter(key="next").values_list("attempt", flat=True)) == [1]
