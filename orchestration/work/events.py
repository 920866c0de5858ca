"""Events: how agents talk. An event and the tasks of its subscribers are written in the
transaction of whoever emits it (an outbox), so a directive is a row, never only a message.

Inside a task the events wait in the attempt's Outbox and reach the database with the
task's completion, in the same statement (lifecycle.complete); an event emitted outside any
task (placing or cancelling an order, a task that went dead) is written at once, also in
one statement, whatever the number of its subscribers.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
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


@dataclass(frozen=True)
class Keeping:
    """Which new tasks a completing worker takes for itself (eager follow-ups): up to
    ``at_most`` of ``agents``' tasks in its own workflow, the highest priority first, then the
    first emitted. They are written claimed by ``worker``, with their first attempt's span,
    in the completion's statement (lifecycle.complete counts their budget steps)."""

    agents: Collection[str]
    at_most: int
    worker: str
    queue: str
    workflow_id: str
    now: datetime
    leases: dict[str, int]  # "agent.operation" -> seconds; others get default_lease
    default_lease: int


def subscribers(event: Emitted, *, inlined: Iterable[Route] = ()) -> list[Route]:
    """The routes that get a pending task of their own (those run inline have one already)."""
    skip = set(inlined)
    return [route for route in registry.subscribers(event.type) if route not in skip]


def outbox_statement(
    outbox: Outbox, *, inlined: dict[int, list[Route]] | None = None, keeping: Keeping | None = None
) -> tuple[str, dict, list[dict]]:
    """The CTEs that write an outbox, their parameters (one JSON document of rows per table,
    keyed by column: psycopg adapts Python lists slowly, arrays.py), and the rows of the tasks
    written claimed for ``keeping``. The statement's last CTE, `woken`, lists the agents that got
    a new pending task (each needs a wake-up after the commit). The budget steps of inline runs
    and kept tasks are the completion's to count (lifecycle.complete): one statement may update
    a row only once."""
    inlined = inlined or {}
    events, tasks, inline = _rows(outbox, inlined, kernel_settings().default_max_attempts)
    kept = keep(tasks, keeping) if keeping else []
    params = {
        "events": json.dumps(events),
        "tasks": json.dumps(tasks),
        "inline": json.dumps(inline),
        "queue": keeping.queue if keeping else "",
    }
    sql = f"""
        ev AS (
            INSERT INTO {EVENTS} (id, type, version, payload, workflow_id, correlation_id, source_task_id, created_at)
            SELECT id, type, version, payload, workflow_id, correlation_id, source_task_id, created_at
            FROM json_populate_recordset(NULL::{EVENTS}, %(events)s::json)
        ),
        tk AS (
            INSERT INTO {TASKS} (agent, operation, event_type, payload, payload_version, priority, max_attempts,
                expires_at, idempotency_key, workflow_id, correlation_id, parent_id, created_at,
                status, attempts, fence, claimed_by, lease_expires_at, heartbeat_at,
                reclaims, run_after, last_error, cost, dispatched_at, updated_at)
            SELECT agent, operation, event_type, payload, payload_version, priority, max_attempts,
                expires_at, idempotency_key, workflow_id, correlation_id, parent_id, created_at,
                status, attempts, fence, claimed_by, lease_expires_at, heartbeat_at,
                0, created_at, '', 0, created_at, created_at
            FROM json_populate_recordset(NULL::{TASKS}, %(tasks)s::json)
            RETURNING id, agent, operation, correlation_id, status, claimed_by, heartbeat_at, idempotency_key
        ),
        ksp AS (
            INSERT INTO {ATTEMPTS} (task_id, number, fence, agent, operation, correlation_id, worker, queue,
                status, error, started_at)
            SELECT id, 1, 1, agent, operation, correlation_id, claimed_by, %(queue)s, 'running', '', heartbeat_at
            FROM tk WHERE status = 'claimed'
        ),
        ilx AS (
            SELECT * FROM json_to_recordset(%(inline)s::json) AS x(id bigint, agent text, operation text,
                event_type text, payload jsonb, payload_version smallint, result jsonb, idempotency_key text,
                workflow_id text, correlation_id text, parent_id bigint, worker text, queue text,
                started_at timestamptz, finished_at timestamptz)
        ),
        il AS (
            INSERT INTO {TASKS} (id, agent, operation, event_type, payload, payload_version, result, idempotency_key,
                workflow_id, correlation_id, parent_id, claimed_by, created_at, finished_at,
                status, priority, attempts, max_attempts, reclaims, run_after, fence, last_error, cost, updated_at)
            SELECT id, agent, operation, event_type, payload, payload_version, result, idempotency_key,
                workflow_id, correlation_id, parent_id, worker, started_at, finished_at,
                'succeeded', 0, 1, 1, 0, started_at, 1, '', 0, finished_at
            FROM ilx
        ),
        sp AS (
            INSERT INTO {ATTEMPTS} (task_id, number, fence, agent, operation, correlation_id, worker, queue,
                status, error, started_at, finished_at)
            SELECT id, 1, 1, agent, operation, correlation_id, worker, queue, 'succeeded', '', started_at, finished_at
            FROM ilx
        ),
        woken AS (SELECT DISTINCT agent FROM tk WHERE status = 'pending')
    """
    return sql, params, kept


