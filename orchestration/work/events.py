"""Events: how agents talk. An event and the tasks of its subscribers are written in the
transaction of whoever emits it (an outbox), so a directive is a row, never only a message.

Inside a task the events wait in the attempt's Outbox and reach the database with the
task's completion, in the same statement (lifecycle.complete); an event emitted outside any
task (placing or cancelling an order, a task that went dead) is written at once, also in
one statement, whatever the number of its subscribers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from orchestration.conf import kernel_settings
from orchestration.models import AgentTask, Event, TaskAttempt
from orchestration.registry import Operation, Route, registry
from orchestration.work.ids import event_ids

TASKS = AgentTask._meta.db_table
EVENTS = Event._meta.db_table
ATTEMPTS = TaskAttempt._meta.db_table


@dataclass
class Emitted:
    """An event waiting in an outbox, with the id it will have."""

    id: int
    type: str
    payload: dict[str, Any]
    version: int
    workflow_id: str
    correlation_id: str
    source_task_id: int | None
    at: datetime


@dataclass
class InlineRun:
    """A step that ran inside its emitter's transaction: its task row and span, written as
    finished with the emitter's completion."""

    id: int
    operation: Operation
    agent: str
    event: Emitted
    result: Any
    worker: str
    queue: str
    started_at: datetime
    finished_at: datetime
    counted: bool  # spent a budget step


@dataclass
class Outbox:
    """What one transaction emits: events, their subscribers' tasks, inline steps."""

    events: list[Emitted] = field(default_factory=list)
    inline: list[InlineRun] = field(default_factory=list)

    def add(
        self,
        event_type: str,
        payload: dict[str, Any],
        *,
        workflow_id: str,
        correlation_id: str,
        version: int = 1,
        source_task_id: int | None = None,
    ) -> Emitted:
        emitted = Emitted(
            event_ids.take()[0],
            event_type,
            payload,
            version,
            workflow_id,
            correlation_id,
            source_task_id,
            timezone.now(),
        )
        self.events.append(emitted)
        return emitted

    def __bool__(self) -> bool:
        return bool(self.events or self.inline)

    @property
    def counted_steps(self) -> int:
        """The budget steps its inline runs spent."""
        return sum(run.counted for run in self.inline)


def subscribers(event: Emitted, *, inlined: Iterable[Route] = ()) -> list[Route]:
    """The routes that get a pending task of their own (those run inline have one already)."""
    skip = set(inlined)
    return [route for route in registry.subscribers(event.type) if route not in skip]


def outbox_statement(outbox: Outbox, *, inlined: dict[int, list[Route]] | None = None) -> tuple[str, dict]:
    """The CTEs that write an outbox, and their parameters. The statement's last CTE, `woken`,
    lists the agents that got a new pending task (each needs a wake-up after the commit). The
    budget steps of inline runs are the completion's to count (lifecycle.complete): one
    statement may update a row only once."""
    inlined = inlined or {}
    config = kernel_settings()
    events, tasks, inline, span_queues = _rows(outbox, inlined, config.default_max_attempts)
    params = {
        **_columns("ev", events, 8),
        **_columns("tk", tasks, 13),
        **_columns("il", inline, 14),
        # An inline run's span reads its task's columns (il*): no parameters of its own but the
        # queue, so the completion stays within psycopg's cache (lifecycle.completion_statement).
        "sp_queues": span_queues,
    }
    sql = f"""
        ev AS (
            INSERT INTO {EVENTS} (id, type, version, payload, workflow_id, correlation_id, source_task_id, created_at)
            SELECT * FROM unnest(%(ev0)s::bigint[], %(ev1)s::text[], %(ev2)s::smallint[], %(ev3)s::jsonb[],
                %(ev4)s::text[], %(ev5)s::text[], %(ev6)s::bigint[], %(ev7)s::timestamptz[])
        ),
        tk AS (
            INSERT INTO {TASKS} (agent, operation, event_type, payload, payload_version, priority, max_attempts,
                expires_at, idempotency_key, workflow_id, correlation_id, parent_id, created_at,
                status, attempts, reclaims, run_after, claimed_by, fence, last_error, cost, dispatched_at, updated_at)
            SELECT a, o, et, p, v, pr, ma, ex, k, wf, co, par, at,
                'pending', 0, 0, at, '', 0, '', 0, at, at
            FROM unnest(%(tk0)s::text[], %(tk1)s::text[], %(tk2)s::text[], %(tk3)s::jsonb[], %(tk4)s::smallint[],
                %(tk5)s::smallint[], %(tk6)s::int[], %(tk7)s::timestamptz[], %(tk8)s::text[], %(tk9)s::text[],
                %(tk10)s::text[], %(tk11)s::bigint[], %(tk12)s::timestamptz[])
                AS x(a, o, et, p, v, pr, ma, ex, k, wf, co, par, at)
            RETURNING id, agent, priority
        ),
        il AS (
            INSERT INTO {TASKS} (id, agent, operation, event_type, payload, payload_version, result, idempotency_key,
                workflow_id, correlation_id, parent_id, claimed_by, created_at, finished_at,
                status, priority, attempts, max_attempts, reclaims, run_after, fence, last_error, cost, updated_at)
            SELECT i, a, o, et, p, v, r, k, wf, co, par, w, st, fin,
                'succeeded', 0, 1, 1, 0, st, 1, '', 0, fin
            FROM unnest(%(il0)s::bigint[], %(il1)s::text[], %(il2)s::text[], %(il3)s::text[], %(il4)s::jsonb[],
                %(il5)s::smallint[], %(il6)s::jsonb[], %(il7)s::text[], %(il8)s::text[], %(il9)s::text[],
                %(il10)s::bigint[], %(il11)s::text[], %(il12)s::timestamptz[], %(il13)s::timestamptz[])
                AS x(i, a, o, et, p, v, r, k, wf, co, par, w, st, fin)
        ),
        sp AS (
            INSERT INTO {ATTEMPTS} (task_id, number, fence, agent, operation, correlation_id, worker, queue,
                status, error, started_at, finished_at)
            SELECT i, 1, 1, a, o, co, w, q, 'succeeded', '', st, fin
            FROM unnest(%(il0)s::bigint[], %(il1)s::text[], %(il2)s::text[], %(il9)s::text[], %(il11)s::text[],
                %(sp_queues)s::text[], %(il12)s::timestamptz[], %(il13)s::timestamptz[])
                AS x(i, a, o, co, w, q, st, fin)
        ),
        woken AS (SELECT DISTINCT agent FROM tk)
    """
    return sql, params


