"""The task life cycle in-process against real PostgreSQL: claims, fences, retries, expiry."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from orchestration.errors import IdempotencyConflict
from orchestration.limits import budgets
from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus, WorkflowBudget
from orchestration.work import lifecycle, runner, sweeps
from orchestration.work.enqueue import enqueue
from orchestration.work.events import Outbox
from tests.kernelapp.models import Effect
from tests.support import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueue_is_idempotent_on_the_key():
    first, created = enqueue("testkit", "record", {"key": "a"}, idempotency_key="same")
    second, created_again = enqueue("testkit", "record", {"key": "b"}, idempotency_key="same")

    assert created and not created_again
    assert first.pk == second.pk
    assert AgentTask.objects.filter(idempotency_key="same").count() == 1


def test_enqueue_refuses_a_key_reused_for_other_work():
    enqueue("testkit", "record", {"key": "a"}, idempotency_key="shared")

    with pytest.raises(IdempotencyConflict, match=r"testkit\.record"):
        enqueue("listener", "hear", {"key": "a"}, idempotency_key="shared")


def test_exactly_one_of_eight_concurrent_claimers_wins():
    task, _ = enqueue("testkit", "record", {"key": "race"}, idempotency_key="race")

    claims = run_in_threads(8, lambda i: lifecycle.claim(task.pk, worker=f"claimer-{i}"))

    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1
    task.refresh_from_db()
    assert task.status == TaskStatus.CLAIMED
    assert task.fence == 1 and task.attempts == 1
    assert task.claimed_by == winners[0].task.claimed_by


def test_concurrent_batch_claimers_split_the_work_without_overlap():
    for i in range(40):
        enqueue("testkit", "record", {"key": f"b{i}"}, idempotency_key=f"batch-{i}")

    batches = run_in_threads(4, lambda i: lifecycle.claim_batch(["testkit"], worker=f"w{i}", limit=15))

    claimed_ids = [claim.task.pk for batch in batches for claim in batch]
    assert max(len(batch) for batch in batches) <= 15
    assert len(claimed_ids) == 40
    assert len(set(claimed_ids)) == 40


def test_a_batch_claim_takes_no_more_than_its_limit():
    for i in range(6):
        enqueue("testkit", "record", {"key": f"l{i}"}, idempotency_key=f"limit-{i}")

    batch = lifecycle.claim_batch(["testkit"], worker="w", limit=1)

    assert len(batch) == 1
    assert AgentTask.objects.filter(status=TaskStatus.PENDING).count() == 5
    assert AgentTask.objects.get(status=TaskStatus.CLAIMED).pk == batch[0].task.pk


def test_a_task_deferred_more_times_than_its_step_cap_still_runs_and_counts_one_step():
    # Given a workflow allowed 3 steps and a task a guard keeps putting off (an open breaker)
    budgets.set_caps("wf-deferred", max_steps=3)
    task, _ = enqueue("testkit", "record", {"key": "d"}, idempotency_key="deferred", workflow_id="wf-deferred")
    for _ in range(5):
        claim = lifecycle.claim(task.pk, worker="w")
        assert claim is not None and claim.budget.exceeded is None
        assert lifecycle.defer(task.pk, claim.fence, run_after=timezone.now(), reason="breaker open")

    # When the guard lets it through
    claim = lifecycle.claim(task.pk, worker="w")

    # Then it runs within its budget: five deferrals spent no step and no attempt
    assert claim is not None and claim.budget.exceeded is None
    assert claim.budget.steps == 1 and claim.task.attempts == 1
    assert WorkflowBudget.objects.get(workflow_id="wf-deferred").steps == 1


def test_a_worker_whose_lease_was_reclaimed_cannot_complete():
    # Given a slow task (lease 3 s) whose first worker sleeps past its lease
    task, _ = enqueue("testkit", "slow_record", {"key": "fenced", "sleep": 4}, idempotency_key="fenced")
    outcomes = {}
    first = threading.Thread(target=lambda: outcomes.update(first=runner.run_task(task.pk, worker="first")))
    first.start()
    time.sleep(3.3)

    # When a sweep reclaims it and a second worker runs it (quickly: past its lease without a
    # heartbeat, the kernel would stop it too)
    assert sweeps.reclaim_expired_leases() == 1
    AgentTask.objects.filter(pk=task.pk).update(payload={"key": "fenced", "sleep": 0})
    outcomes["second"] = runner.run_task(task.pk, worker="second")
    first.join()
    connection.close()

    # Then the first worker's effects rolled back and the second's result stands
    assert outcomes == {"first": "fenced-out", "second": "succeeded"}
    task.refresh_from_db()
    assert task.status == TaskStatus.SUCCEEDED and task.fence == 2
    assert task.result["attempt"] == 2
    assert list(Effect.objects.filter(key="fenced").values_list("attempt", flat=True)) == [2]
    spans = dict(TaskAttempt.objects.filter(task=task).values_list("number", "status"))
    assert spans == {1: AttemptStatus.FENCED_OUT, 2: AttemptStatus.SUCCEEDED}


def test_a_follow_up_kept_by_the_completing_worker_is_written_claimed_with_its_span_and_step():
    task, _ = enqueue("testkit", "record", {"key": "keeper", "emit": True}, idempotency_key="keeper")
    claim = lifecycle.claim(task.pk, worker="w1", queue="agent.testkit")
    kept: list[lifecycle.Claim] = []

    outcome = runner.run_claimed(claim, worker="w1", queue="agent.testkit", keep=["listener"], kept=kept)

    # The listener's task was written claimed by w1, as a claim would have left it, in the
    # completion's statement: its first attempt open, its budget step counted with it.
    assert outcome == "succeeded" and len(kept) == 1
    follow_up = AgentTask.objects.get(pk=kept[0].task.pk)
    assert (follow_up.agent, follow_up.operation, follow_up.status) == ("listener", "hear", TaskStatus.CLAIMED)
    assert (follow_up.fence, follow_up.attempts, follow_up.claimed_by) == (1, 1, "w1")
    assert follow_up.lease_expires_at > timezone.now()
    span = TaskAttempt.objects.get(task=follow_up)
    assert (span.number, span.fence, span.status, span.worker, span.queue) == (
        1,
        1,
        AttemptStatus.RUNNING,
        "w1",
        "agent.testkit",
    )
    assert WorkflowBudget.objects.get(workflow_id=task.workflow_id).steps == 2
    assert kept[0].budget is not None and kept[0].budget.steps == 2
    # The claim in hand is the row's: running it completes it under its fence.
    for name in ("id", "payload", "fence", "lease_expires_at", "workflow_id", "idempotency_key"):
        assert getattr(kept[0].task, name) == getattr(follow_up, name), name
    assert runner.run_claimed(kept[0], worker="w1", queue="agent.testkit") == "succeeded"
    follow_up.refresh_from_db()
    assert follow_up.status == TaskStatus.SUCCEEDED


def test_a_kept_follow_up_whose_worker_dies_before_running_it_is_reclaimed_when_its_lease_ends():
    task, _ = enqueue("testkit", "record", {"key": "orphan", "emit": True}, idempotency_key="orphan")
    kept: list[lifecycle.Claim] = []
    runner.run_claimed(lifecycle.claim(task.pk, worker="w1"), worker="w1", keep=["listener"], kept=kept)
    # w1 dies here, its follow-up claimed and never run.

    with time_machine.travel(kept[0].task.lease_expires_at + timedelta(seconds=1)):
        assert sweeps.reclaim_expired_leases() == 1
        follow_up = AgentTask.objects.get(pk=kept[0].task.pk)
        assert follow_up.status == TaskStatus.PENDING
        assert runner.run_task(follow_up.pk, worker="w2") == "succeeded"
    assert AgentTask.objects.get(pk=follow_up.pk).fence == 2


def test_a_retry_waits_for_run_after():
    task, _ = enqueue("testkit", "record", {"key": "backoff", "fail_times": 1}, idempotency_key="backoff")

    assert runner.run_task(task.pk) == "retrying"
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING and task.run_after > timezone.now()
    assert "transient failure 1" in task.last_error

    assert runner.run_task(task.pk) == "not-claimed"  # too early: the backoff holds
    with time_machine.travel(task.run_after + timedelta(milliseconds=10), tick=True):
        assert runner.run_task(task.pk) == "succeeded"
    task.refresh_from_db()
    assert task.attempts == 2 and Effect.objects.filter(key="backoff").count() == 1


def test_exhausted_attempts_go_dead_with_the_last_error_and_the_owner_is_told():
    task, _ = enqueue("testkit", "record", {"key": "doomed", "fail_times": 99}, idempotency_key="doomed")

    for _ in range(3):  # max_attempts is 3 for testkit.record
        task.refresh_from_db()
        with time_machine.travel(task.run_after + timedelta(milliseconds=10), tick=True):
            runner.run_task(task.pk)

    task.refresh_from_db()
    assert task.status == TaskStatus.DEAD and task.attempts == 3
    assert "transient failure 3" in task.last_error
    told = AgentTask.objects.get(agent="listener", operation="hear_failure")
    assert told.event_type == "testkit.record_failed" and told.payload["failed_task_id"] == task.pk


def test_a_permanent_error_goes_dead_at_once():
    task, _ = enqueue("testkit", "record", {"key": "no", "permanent": True}, idempotency_key="no")

    assert runner.run_task(task.pk) == "dead"

    task.refresh_from_db()
    assert task.status == TaskStatus.DEAD and task.attempts == 1
    assert "refused no" in task.last_error


def test_an_undeclared_payload_version_is_refused_with_the_reason():
    task, _ = enqueue("testkit", "record", {"key": "v2"}, idempotency_key="v2", payload_version=2)

    assert runner.run_task(task.pk) == "dead"

    task.refresh_from_db()
    assert "testkit.record accepts payload versions [1], not 2" in task.last_error
    assert not Effect.objects.filter(key="v2").exists()


def test_a_task_past_its_ttl_is_dead_lettered():
    task, _ = enqueue("testkit", "record", {"key": "late"}, idempotency_key="late", ttl_seconds=5)

    with time_machine.travel(timezone.now() + timedelta(seconds=6), tick=True):
        assert runner.run_task(task.pk) == "not-claimed"
        assert sweeps.expire_overdue_tasks() == 1

    task.refresh_from_db()
    assert task.status == TaskStatus.DEAD and task.last_error.startswith("expired")


def test_emitted_events_create_the_subscribers_tasks_in_the_same_transaction():
    task, _ = enqueue("testkit", "record", {"key": "loud", "emit": True}, idempotency_key="loud")

    assert runner.run_task(task.pk) == "succeeded"

    heard = AgentTask.objects.get(agent="listener", operation="hear")
    assert heard.event_type == "testkit.recorded"
    assert heard.parent_id == task.pk and heard.correlation_id == task.correlation_id


def test_cancel_takes_only_pending_tasks():
    pending, _ = enqueue("testkit", "record", {"key": "c1"}, idempotency_key="c1")
    claimed, _ = enqueue("testkit", "record", {"key": "c2"}, idempotency_key="c2")
    lifecycle.claim(claimed.pk, worker="w")

    assert lifecycle.cancel(pending.pk) is True
    assert lifecycle.cancel(claimed.pk) is False
    assert AgentTask.objects.get(pk=pending.pk).status == TaskStatus.CANCELLED
    assert AgentTask.objects.get(pk=claimed.pk).status == TaskStatus.CLAIMED


def test_replaying_a_dead_task_runs_it_again_under_the_same_key():
    task, _ = enqueue("testkit", "record", {"key": "again", "permanent": True}, idempotency_key="again")
    runner.run_task(task.pk)
    AgentTask.objects.filter(pk=task.pk).update(payload={"key": "again"})  # the operator fixed the cause

    assert lifecycle.replay(task.pk) is True
    assert runner.run_task(task.pk) == "succeeded"
    assert lifecycle.replay(task.pk) is False  # only dead tasks can be replayed


def test_backoff_grows_exponentially_with_jitter_under_the_cap():
    delays = [lifecycle.backoff_delay(attempt, base=1, cap=30) for attempt in range(1, 8)]

    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(30, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(
    "sweep",
    ["reclaim", "expire", "republish", "prune"],
)
def test_two_overlapping_runs_of_a_sweep_leave_what_one_run_leaves(sweep, redis_client):
    now = timezone.now()
    run = tasks_for_a_sweep(sweep, 30)

    redis_client.flushdb()  # forget the messages enqueue sent

    counts = run_in_threads(2, lambda _i: run())

    assert sum(counts) == 30
    if sweep == "reclaim":
        assert set(AgentTask.objects.values_list("status", "reclaims")) == {(TaskStatus.PENDING, 1)}
    elif sweep == "expire":
        assert set(AgentTask.objects.filter(agent="testkit").values_list("status", flat=True)) == {"dead"}
        assert AgentTask.objects.filter(agent="listener", operation="hear_failure").count() == 30
    elif sweep == "republish":
        assert AgentTask.objects.filter(dispatched_at__lt=now).count() == 0
        # A wake-up per queue and sweep, not one per task: either sweep's wake-up drains all 30.
        assert 1 <= redis_client.llen("agent.testkit") <= 2
    else:
        assert AgentTask.objects.count() == 0


def test_a_task_whose_last_lease_ran_out_is_dead_and_counted_as_a_dead_letter():
    def dead_letters() -> float:
        return REGISTRY.get_sample_value("agent_task_dead_letters_total", {"agent": "testkit"}) or 0.0

    task, _ = enqueue("testkit", "record", {"key": "lost"}, idempotency_key="lost")
    AgentTask.objects.filter(pk=task.pk).update(max_attempts=1)
    lifecycle.claim(task.pk, worker="gone", lease_seconds=5)
    before = dead_letters()

    with time_machine.travel(timezone.now() + timedelta(seconds=6), tick=True):
        assert sweeps.reclaim_expired_leases() == 1

    task.refresh_from_db()
    assert task.status == TaskStatus.DEAD and "lease expired while claimed by gone" in task.last_error
    assert dead_letters() == before + 1


def test_a_heartbeat_keeps_a_live_lease_but_cannot_revive_one_that_ran_out():
    task, _ = enqueue("testkit", "record", {"key": "beat"}, idempotency_key="beat")
    claim = lifecycle.claim(task.pk, worker="slow", lease_seconds=5)

    with time_machine.travel(timezone.now() + timedelta(seconds=4), tick=True):
        assert lifecycle.heartbeat(task.pk, claim.fence, lease_seconds=5)  # now good until +9 s
    with time_machine.travel(timezone.now() + timedelta(seconds=10), tick=True):
        # Not reclaimed yet, but over: its guard slots may already belong to someone else.
        assert not lifecycle.heartbeat(task.pk, claim.fence, lease_seconds=5)
        assert sweeps.reclaim_expired_leases() == 1


def test_each_drain_out_of_time_hands_over_to_a_wake_up_of_its_own(settings, redis_client):
    # Given three drains (a thread pool's) that claim one task at a time, and six slow tasks
    settings.AGENT_TASK_CLAIM_BATCH = 1
    settings.AGENT_TASK_EAGER_FOLLOW_UPS = 0
    for i in range(6):
        enqueue("testkit", "record", {"key": f"h{i}", "sleep": 0.3}, idempotency_key=f"hand-over-{i}")
    redis_client.flushdb()  # forget the wake-ups enqueue sent

    # When they run out of time together, each after one task, with three tasks left
    ran = run_in_threads(3, lambda _i: runner.drain("agent.testkit", seconds=0.1))

    # Then each left a successor of its own on the queue, beside the one to three wake-ups
    # sent when their claims came back full (those are deduplicated: while one waits, no
    # other is sent). Deduplicated hand-overs would leave at most three in all, and three busy
    # drains would be followed by one.
    assert ran == [1, 1, 1]
    assert AgentTask.objects.filter(agent="testkit", status=TaskStatus.PENDING).count() == 3
    assert 3 + 1 <= redis_client.llen("agent.testkit") <= 3 + 3


@pytest.mark.parametrize("sweep", ["reclaim", "expire", "republish", "prune"])
def test_one_run_of_a_sweep_takes_no_more_than_its_batch(sweep):
    run = tasks_for_a_sweep(sweep, 12)

    # A batch bounds one run's transaction: the next run takes the rest.
    assert [run(limit=5), run(limit=5), run(limit=5), run(limit=5)] == [5, 5, 2, 0]


def tasks_for_a_sweep(sweep: str, count: int):
    """``count`` tasks that this sweep finds (leases run out, TTLs passed, wake-ups lost long
    ago, or finished long ago); returns the sweep."""
    past = timezone.now() - timedelta(days=60)
    for i in range(count):
        task, _ = enqueue("testkit", "record", {"key": f"s{i}"}, idempotency_key=f"sweep-{i}", ttl_seconds=3600)
        if sweep == "reclaim":
            lifecycle.claim(task.pk, worker="gone")
            AgentTask.objects.filter(pk=task.pk).update(lease_expires_at=past)
        elif sweep == "expire":
            AgentTask.objects.filter(pk=task.pk).update(expires_at=past)
        elif sweep == "republish":
            AgentTask.objects.filter(pk=task.pk).update(dispatched_at=past)
        else:
            AgentTask.objects.filter(pk=task.pk).update(status=TaskStatus.SUCCEEDED, finished_at=past)
    return {
        "reclaim": sweeps.reclaim_expired_leases,
        "expire": sweeps.expire_overdue_tasks,
        "republish": sweeps.republish_lost_messages,
        "prune": sweeps.prune_finished_tasks,
    }[sweep]


def test_the_completion_statement_is_converted_once_per_process():
    """psycopg turns a statement's %(name)s placeholders into PostgreSQL's $n by parsing its
    text, and caches the result only for statements of at most 50 parameters and 4 KiB;
    the completion's text is the same for every task, so within those limits it is parsed
    once per process instead of once per completion (it had 54 parameters)."""
    from psycopg import _queries  # the limits are psycopg's, not ours

    enqueue("testkit", "record", {"key": "converted"}, idempotency_key="converted")
    task = AgentTask.objects.get(idempotency_key="converted")
    claim = lifecycle.claim(task.pk, worker="w1")
    sql, params, _kept = lifecycle.completion_statement(
        task.pk,
        claim.fence,
        result=None,
        cost=0,
        workflow_id=task.workflow_id,
        outbox=Outbox(),
        inlined=None,
        keep=(),
        keep_at_most=1,
        now=timezone.now(),
    )
    assert len(params) <= _queries.MAX_CACHED_STATEMENT_PARAMS, sorted(params)
    assert len(sql.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH
    with transaction.atomic():
        lifecycle.complete(task.pk, claim.fence)
    enqueue("testkit", "record", {"key": "converted-again"}, idempotency_key="converted-again")
    again = AgentTask.objects.get(idempotency_key="converted-again")
    claimed_again = lifecycle.claim(again.pk, worker="w1")
    with transaction.atomic():
        before = _queries._query2pg.cache_info().hits
        assert lifecycle.complete(again.pk, claimed_again.fence) is not None
        assert _queries._query2pg.cache_info().hits == before + 1
