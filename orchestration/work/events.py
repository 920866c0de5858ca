"""Events: how agents talk. Emitted inside the handler's transaction (an outbox);
routing creates the subscribers' tasks in that same transaction."""

from __future__ import annotations

from typing import Any

from orchestration.models import AgentTask, Event
from orchestration.registry import registry
from orchestration.work.enqueue import enqueue


def emit(
    event_type: str,
    payload: dict[str, Any],
    *,
    workflow_id: str,
    correlation_id: str,
    version: int = 1,
    source_task: AgentTask | None = None,
) -> Event:
    """Record the event and create one task per subscribing operation, in its workflow."""
    event = Event.objects.create(
        type=event_type,
        version=version,
        payload=payload,
        workflow_id=workflow_id,
        correlation_id=correlation_id,
        source_task=source_task,
    )
    for route in registry.subscribers(event_type):
        enqueue(
            route.agent,
            route.operation,
            payload,
            payload_version=version,
            # Derived from the event, so routing the same event twice makes no second task.
            idempotency_key=f"event:{event.pk}:{route.agent}.{route.operation}",
            workflow_id=workflow_id,
            correlation_id=correlation_id,
            parent_id=source_task.pk if source_task else None,
            event_type=event_type,
        )
    return event


def emit_dead_event(task: AgentTask) -> Event | None:
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
        source_task=task,
    )
