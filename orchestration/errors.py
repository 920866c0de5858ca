"""What a handler raises to tell the kernel how its attempt ended."""

from __future__ import annotations

from datetime import datetime


class KernelError(Exception):
    """Base of the kernel's own errors."""


class RetryableError(KernelError):
    """A transient failure: try again later, with backoff, while attempts remain."""


class InlineStepFailed(RetryableError):
    """A step run inline in its emitter's transaction failed: the emitter's effects roll back
    with it, and its next attempt gives the step a task of its own, to fail on its own."""


class OutsideCallInTransaction(KernelError):
    """context.outside() was entered with a database transaction open: a slow call must hold
    no row lock and no connection while it waits (run it in the operation's `call`)."""


class PermanentError(KernelError):
    """A failure that another attempt cannot fix: the task goes dead and its owner compensates."""


class UnsupportedPayloadVersion(PermanentError):
    """The task's payload has a schema version its handler does not declare."""


class DeferTask(KernelError):
    """Not now, and not the task's fault (an open breaker, a full semaphore): no attempt is spent."""

    def __init__(self, run_after: datetime, reason: str):
        super().__init__(reason)
        self.run_after = run_after
        self.reason = reason


class LeaseLost(KernelError):
    """Our fencing token is stale: the lease was reclaimed and someone else owns the task."""


class LeaseExpired(BaseException):
    """The attempt's deadline passed: no heartbeat within the lease. The kernel raises it in
    the handler (orchestration.work.deadline) and retries the task.

    A BaseException, like KeyboardInterrupt: a handler's ``except Exception`` must not swallow
    the kernel stopping it.
    """

    default = "the lease ran out: no heartbeat within the lease"

    def __str__(self) -> str:
        return super().__str__() or self.default


class RuntimeCeilingReached(LeaseExpired):
    """The attempt ran for AGENT_TASK_MAX_RUNTIME_SECONDS, the ceiling heartbeats cannot move."""

    default = "the attempt ran for AGENT_TASK_MAX_RUNTIME_SECONDS, the most any attempt may, heartbeats or not"


class IdempotencyConflict(KernelError):
    """An idempotency key was reused for different work."""
