"""Every change of a task's status: one conditional statement whose row count decides.

pending -> claimed -> succeeded | pending (retry, backoff) | dead
pending -> cancelled | dead (expired);  dead -> pending (operator replay)

Claims raise the row's fencing token; every later step of that attempt names the
token, so a worker whose lease was reclaimed while it slept changes nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from orchestration.conf import kernel_settings
from orchestration.limits.budgets import default_caps, default_spend_caps
from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus, UsageRecord, WorkflowBudget
from orchestration.registry import registry
from orchestration.work.arrays import text_array
from orchestration.work.dispatch import wake_on_commit
from orchestration.work.events import Keeping, Outbox, emit_dead_event, outbox_statement

TABLE = AgentTask._meta.db_table
ATTEMPTS = TaskAttempt._meta.db_table
BUDGETS = WorkflowBudget._meta.db_table
USAGE = UsageRecord._meta.db_table
UNSET: Any = object()


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never above the cap.

    Jitter spreads the retries of many tasks that failed together (a dependency
    outage) so they do not come back as one storm.
    """
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass
class Budget:
    """What the workflow has spent, as its claim counted it (None for uncounted work)."""

    steps: int
    max_steps: int
    cost: Decimal
    max_cost: Decimal
    stopped: bool
    tokens: int = 0
    max_tokens: int = 0
    money: Decimal = Decimal(0)
    max_money: Decimal = Decimal(0)

    @property
    def exceeded(self) -> str | None:
        """Why this step may not run, or None."""
        if self.steps > self.max_steps:
            return f"step budget spent: step {self.steps} of at most {self.max_steps}"
        if self.cost > self.max_cost:
            return f"cost budget spent: {self.cost} of at most {self.max_cost} units"
        if self.tokens > self.max_tokens:
            return f"token budget spent: {self.tokens} of at most {self.max_tokens} tokens"
        if self.money > self.max_money:
            return f"money budget spent: {self.money} of at most {self.max_money}"
        return None

    @property
    def steps_left(self) -> int:
        return max(self.max_steps - self.steps, 0)


@dataclass
class Claim:
    task: AgentTask
    lease_seconds: int
    budget: Budget | None  # None: the operation does not count against the budget

    @property
    def fence(self) -> int:
        return self.task.fence


READY = "t.status = 'pending' AND t.run_after <= %(now)s AND (t.expires_at IS NULL OR t.expires_at > %(now)s)"

# One statement claims, opens the attempt's span and counts the budget step: the row's
# status and new fencing token decide who won; the span and the step commit with it (the
# claim runs in autocommit, so the attempt is counted even if the worker dies right after).
CLAIM = f"""
    WITH claimed AS (
        UPDATE {TABLE} AS t SET
            status = 'claimed', fence = t.fence + 1, attempts = t.attempts + 1, claimed_by = %(worker)s,
            lease_expires_at = %(now)s + make_interval(secs => coalesce(
                (%(leases)s::jsonb ->> (t.agent || '.' || t.operation))::int, %(default_lease)s)),
            heartbeat_at = %(now)s, updated_at = %(now)s
        WHERE {{picked}} AND {READY}
        RETURNING t.*
    ),
    opened AS (
        INSERT INTO {ATTEMPTS} (task_id, number, fence, agent, operation, correlation_id, worker, queue, status,
            error, started_at)
        SELECT id, attempts, fence, agent, operation, correlation_id, %(worker)s, %(queue)s, 'running', '', %(now)s
        FROM claimed
    ),
    counted AS (
        INSERT INTO {BUDGETS} AS b (workflow_id, correlation_id, steps, cost, tokens, money, max_steps, max_cost,
            exceeded_reason, created_at)
        SELECT workflow_id, min(correlation_id), count(*), 0, 0, 0, %(max_steps)s, %(max_cost)s, '', %(now)s
        FROM claimed WHERE NOT (agent || '.' || operation = ANY(%(uncounted)s::text[]))
        GROUP BY workflow_id
        ON CONFLICT (workflow_id) DO UPDATE SET steps = b.steps + excluded.steps
        RETURNING b.workflow_id, b.steps, b.max_steps, b.cost, b.max_cost, b.exceeded_at IS NOT NULL AS stopped,
            b.tokens, coalesce(b.max_tokens, %(max_tokens)s) AS max_tokens,
            b.money, coalesce(b.max_money, %(max_money)s) AS max_money
    )
    SELECT claimed.*, counted.steps AS budget_steps, counted.max_steps AS budget_max_steps,
        counted.cost AS budget_cost, counted.max_cost AS budget_max_cost, counted.stopped AS budget_stopped,
        counted.tokens AS budget_tokens, counted.max_tokens AS budget_max_tokens,
        counted.money AS budget_money, counted.max_money AS budget_max_money
    FROM claimed LEFT JOIN counted ON counted.workflow_id = claimed.workflow_id
        AND NOT (claimed.agent || '.' || claimed.operation = ANY(%(uncounted)s::text[]))
    ORDER BY claimed.priority DESC, claimed.run_after, claimed.id
"""
ONE = "t.id = %(id)s"
# ARRAY(...), not IN (...): PostgreSQL may run an IN subquery again for each row the UPDATE
# looks at, and with SKIP LOCKED each run finds the rows claimed so far no longer ready and
# locks the next ones, so LIMIT bounds each run, not the claim (a batch of one took every
# ready task). An ARRAY subquery is an InitPlan, run once.
BATCH = f"""t.id = ANY(ARRAY(
    SELECT t.id FROM {TABLE} AS t WHERE t.agent = ANY(%(agents)s::text[]) AND {READY}
    ORDER BY t.priority DESC, t.run_after, t.id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
))"""