def flush(outbox: Outbox, *, inlined: dict[int, list[Route]] | None = None) -> list[str]:
    """Write an outbox on its own (events emitted outside a task); returns the agents that
    got new tasks. One statement."""
    if not outbox:
        return []
    ctes, params = outbox_statement(outbox, inlined=inlined)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {ctes} SELECT array(SELECT agent FROM woken)", params)
        return list(cursor.fetchone()[0])


def emit(
    event_type: str,
    payload: dict[str, Any],
    *,
    workflow_id: str,
    correlation_id: str,
    version: int = 1,
    source_task_id: int | None = None,
) -> int:
    """Record an event and its subscribers' tasks now, in the caller's transaction, and wake
    their agents once it commits. Returns the event's id. For events outside a task: inside
    one, use TaskContext.emit (they go with the completion)."""
    from orchestration.work.dispatch import wake_on_commit

    outbox = Outbox()
    emitted = outbox.add(
        event_type,
        payload,
        workflow_id=workflow_id,
        correlation_id=correlation_id,
        version=version,
        source_task_id=source_task_id,
    )
    wake_on_commit(flush(outbox))
    return emitted.id


def emit_dead_event(task: AgentTask) -> int | None:
    """Tell the owning workflow that a task failed for good, so it can compensate."""
    operation = registry.operation(task.agent, task.operation)
    if operation is None or not operation.dead_event:
        return None
    payload = {
        **task.payload,
        "failed_task_id": task.pk,
        "failed_operation": f"{task.agent}.{task.operation}",
        "error": task.last_error[:2000],
    }
    return emit(
        operation.dead_event,
        payload,
        workflow_id=task.workflow_id,
        correlation_id=task.correlation_id,
        version=task.payload_version,
        source_task_id=task.pk,
    )


# --- Rows, column by column ------------------------------------------------------------


def _rows(outbox: Outbox, inlined: dict[int, list[Route]], default_attempts: int):
    events, tasks, inline, span_queues = [], [], [], []
    for event in outbox.events:
        payload = json.dumps(event.payload)
        events.append(
            (
                event.id,
                event.type,
                event.version,
                payload,
                event.workflow_id,
                event.correlation_id,
                event.source_task_id,
                event.at,
            )
        )
        for route in subscribers(event, inlined=inlined.get(event.id, ())):
            operation = registry.operation(route.agent, route.operation)
            ttl = operation.ttl_seconds if operation else None
            tasks.append(
                (
                    route.agent,
                    route.operation,
                    event.type,
                    payload,
                    event.version,
                    operation.priority if operation else 0,
                    (operation.max_attempts if operation else None) or default_attempts,
                    event.at + timedelta(seconds=ttl) if ttl else None,
                    route_key(event.id, route),
                    event.workflow_id,
                    event.correlation_id,
                    event.source_task_id,
                    event.at,
                )
            )
    for run in outbox.inline:
        route = Route(run.event.type, run.agent, run.operation.name)
        inline.append(
            (
                run.id,
                run.agent,
                run.operation.name,
                run.event.type,
                json.dumps(run.event.payload),
                run.event.version,
                json.dumps(run.result),
                route_key(run.event.id, route),
                run.event.workflow_id,
                run.event.correlation_id,
                run.event.source_task_id,
                run.worker,
                run.started_at,
                run.finished_at,
            )
        )
        span_queues.append(run.queue)  # the rest of an inline run's span is in its task's row
    return events, tasks, inline, span_queues


def route_key(event_id: int, route: Route) -> str:
    """A subscriber task's idempotency key: routing the same event twice makes no second task."""
    return f"event:{event_id}:{route.agent}.{route.operation}"


def _columns(prefix: str, rows: list[tuple], width: int) -> dict[str, list]:
    """Rows to one array per column, as `unnest` takes them (%(prefix0)s, %(prefix1)s, ...)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in range(width)]
    return {f"{prefix}{index}": list(column) for index, column in enumerate(columns)}
