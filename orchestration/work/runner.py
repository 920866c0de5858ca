"""Running agent tasks: claim, execute, complete, all fenced.

The handler's database effects, the events it emitted (with the tasks of their subscribers
and the steps run inline) and the task's completion commit in one transaction, and the
completion is conditional on the fencing token, so a worker whose lease was reclaimed while
it slept rolls its effects back. An operation's outside call runs before that transaction,
with none open.

A wake-up message makes a worker process drain: it claims the ready tasks of the agents it
serves, a small batch at a time, and runs them one after the other until none is left or its
time is up, then hands over to a wake-up of its own. Under load one message serves many
tasks; when a batch comes back full the drainer wakes another process to help.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Collection
from datetime import timedelta

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from psycopg.errors import IdleInTransactionSessionTimeout

from orchestration.conf import kernel_settings
from orchestration.errors import (
    DeferTask,
    InlineStepFailed,
    LeaseExpired,
    LeaseLost,
    PermanentError,
    RetryableError,
    UnsupportedPayloadVersion,
)
from orchestration.limits import budgets
from orchestration.limits.admission import admit
from orchestration.models import AgentTask, TaskStatus
from orchestration.observability.logcontext import bind_log_context
from orchestration.observability.metrics import observe_inline_steps, observed_run
from orchestration.observability.tracing import first_line
from orchestration.registry import Operation, Route, registry
from orchestration.work import dispatch, events, lifecycle
from orchestration.work.context import TaskContext
from orchestration.work.ids import task_ids
from orchestration.work.leases import AttemptLease, WaitingClaims
from orchestration.work.outcome import RunOutcome
from orchestration.work.workers import remembered_queues, worker_name

logger = logging.getLogger(__name__)

# Named transient errors: another attempt may succeed. Anything else is a bug or a
# refusal, and the task goes dead with its traceback for an operator to read. A restart
# of PostgreSQL or Redis (the guards' and the outside world's state) is transient too, and
# so are the database's session timeouts (lock_timeout and statement_timeout raise
# OperationalError) and the lease running out.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    RetryableError,
    OperationalError,
    InterfaceError,
    LeaseExpired,
    SoftTimeLimitExceeded,
    redis.ConnectionError,
    redis.TimeoutError,
)
# What a circuit breaker counts against the dependency: a restart of our own database or
# Redis is not the gateway's fault, and counting it would open every breaker at once.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (RetryableError, LeaseExpired, SoftTimeLimitExceeded)


def run_task(task_id: int, *, queue: str = "", worker: str | None = None) -> RunOutcome:
    """Run one task if we can claim it. Returns what happened, for logs and tests."""
    worker = worker or worker_name()
    claim = lifecycle.claim(task_id, worker=worker, queue=queue)
    if claim is None:
        missing = not AgentTask.objects.filter(id=task_id).exists()
        logger.debug("task %s not claimable (%s)", task_id, "gone" if missing else "taken, finished or not ready")
        return RunOutcome.MISSING if missing else RunOutcome.NOT_CLAIMED
    return run_claimed(claim, worker=worker, queue=queue)


def drain(queue: str, *, worker: str | None = None, seconds: float | None = None) -> int:
    """Run the ready tasks of the agents this process serves until none is left or ``seconds``
    pass; returns how many ran. The wake-up that called it is spent: work committed from now
    on sends a new one."""
    config = kernel_settings()
    worker = worker or worker_name()
    seconds = config.drain_seconds if seconds is None else seconds
    agents = agents_served(queue)
    dispatch.woken(queue)
    started, ran = time.monotonic(), 0
    until = started + seconds
    while time.monotonic() < until:
        claims = lifecycle.claim_batch(agents, worker=worker, limit=config.claim_batch, queue=queue)
        if not claims:
            return ran
        if len(claims) == config.claim_batch:
            dispatch.wake_queue(queue)  # more is waiting: bring an idle process in
        ran += run_batch(claims, agents, worker=worker, queue=queue, until=until)
    # Out of time with work maybe left: hand over to a wake-up of our own, even while another
    # waits. Hand-overs deduplicated like commits' wake-ups would let many drains that end
    # together (a thread pool's, started by one burst) leave one successor between them, and
    # the busy threads fall toward one per queue; forced, each busy drain is replaced by one.
    dispatch.wake_queue(queue, force=True)
    return ran


def run_batch(claims: list[lifecycle.Claim], agents: list[str], *, worker: str, queue: str, until: float) -> int:
    """Run claimed tasks one after the other; returns how many ran.

    Eager follow-ups: the tasks a completion creates for agents this process serves (up to
    AGENT_TASK_EAGER_FOLLOW_UPS, 0 for none) are not announced to the broker; the process
    claims them as soon as the completion commits and runs them next, so a workflow's steps
    follow each other without a message, a wake-up or a wait in the queue (Temporal calls
    this eager activity execution). Any others are announced as usual. Keeping them all runs
    them one after the other where idle processes might have run them side by side, and it
    measured faster all the same: a wake-up costs more than that parallelism buys. A kept task is
    written claimed by the completion that creates it, with what a claim gives (fence, lease,
    attempt span, budget step), so it costs no claim of its own; a worker that dies before
    running it leaves its lease to run out, and the lease sweep gives it to another. Once the
    drain is out of time, nothing is kept. A follow-up runs before the rest of its batch, whose
    claims keep their leases meanwhile."""
    config = kernel_settings()
    ran = 0
    queued = deque(claims)
    with WaitingClaims(claims) as waiting:
        while queued:
            claim = queued.popleft()
            waiting.starting(claim)
            keep_claim_fresh(claim)
            kept: list[lifecycle.Claim] = []
            eager = agents if config.eager_follow_ups and time.monotonic() < until else []
            run_claimed(claim, worker=worker, queue=queue, keep=eager, keep_at_most=config.eager_follow_ups, kept=kept)
            ran += 1
            if kept:
                waiting.add(kept)
                queued.extendleft(reversed(kept))
    return ran


def agents_served(queue: str) -> list[str]:
    """The agents whose queues this worker consumes (the queue of the wake-up when unknown)."""
    queues = set(remembered_queues()) or {queue}
    return [name for name, definition in registry.agents.items() if definition.queue in queues] or [
        name for name, definition in registry.agents.items() if definition.queue == queue
    ]


def keep_claim_fresh(claim: lifecycle.Claim) -> None:
    """A task claimed in a batch waited for the ones before it: if half its lease is gone,
    extend it before its handler starts, so its deadline is a whole lease."""
    half_gone = claim.task.lease_expires_at - timedelta(seconds=claim.lease_seconds / 2)
    if timezone.now() >= half_gone:
        lifecycle.heartbeat(claim.task.pk, claim.fence, lease_seconds=claim.lease_seconds)


@observed_run
def run_claimed(
    claim: lifecycle.Claim,
    *,
    worker: str,
    queue: str = "",
    keep: Collection[str] = (),
    keep_at_most: int = 1,
    kept: list[lifecycle.Claim] | None = None,
) -> RunOutcome:
    """Run a task we hold: its guards, its outside call, its handler and completion. Up to
    ``keep_at_most`` new tasks of the agents in ``keep`` wake nobody: the completion writes
    them claimed by ``worker``, and once committed their claims are added to ``kept``, for the
    caller to run (run_batch)."""
    claimed = claim.task
    claimed_at = time.monotonic()
    bind_log_context(
        correlation_id=claimed.correlation_id,
        workflow_id=claimed.workflow_id,
        agent=claimed.agent,
        operation=claimed.operation,
        task_id=claimed.pk,
        attempt=claimed.attempts,
    )
    operation = registry.operation(claimed.agent, claimed.operation)
    if operation is None:
        return _fail(claimed, f"no handler registered for {claimed.agent}.{claimed.operation}", False)
    if claim.budget is not None and (reason := claim.budget.exceeded):
        return _stop_for_budget(claimed, reason)

    attempt = AttemptLease(claimed.pk, claimed.fence, claim.lease_seconds, claimed_at=claimed_at)
    context = TaskContext(claimed, operation, attempt, budget=claim.budget, worker=worker, queue=queue)
    admission = None
    dependency_answered: bool | None = None  # for the breaker: None when the attempt says nothing of it
    try:
        _check_version(operation, claimed)
        admission = admit(
            agent=claimed.agent,
            dependency=operation.dependency,
            holder=f"{claimed.pk}:{claimed.fence}",
            lease_seconds=claim.lease_seconds,
        )
        attempt.admission = admission  # heartbeats extend its slots with the lease
        if operation.call is not None:
            context.answer = attempt.run(operation.call, context)  # no transaction open
            _record_usage(context)
        with transaction.atomic():
            result = attempt.run(operation.handler, context)
            inlined = attempt.run(run_inline_steps, context)
            completion = lifecycle.complete(
                claimed.pk,
                claimed.fence,
                result=result,
                cost=context.cost,
                workflow_id=claimed.workflow_id,
                outbox=context.outbox,
                inlined=inlined,
                keep=keep,
                keep_at_most=keep_at_most,
                worker=worker,
                queue=queue,
            )
            if completion is None:
                raise LeaseLost(f"task {claimed.pk}: fenced out at completion (fence {claimed.fence})")
            dispatch.wake_on_commit(completion.woken)
        if kept is not None:
            kept.extend(completion.kept)  # committed: ours to run next
        dependency_answered = True
        observe_inline_steps(context.outbox.inline)
    except LeaseLost as error:
        logger.warning("%s; effects rolled back", error)
        lifecycle.record_fenced_out(claimed.pk, claimed.fence)
        return RunOutcome.FENCED_OUT
    except DeferTask as deferral:
        lifecycle.defer(claimed.pk, claimed.fence, run_after=deferral.run_after, reason=deferral.reason)
        return RunOutcome.DEFERRED
    except RETRYABLE_ERRORS as error:
        if admission is not None and isinstance(error, DEPENDENCY_ERRORS) and not isinstance(error, InlineStepFailed):
            dependency_answered = False  # the dependency failed us: the breaker counts it
        return _fail(claimed, _describe(error), True)
    except PermanentError as error:
        return _fail(claimed, _describe(error), False)
    except Exception as error:
        if isinstance(error.__cause__, IdleInTransactionSessionTimeout):
            # The server ended our transaction for sitting idle (a frozen or too slow handler
            # that did not heartbeat); psycopg calls that an InternalError. Another try may do.
            return _fail(claimed, _describe(error), True)
        return _fail(claimed, _describe(error) + "\n" + traceback.format_exc(limit=20), False)
    finally:
        if admission is not None:
            admission.end(ok=dependency_answered)  # one round trip: slots back, outcome to the breaker
        _record_usage(context)  # what was spent is spent, whatever the outcome
    return RunOutcome.SUCCEEDED


def _record_usage(context: TaskContext) -> None:
    usage, context.usage = context.usage, []
    if not usage:
        return
    try:
        lifecycle.record_usage(context.task, context.fence, usage)
    except Exception:  # the database is unreachable: the service's own ledger still has the calls
        logger.error("could not record the usage of task %s: %s", context.task_id, usage, exc_info=True)


# --- Steps run inline ----------------------------------------------------------------


def run_inline_steps(context: TaskContext) -> dict[int, list[Route]]:
    """Run, in this transaction, the inline operations that hear the events emitted so far
    (and those their own events reach); returns, by event id, the routes that ran inline (the
    others get a task of their own with the completion).

    Only a task's first attempt runs steps inline: if one fails, the attempt rolls back and
    the next gives every subscriber a task of its own, where a failing step fails alone."""
    inlined: dict[int, list[Route]] = {}
    if context.attempt > 1:
        return inlined
    budget = context.budget
    index = 0
    while index < len(context.outbox.events):
        event = context.outbox.events[index]
        index += 1
        for route in registry.subscribers(event.type):
            operation = registry.operation(route.agent, route.operation)
            if operation is None or not operation.inline:
                continue
            counted = not operation.compensation
            if counted and budget is not None and budget.steps_left <= 0:
                continue  # its own task will find the budget spent, and stop the workflow
            _run_inline(context, event, route, operation, counted=counted)
            if counted and budget is not None:
                budget.steps += 1
            inlined.setdefault(event.id, []).append(route)
    return inlined


def _run_inline(
    parent: TaskContext, event: events.Emitted, route: Route, operation: Operation, *, counted: bool
) -> None:
    task = AgentTask(
        id=task_ids.take()[0],
        agent=route.agent,
        operation=operation.name,
        event_type=event.type,
        payload=event.payload,
        payload_version=event.version,
        status=TaskStatus.CLAIMED,
        attempts=1,
        fence=1,
        idempotency_key=events.route_key(event.id, route),
        workflow_id=event.workflow_id,
        correlation_id=event.correlation_id,
        parent_id=event.source_task_id,
    )
    context = TaskContext(
        task,
        operation,
        parent.lease,
        outbox=parent.outbox,
        budget=parent.budget,
        worker=parent.worker,
        queue=parent.queue,
        held=parent.held,
    )
    started = timezone.now()
    try:
        _check_version(operation, task)
        result = operation.handler(context)
    except Exception as error:
        raise InlineStepFailed(
            f"{route.agent}.{operation.name}, run inline for {event.type}, failed: {_describe(error)}"
        ) from error
    parent.cost += context.cost
    parent.outbox.inline.append(
        events.InlineRun(
            task.pk,
            operation,
            route.agent,
            event,
            result,
            parent.worker,
            parent.queue,
            started,
            timezone.now(),
            counted,
        )
    )


# --- Endings other than success ---------------------------------------------------------


def _check_version(operation: Operation, task: AgentTask) -> None:
    if task.payload_version not in operation.payload_versions:
        accepted = sorted(operation.payload_versions)
        raise UnsupportedPayloadVersion(
            f"{task.agent}.{task.operation} accepts payload versions {accepted}, not {task.payload_version}"
        )


def _stop_for_budget(task: AgentTask, reason: str) -> RunOutcome:
    """Do not run the step; tell the workflow once, so its owner stops and compensates."""
    with transaction.atomic():
        if not lifecycle.cancel_claimed(task.pk, task.fence, reason=f"budget exceeded: {reason}"):
            return RunOutcome.FENCED_OUT
        if budgets.refuse_step(task.workflow_id, reason):
            events.emit(
                budgets.BUDGET_EVENT,
                {**task.payload, "reason": f"budget exceeded: {reason}"},
                workflow_id=task.workflow_id,
                correlation_id=task.correlation_id,
                version=task.payload_version,
                source_task_id=task.pk,
            )
    logger.warning("workflow %s stopped: %s", task.workflow_id, reason)
    return RunOutcome.OVER_BUDGET


def _fail(task: AgentTask, error: str, retryable: bool) -> RunOutcome:
    status = lifecycle.fail(task.pk, task.fence, error=error, retryable=retryable, attempt=task.attempts)
    if status is None:  # reclaimed meanwhile: say on this attempt's span how it ended
        lifecycle.record_fenced_out(task.pk, task.fence, error=error)
        return RunOutcome.FENCED_OUT
    logger.log(
        logging.WARNING if status == TaskStatus.PENDING else logging.ERROR,
        "task %s %s.%s attempt %s failed (%s): %s",
        task.pk,
        task.agent,
        task.operation,
        task.attempts,
        "will retry" if status == TaskStatus.PENDING else "dead",
        first_line(error, 500),
    )
    return RunOutcome.RETRYING if status == TaskStatus.PENDING else RunOutcome.DEAD


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