def claim(
    task_id: int, *, worker: str, queue: str = "", lease_seconds: int | None = None, now: datetime | None = None
) -> Claim | None:
    """Take a ready pending task; None when it is taken, finished, not ready or gone. Its lease
    is its operation's (``lease_seconds`` overrides it: tools and tests)."""
    claimed = _claim(ONE, {"id": task_id}, worker, queue, lease_seconds, now)
    return claimed[0] if claimed else None


def claim_batch(
    agents: list[str],
    *,
    worker: str,
    limit: int,
    queue: str = "",
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> list[Claim]:
    """Claim up to ``limit`` ready tasks of these agents, highest priority and oldest first;
    concurrent claimers skip each other's rows."""
    return _claim(BATCH, {"agents": text_array(agents), "limit": limit}, worker, queue, lease_seconds, now)


def _claim(
    picked: str,
    params: dict[str, Any],
    worker: str,
    queue: str,
    lease_seconds: int | None,
    now: datetime | None,
) -> list[Claim]:
    now = now or timezone.now()
    config = kernel_settings()
    leases = {} if lease_seconds else registry.leases()
    default_lease = lease_seconds or config.default_lease_seconds
    params = {
        **params,
        **_default_caps(),
        "worker": worker,
        "queue": queue,
        "now": now,
        "leases": json.dumps(leases),
        "default_lease": default_lease,
        "uncounted": text_array(registry.uncounted()),
    }
    claims = []
    with connection.cursor() as cursor:
        cursor.execute(CLAIM.format(picked=picked), params)
        rows = cursor.fetchall()
        names = _claim_columns(cursor, rows)
    for row in rows:
        values = dict(zip(names, row, strict=True))
        task = _task_from(values)
        budget = None
        if values["budget_steps"] is not None:
            budget = Budget(
                values["budget_steps"],
                values["budget_max_steps"],
                values["budget_cost"],
                values["budget_max_cost"],
                values["budget_stopped"],
                values["budget_tokens"],
                values["budget_max_tokens"],
                values["budget_money"],
                values["budget_max_money"],
            )
        lease = leases.get(f"{task.agent}.{task.operation}", default_lease)
        claims.append(Claim(task, lease, budget))
    return claims


_CLAIM_COLUMNS: list[str] = []


def _claim_columns(cursor, rows: list[tuple]) -> list[str]:
    """The names of the claim's result columns, read once per process (and again if the
    table's columns changed under it): psycopg builds an object for each of its ~35 columns
    every time ``description`` is read."""
    if not _CLAIM_COLUMNS or (rows and len(rows[0]) != len(_CLAIM_COLUMNS)):
        _CLAIM_COLUMNS[:] = [column.name for column in cursor.description]
    return _CLAIM_COLUMNS


# The task's columns in the model's order, each with what turns its database value into the
# field's (the JSON fields' decoding).
_TASK_FIELDS = [(field.column, field.get_db_converters(connection)) for field in AgentTask._meta.concrete_fields]
_TASK_ATTNAMES = [field.attname for field in AgentTask._meta.concrete_fields]


def _task_from(values: dict[str, Any]) -> AgentTask:
    """The model of a claimed row (``RETURNING t.*``, by column name). Built directly: the
    ORM's raw() took longer to set up each claimed row than the claim's statement took to run."""
    converted = []
    for column, converters in _TASK_FIELDS:
        value = values[column]
        for convert in converters:
            value = convert(value, None, connection)
        converted.append(value)
    return AgentTask.from_db(connection.alias, _TASK_ATTNAMES, converted)


def _default_caps() -> dict[str, Any]:
    """The caps a workflow's budget row gets when a claim or a completion creates it."""
    max_steps, max_cost = default_caps()
    max_tokens, max_money = default_spend_caps()
    return {"max_steps": max_steps, "max_cost": max_cost, "max_tokens": max_tokens, "max_money": max_money}


def _finish_attempt(task_id: int, fence: int, status: str, error: str = "", now: datetime | None = None) -> None:
    TaskAttempt.objects.filter(task_id=task_id, fence=fence, status=AttemptStatus.RUNNING).update(
        status=status, error=error[:10000], finished_at=now or timezone.now()
    )


def _owned(task_id: int, fence: int):
    return AgentTask.objects.filter(id=task_id, status=TaskStatus.CLAIMED, fence=fence)


def heartbeat(
    task_id: int,
    fence: int,
    *,
    lease_seconds: int | None = None,
    checkpoint: Any = UNSET,
    now: datetime | None = None,
) -> bool:
    """Extend the lease (and store a checkpoint); False when the lease is no longer ours.
    A lease that already ran out is not revived, even before the sweep reclaims it: its
    guard slots expired with it and may have gone to someone else."""
    now = now or timezone.now()
    lease = lease_seconds or kernel_settings().default_lease_seconds
    changes: dict[str, Any] = {
        "lease_expires_at": now + timedelta(seconds=lease),
        "heartbeat_at": now,
        "updated_at": now,
    }
    if checkpoint is not UNSET:
        changes["checkpoint"] = checkpoint
    return _owned(task_id, fence).filter(lease_expires_at__gte=now).update(**changes) == 1


@dataclass(frozen=True)
class Completion:
    """What a completion wrote that its caller acts on after the commit."""

    woken: list[str]  # agents with new tasks that need a wake-up
    kept: list[Claim]  # the new tasks it claimed for the caller to run itself


def complete(
    task_id: int,
    fence: int,
    *,
    result: Any = None,
    cost: Decimal | float = 0,
    workflow_id: str = "",
    outbox: Outbox | None = None,
    inlined: dict | None = None,
    keep: Collection[str] = (),
    keep_at_most: int = 1,
    worker: str = "",
    queue: str = "",
    now: datetime | None = None,
) -> Completion | None:
    """Mark the task succeeded, close its span, add its cost to the workflow's budget and
    write what it emitted (events, subscribers' tasks, inline steps), in the caller's
    transaction and in one statement. Returns the agents that got new tasks (to wake after
    the commit) and the claims of up to ``keep_at_most`` new tasks of the agents in ``keep``
    (in this workflow, the highest priority, then the first), written already claimed by
    ``worker`` with their attempt's span and budget step, for the caller to run next; or None
    when fenced out: then nothing was written, and the caller rolls back."""
    now = now or timezone.now()
    sql, params, kept = completion_statement(
        task_id,
        fence,
        result=result,
        cost=cost,
        workflow_id=workflow_id,
        outbox=outbox or Outbox(),
        inlined=inlined,
        keep=keep,
        keep_at_most=keep_at_most,
        worker=worker,
        queue=queue,
        now=now,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        done, woken, kept_ids, kept_keys, figures, stopped = cursor.fetchone()
    if not done:
        return None
    ids = dict(zip(kept_keys, kept_ids, strict=True))
    budget = None
    if figures is not None:
        steps, max_steps, spent, max_cost, tokens, max_tokens, money, max_money = figures
        budget = Budget(int(steps), int(max_steps), spent, max_cost, stopped, int(tokens), max_tokens, money, max_money)
    return Completion(
        list(woken),
        [_kept_claim(row, ids[row["idempotency_key"]], budget if counted else None) for row, counted in kept],
    )


def completion_statement(
    task_id: int,
    fence: int,
    *,
    result: Any,
    cost: Decimal | float,
    workflow_id: str,
    outbox: Outbox,
    inlined: dict | None,
    keep: Collection[str],
    keep_at_most: int,
    worker: str = "",
    queue: str = "",
    now: datetime,
) -> tuple[str, dict[str, Any], list[tuple[dict, bool]]]:
    """complete's one statement, its parameters and the rows of the tasks it writes claimed,
    each with whether it counts a budget step (compensations do not).
    Its text is the same for every completion and it takes at most 50 parameters in under 4 KiB,
    so psycopg converts it once per process and caches it (MAX_CACHED_STATEMENT_PARAMS,
    MAX_CACHED_STATEMENT_LENGTH): past either limit it parsed the whole statement again on
    every completion (tests/orchestration/test_lifecycle.py)."""
    keeping = None
    if keep and keep_at_most > 0:
        keeping = Keeping(
            keep,
            keep_at_most,
            worker,
            queue,
            workflow_id,
            now,
            registry.leases(),
            kernel_settings().default_lease_seconds,
        )
    ctes, params, kept_rows = outbox_statement(outbox, inlined=inlined, keeping=keeping)
    uncounted = set(registry.uncounted()) if kept_rows else set()
    kept = [(row, f"{row['agent']}.{row['operation']}" not in uncounted) for row in kept_rows]
    params |= {
        **_default_caps(),
        "steps": outbox.counted_steps + sum(counted for _, counted in kept),
        "id": task_id,
        "fence": fence,
        "result": json.dumps(result),
        "cost": Decimal(str(cost)),
        "workflow": workflow_id,
        "now": now,
    }
    # The budget step of a kept task is counted here, as a claim counts it (an upsert: a
    # workflow's first counted step may be a kept task), and the budget it returns is the
    # kept tasks' to check before they run.
    sql = f"""
        WITH done AS (
            UPDATE {TABLE} SET status = 'succeeded', result = %(result)s::jsonb, cost = cost + %(cost)s,
                lease_expires_at = NULL, finished_at = %(now)s, updated_at = %(now)s
            WHERE id = %(id)s AND status = 'claimed' AND fence = %(fence)s
            RETURNING id, correlation_id
        ),
        closed AS (
            UPDATE {ATTEMPTS} SET status = 'succeeded', finished_at = %(now)s
            WHERE task_id = %(id)s AND fence = %(fence)s AND status = 'running' AND EXISTS (SELECT FROM done)
        ),
        spent AS (
            INSERT INTO {BUDGETS} AS b (workflow_id, correlation_id, steps, cost, tokens, money, max_steps, max_cost,
                exceeded_reason, created_at)
            SELECT %(workflow)s, done.correlation_id, %(steps)s, %(cost)s, 0, 0, %(max_steps)s, %(max_cost)s, '',
                %(now)s
            FROM done WHERE %(cost)s > 0 OR %(steps)s > 0
            ON CONFLICT (workflow_id) DO UPDATE SET cost = b.cost + excluded.cost, steps = b.steps + excluded.steps
            RETURNING array[b.steps, b.max_steps, b.cost, b.max_cost, b.tokens, coalesce(b.max_tokens, %(max_tokens)s),
                b.money, coalesce(b.max_money, %(max_money)s)] AS figures, b.exceeded_at IS NOT NULL AS stopped
        ),
        {ctes}
        SELECT EXISTS (SELECT FROM done), array(SELECT agent FROM woken),
            array(SELECT id FROM tk WHERE status = 'claimed'),
            array(SELECT idempotency_key FROM tk WHERE status = 'claimed'),
            (SELECT figures FROM spent), (SELECT stopped FROM spent)
    """
    # Without its indentation the text stays under psycopg's 4 KiB (no literal in it holds
    # two spaces or a line break).
    return " ".join(sql.split()), params, kept


def _kept_claim(row: dict, task_id: int, budget: Budget | None) -> Claim:
    """The claim of a task the completion wrote claimed, built from the row it wrote (keyed by
    column, events.keep): read back, it would be the same."""
    at = datetime.fromisoformat(row["created_at"])
    values = {
        **row,
        "id": task_id,
        "payload": json.loads(json.dumps(row["payload"])),  # as the database holds it
        "created_at": at,
        "expires_at": datetime.fromisoformat(row["expires_at"]) if row["expires_at"] else None,
        "lease_expires_at": datetime.fromisoformat(row["lease_expires_at"]),
        "heartbeat_at": datetime.fromisoformat(row["heartbeat_at"]),
        "reclaims": 0,
        "run_after": at,
        "last_error": "",
        "cost": Decimal(0),
        "dispatched_at": at,
        "updated_at": at,
        "checkpoint": None,
        "result": None,
        "finished_at": None,
    }
    task = AgentTask.from_db(connection.alias, _TASK_ATTNAMES, [values[column] for column, _ in _TASK_FIELDS])
    lease = int((task.lease_expires_at - task.heartbeat_at).total_seconds())
    return Claim(task, lease, budget)


@dataclass(frozen=True)
class Usage:
    """One call to a metered service, as the attempt reported it (TaskContext.add_usage)."""

    service: str
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    billed: bool = True
    key: str = ""  # the call's idempotency key at the service, when it has one


def record_usage(task: AgentTask, fence: int, usage: list[Usage], now: datetime | None = None) -> None:
    """Write what an attempt's calls spent, and add it to its workflow's budget: one statement,
    committed on its own whatever becomes of the attempt (a call that happened is paid for).

    A call the service answered from its idempotency record (``billed=False``) is recorded as
    billed when no earlier record of its key is: the attempt that paid for it died before it
    could say so. So every completion the service billed is counted once, by whoever learned
    of it first."""
    if not usage:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH recorded AS (
                INSERT INTO {USAGE} (task_id, fence, workflow_id, agent, operation, service, prompt_tokens,
                    completion_tokens, cost, billed, idempotency_key, created_at)
                SELECT %(task)s, %(fence)s, %(workflow)s, %(agent)s, %(operation)s, x.service, x.prompt, x.completion,
                    x.cost, x.billed OR (x.key <> '' AND NOT EXISTS (
                        SELECT FROM {USAGE} u WHERE u.idempotency_key = x.key AND u.billed)),
                    x.key, %(now)s
                FROM unnest(%(services)s::text[], %(prompt)s::int[], %(completion)s::int[], %(costs)s::numeric[],
                    %(billed)s::bool[], %(keys)s::text[]) AS x(service, prompt, completion, cost, billed, key)
                RETURNING prompt_tokens, completion_tokens, cost, billed
            )
            UPDATE {BUDGETS} SET
                tokens = tokens + (SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM recorded
                    WHERE billed),
                money = money + (SELECT coalesce(sum(cost), 0) FROM recorded WHERE billed)
            WHERE workflow_id = %(workflow)s""",
            {
                "task": task.pk,
                "fence": fence,
                "workflow": task.workflow_id,
                "agent": task.agent,
                "operation": task.operation,
                "now": now or timezone.now(),
                "services": [item.service for item in usage],
                "prompt": [item.prompt_tokens for item in usage],
                "completion": [item.completion_tokens for item in usage],
                "costs": [item.cost for item in usage],
                "billed": [item.billed for item in usage],
                "keys": [item.key for item in usage],
            },
        )


def fail(
    task_id: int,
    fence: int,
    *,
    error: str,
    retryable: bool,
    attempt: int,
    now: datetime | None = None,
) -> str | None:
    """Record a failed attempt: back to pending with backoff, or dead. Returns the new status."""
    now = now or timezone.now()
    config = kernel_settings()
    delay = backoff_delay(attempt, config.backoff_base_seconds, config.backoff_cap_seconds)
    out_of_attempts = When(attempts__gte=F("max_attempts"), then=Value(TaskStatus.DEAD))
    with transaction.atomic():
        changed = _owned(task_id, fence).update(
            status=Case(out_of_attempts, default=Value(TaskStatus.PENDING)) if retryable else Value(TaskStatus.DEAD),
            run_after=now + timedelta(seconds=delay) if retryable else F("run_after"),
            last_error=error[:10000],
            lease_expires_at=None,
            finished_at=Case(When(attempts__gte=F("max_attempts"), then=Value(now)), default=None)
            if retryable
            else Value(now),
            updated_at=now,
        )
        if changed != 1:
            return None
        task = AgentTask.objects.get(id=task_id)
        attempt_status = AttemptStatus.FAILED if task.status == TaskStatus.DEAD else AttemptStatus.RETRYING
        _finish_attempt(task_id, fence, attempt_status, error, now)
        if task.status == TaskStatus.DEAD:
            emit_dead_event(task)
        return task.status


def defer(task_id: int, fence: int, *, run_after: datetime, reason: str, now: datetime | None = None) -> bool:
    """Put the task off without spending its attempt or its workflow's budget step (a guard
    said "not now": a breaker open for an hour must not stop the workflows that wait on it)."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = _owned(task_id, fence).update(
            status=TaskStatus.PENDING,
            attempts=F("attempts") - 1,
            run_after=run_after,
            last_error=f"deferred: {reason}",
            lease_expires_at=None,
            updated_at=now,
        )
        if changed == 1:
            _finish_attempt(task_id, fence, AttemptStatus.DEFERRED, reason, now)
            _uncount_step(task_id)
        return changed == 1


