"""Running one agent task: claim, execute the handler, complete, all fenced.

The handler's database effects and the task's completion commit in one
transaction; the completion is conditional on the fencing token, so a worker
whose lease was reclaimed while it slept rolls its effects back.
"""

from __future__ import annotations

import logging
import time
import traceback

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, transaction
from psycopg.errors import IdleInTransactionSessionTimeout

from orchestration.errors import (
    DeferTask,
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
from orchestration.observability.metrics import observed_run
from orchestration.observability.tracing import first_line
from orchestration.registry import registry
from orchestration.work import events, lifecycle
from orchestration.work.context import TaskContext
from orchestration.work.dispatch import lease_for
from orchestration.work.leases import AttemptLease
from orchestration.work.outcome import RunOutcome
from orchestration.work.workers import worker_name

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


@observed_run
def run_task(task_id: int, *, queue: str = "", worker: str | None = None) -> RunOutcome:
    """Run one task if we can claim it. Returns what happened, for logs and tests."""
    worker = worker or worker_name()
    task = AgentTask.objects.filter(id=task_id).only("agent", "operation").first()
    if task is None:
        logger.info("task %s does not exist (pruned or rolled back); nothing to do", task_id)
        return RunOutcome.MISSING
    operation = registry.operation(task.agent, task.operation)
    lease = lease_for(task.agent, task.operation)
    claimed_at = time.monotonic()  # before the lease starts: our deadline never outlasts it
    claim = lifecycle.claim(task_id, worker=worker, queue=queue, lease_seconds=lease)
    if claim is None:
        logger.debug("task %s not claimable (taken, finished or not ready)", task_id)
        return RunOutcome.NOT_CLAIMED
    claimed = claim.task
    bind_log_context(
        correlation_id=claimed.correlation_id,
        workflow_id=claimed.workflow_id,
        agent=claimed.agent,
        operation=claimed.operation,
        task_id=claimed.pk,
        attempt=claimed.attempts,
    )
    if operation is None:
        return _fail(claimed, f"no handler registered for {claimed.agent}.{claimed.operation}", False)

    attempt = AttemptLease(claimed.pk, claimed.fence, lease, claimed_at=claimed_at)
    context = TaskContext(claimed, operation, attempt)
    admission = None
    try:
        if claimed.payload_version not in operation.payload_versions:
            accepted = sorted(operation.payload_versions)
            raise UnsupportedPayloadVersion(
                f"{claimed.agent}.{claimed.operation} accepts payload versions {accepted}, "
                f"not {claimed.payload_version}"
            )
        admission = admit(
            agent=claimed.agent,
            dependency=operation.dependency,
            holder=f"{claimed.pk}:{claimed.fence}",
            lease_seconds=lease,
        )
        attempt.admission = admission  # heartbeats extend its slots with the lease
        with transaction.atomic():
            if not operation.compensation:
                budgets.spend_step(claimed.workflow_id, claimed.correlation_id)
            result = attempt.run(operation.handler, context)
            budgets.add_cost(claimed.workflow_id, context.cost)
            if not lifecycle.complete(claimed.pk, claimed.fence, result=result, cost=context.cost):
                raise LeaseLost(f"task {claimed.pk}: fenced out at completion (fence {claimed.fence})")
        admission.record(ok=True)
    except budgets.BudgetExceeded as error:
        return _stop_for_budget(claimed, str(error))
    except LeaseLost as error:
        logger.warning("%s; effects rolled back", error)
        lifecycle.record_fenced_out(claimed.pk, claimed.fence)
        return RunOutcome.FENCED_OUT
    except DeferTask as deferral:
        lifecycle.defer(claimed.pk, claimed.fence, run_after=deferral.run_after, reason=deferral.reason)
        return RunOutcome.DEFERRED
    except RETRYABLE_ERRORS as error:
        if admission is not None and isinstance(error, DEPENDENCY_ERRORS):
            admission.record(ok=False)  # the dependency failed us: the breaker counts it
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
            admission.release()
    return RunOutcome.SUCCEEDED


def _stop_for_budget(task: AgentTask, reason: str) -> RunOutcome:
    """Do not run the step; tell the workflow once, so its owner stops and compensates."""
    with transaction.atomic():
        if not lifecycle.cancel_claimed(task.pk, task.fence, reason=f"budget exceeded: {reason}"):
            return RunOutcome.FENCED_OUT
        if budgets.mark_exceeded(task.workflow_id, reason):
            events.emit(
                budgets.BUDGET_EVENT,
                {**task.payload, "reason": f"budget exceeded: {reason}"},
                workflow_id=task.workflow_id,
                correlation_id=task.correlation_id,
                version=task.payload_version,
                source_task=task,
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
