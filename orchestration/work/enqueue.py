"""Creating agent tasks: idempotent on the key, published only after commit."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestration.conf import kernel_settings
from orchestration.errors import IdempotencyConflict, KernelError
from orchestration.models import AgentTask, new_workflow_id
from orchestration.registry import registry
from orchestration.work.dispatch import wake_on_commit


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def enqueue(
    agent: str,
    operation: str,
    payload: dict[str, Any] | None = None,
    *,
    idempotency_key: str,
    workflow_id: str = "",
    correlation_id: str = "",
    payload_version: int = 1,
    parent_id: int | None = None,
    event_type: str = "",
    run_after: datetime | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    ttl_seconds: int | None = None,
) -> tuple[AgentTask, bool]:
    """Create the task, or return the one that already has this key; (task, created).

    Without a workflow id the task starts a workflow of its own; without a correlation id
    the workflow id links its logs and traces."""
    definition = registry.operation(agent, operation)
    if definition is None:
        raise KernelError(f"no agent '{agent}' with operation '{operation}' is registered")
    if not idempotency_key:
        raise KernelError(f"enqueue of {agent}.{operation} needs an idempotency key")
    now = timezone.now()
    ttl = ttl_seconds if ttl_seconds is not None else definition.ttl_seconds
    workflow_id = workflow_id or new_workflow_id()
    correlation_id = correlation_id or workflow_id
    with transaction.atomic():
        task, created = AgentTask.objects.get_or_create(
            idempotency_key=idempotency_key,
            defaults={
                "agent": agent,
                "operation": operation,
                "payload": payload or {},
                "payload_version": payload_version,
                "event_type": event_type,
                "workflow_id": workflow_id,
                "correlation_id": correlation_id,
                "parent_id": parent_id,
                "priority": definition.priority if priority is None else priority,
                "max_attempts": max_attempts or definition.max_attempts or kernel_settings().default_max_attempts,
                "run_after": run_after or now,
                "expires_at": now + timedelta(seconds=ttl) if ttl else None,
                # Its agent is woken on commit below; a wake-up lost after the commit is sent
                # again by the sweep once this stamp is older than the re-publish window.
                "dispatched_at": now,
                "created_at": now,
                "updated_at": now,
            },
        )
        if not created and (task.agent, task.operation) != (agent, operation):
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} belongs to task {task.pk} "
                f"({task.agent}.{task.operation}), not {agent}.{operation}"
            )
        if created and task.run_after <= now:
            wake_on_commit([agent])
    return task, created