def _uncount_step(task_id: int) -> None:
    """Give back the budget step this task's claim counted (compensations count none)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {BUDGETS} AS b SET steps = greatest(b.steps - 1, 0)
            FROM {TABLE} AS t
            WHERE t.id = %(id)s AND b.workflow_id = t.workflow_id
                AND NOT (t.agent || '.' || t.operation = ANY(%(uncounted)s::text[]))""",
            {"id": task_id, "uncounted": text_array(registry.uncounted())},
        )


def record_fenced_out(task_id: int, fence: int, *, error: str = "", now: datetime | None = None) -> None:
    """Note on the span that this attempt's effects were rolled back after a reclaim, and the
    error it ended with, if any."""
    reason = "lease was reclaimed before completion; effects rolled back"
    TaskAttempt.objects.filter(task_id=task_id, fence=fence).update(
        status=AttemptStatus.FENCED_OUT,
        error=f"{reason}: {error}"[:10000] if error else reason,
        finished_at=now or timezone.now(),
    )


def cancel_claimed(task_id: int, fence: int, *, reason: str, now: datetime | None = None) -> bool:
    """Withdraw a claimed task without running it (its workflow was stopped)."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = _owned(task_id, fence).update(
            status=TaskStatus.CANCELLED, last_error=reason, lease_expires_at=None, finished_at=now, updated_at=now
        )
        if changed == 1:
            _finish_attempt(task_id, fence, AttemptStatus.FAILED, reason, now)
        return changed == 1


def cancel(task_id: int, *, reason: str = "cancelled", now: datetime | None = None) -> bool:
    """Withdraw a pending task. A claimed or finished one is not touched."""
    now = now or timezone.now()
    return (
        AgentTask.objects.filter(id=task_id, status=TaskStatus.PENDING).update(
            status=TaskStatus.CANCELLED, last_error=reason, finished_at=now, updated_at=now
        )
        == 1
    )


def replay(task_id: int, *, now: datetime | None = None) -> bool:
    """An operator's second chance for a dead task: fresh attempts, same idempotency key,
    so outside effects that did happen are not repeated."""
    now = now or timezone.now()
    with transaction.atomic():
        task = AgentTask.objects.filter(id=task_id, status=TaskStatus.DEAD).first()
        changed = AgentTask.objects.filter(id=task_id, status=TaskStatus.DEAD).update(
            status=TaskStatus.PENDING,
            attempts=0,
            run_after=now,
            expires_at=None,
            finished_at=None,
            dispatched_at=now,
            updated_at=now,
        )
        if changed == 1 and task is not None:
            wake_on_commit([task.agent])
        return changed == 1