def flush(outbox: Outbox, *, inlined: dict[int, list[Route]] | None = None) -> list[str]:
    """Write an outbox on its own (events emitted outside a task); returns the agents that
    got new tasks. One statement."""
    if not outbox:
        return []
    ctes, params, _ = outbox_statement(outbox, inlined=inlined)
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
    events: list[dict] = []
    tasks: list[dict] = []
    inline: list[dict] = []
    for event in outbox.events:
        at = event.at.isoformat()
        events.append(
            {
                "id": event.id,
                "type": event.type,
                "version": event.version,
                "payload": event.payload,
                "workflow_id": event.workflow_id,
                "correlation_id": event.correlation_id,
                "source_task_id": event.source_task_id,
                "created_at": at,
            }
        )
        for route in subscribers(event, inlined=inlined.get(event.id, ())):
            operation = registry.operation(route.agent, route.operation)
            ttl = operation.ttl_seconds if operation else None
            tasks.append(
                {
                    "agent": route.agent,
                    "operation": route.operation,
                    "event_type": event.type,
                    "payload": event.payload,
                    "payload_version": event.version,
                    "priority": operation.priority if operation else 0,
                    "max_attempts": (operation.max_attempts if operation else None) or default_attempts,
                    "expires_at": (event.at + timedelta(seconds=ttl)).isoformat() if ttl else None,
                    "idempotency_key": route_key(event.id, route),
                    "workflow_id": event.workflow_id,
                    "correlation_id": event.correlation_id,
                    "parent_id": event.source_task_id,
                    "created_at": at,
                    **PENDING,
                }
            )
    for run in outbox.inline:
        route = Route(run.event.type, run.agent, run.operation.name)
        # The span of an inline run is written from the same row (the `sp` CTE).
        inline.append(
            {
                "id": run.id,
                "agent": run.agent,
                "operation": run.operation.name,
                "event_type": run.event.type,
                "payload": run.event.payload,
                "payload_version": run.event.version,
                "result": run.result,
                "idempotency_key": route_key(run.event.id, route),
                "workflow_id": run.event.workflow_id,
                "correlation_id": run.event.correlation_id,
                "parent_id": run.event.source_task_id,
                "worker": run.worker,
                "queue": run.queue,
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat(),
            }
        )
    return events, tasks, inline


# A new task's claim columns: pending, or claimed by the worker that keeps it (keep()).
PENDING = {
    "status": "pending",
    "attempts": 0,
    "fence": 0,
    "claimed_by": "",
    "lease_expires_at": None,
    "heartbeat_at": None,
}


def keep(tasks: list[dict], keeping: Keeping) -> list[dict]:
    """Mark the tasks ``keeping`` takes as claimed (its first attempt, fence 1, a lease of its
    operation's length) and return them."""
    mine = [row for row in tasks if row["agent"] in keeping.agents and row["workflow_id"] == keeping.workflow_id]
    kept = sorted(mine, key=lambda row: -row["priority"])[: keeping.at_most]  # stable: first emitted first
    for row in kept:
        lease = keeping.leases.get(f"{row['agent']}.{row['operation']}", keeping.default_lease)
        row.update(
            status="claimed",
            attempts=1,
            fence=1,
            claimed_by=keeping.worker,
            lease_expires_at=(keeping.now + timedelta(seconds=lease)).isoformat(),
            heartbeat_at=keeping.now.isoformat(),
        )
    return kept


def route_key(event_id: int, route: Route) -> str:
    """A subscriber task's idempotency key: routing the same event twice makes no second task."""
    return f"event:{event_id}:{route.agent}.{route.operation}"
