"""Backpressure: refuse new work at the front of a workflow when its backlog is too deep,
instead of queuing without bound. Callers turn Overloaded into 503 + Retry-After."""

from __future__ import annotations

from orchestration.errors import KernelError
from orchestration.models import AgentTask, TaskStatus


class Overloaded(KernelError):
    """The backlog passed its limit; try again after ``retry_after`` seconds."""

    def __init__(self, agent: str, operation: str, backlog: int, limit: int, retry_after: int):
        super().__init__(
            f"overloaded: {backlog} or more {agent}.{operation} tasks pending (limit {limit}); "
            f"retry after {retry_after}s"
        )
        self.backlog = backlog
        self.limit = limit
        self.retry_after = retry_after


def pending_backlog(agent: str, operation: str, cap: int) -> int:
    """Pending tasks of this operation, counted up to ``cap`` (so a huge backlog costs no more)."""
    ids = AgentTask.objects.filter(status=TaskStatus.PENDING, agent=agent, operation=operation).values("id")[:cap]
    return len(ids)


def refuse_when_backlogged(agent: str, operation: str, limit: int, retry_after: int = 5) -> None:
    backlog = pending_backlog(agent, operation, limit)
    if backlog >= limit:
        raise Overloaded(agent, operation, backlog, limit, retry_after)
