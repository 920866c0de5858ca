"""What a handler sees of its task, and how it talks back to the kernel.

This is the contract agent authors meet: a handler is ``Callable[[TaskContext], dict | None]``
(orchestration.registry.Handler). It reads the payload, writes its effects in the
transaction the kernel opened for it, emits events, heartbeats when it works long, and
returns a small JSON result.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

from orchestration.models import AgentTask
from orchestration.registry import Operation
from orchestration.work import events, lifecycle
from orchestration.work.leases import AttemptLease


class TaskContext:
    """What a handler sees of its task, and how it talks back to the kernel."""

    def __init__(self, task: AgentTask, operation: Operation, lease: AttemptLease):
        self.task = task
        self.operation = operation
        self.lease = lease
        self.cost = Decimal(0)

    @property
    def task_id(self) -> int:
        return self.task.pk

    @property
    def payload(self) -> dict[str, Any]:
        return self.task.payload

    @property
    def payload_version(self) -> int:
        return self.task.payload_version

    @property
    def event_type(self) -> str:
        return self.task.event_type

    @property
    def workflow_id(self) -> str:
        """The workflow this task belongs to: its budget, its stop, its trace."""
        return self.task.workflow_id

    @property
    def correlation_id(self) -> str:
        """The caller's id (or the workflow's), for logs and traces; workflows may share it."""
        return self.task.correlation_id

    @property
    def attempt(self) -> int:
        return self.task.attempts

    @property
    def fence(self) -> int:
        return self.task.fence

    @property
    def checkpoint(self) -> Any:
        """What an earlier attempt saved with heartbeat(checkpoint=...): resume from here."""
        return self.task.checkpoint

    def emit(self, event_type: str, payload: dict[str, Any], version: int = 1) -> None:
        """Record an event in this task's transaction; its subscribers' tasks come with it."""
        events.emit(
            event_type,
            payload,
            workflow_id=self.workflow_id,
            correlation_id=self.correlation_id,
            version=version,
            source_task=self.task,
        )

    def heartbeat(self, checkpoint: Any = lifecycle.UNSET) -> None:
        """Say this attempt is alive: its lease, guard slots, deadline and database session
        last another lease. Call it at least every third of the lease (or wait inside
        keeping_alive()); a checkpoint saved here survives this attempt's rollback.
        Raises LeaseLost when the lease was already gone."""
        self.lease.heartbeat(checkpoint)
        if checkpoint is not lifecycle.UNSET:
            self.task.checkpoint = checkpoint

    def keeping_alive(self) -> AbstractContextManager[None]:
        """``with context.keeping_alive(): slow_call()`` heartbeats from a background thread
        every third of the lease while the block runs, and stops when it ends."""
        return self.lease.keeping_alive()

    def add_cost(self, units: Decimal | float | int) -> None:
        self.cost += Decimal(str(units))
