"""How one run of an agent task ended: what run_task returns, logs, counts and exports."""

from __future__ import annotations

from enum import StrEnum


class RunOutcome(StrEnum):
    SUCCEEDED = "succeeded"  # the handler's effects and the completion committed together
    RETRYING = "retrying"  # failed with a transient error; back to pending after a backoff
    DEAD = "dead"  # failed for good, or out of attempts; its owner is told
    DEFERRED = "deferred"  # a guard said "not now"; the attempt was not spent
    OVER_BUDGET = "over-budget"  # the workflow's budget is spent; the step did not run
    FENCED_OUT = "fenced-out"  # the lease was reclaimed meanwhile; the effects rolled back
    NOT_CLAIMED = "not-claimed"  # taken, finished or not ready: the message was a duplicate
    MISSING = "missing"  # no such task (pruned, or its transaction rolled back)

    @property
    def ran(self) -> bool:
        """Whether an attempt was made (and so counted against its agent)."""
        return self not in {RunOutcome.NOT_CLAIMED, RunOutcome.MISSING}

    @property
    def failed(self) -> bool:
        return self in {RunOutcome.RETRYING, RunOutcome.DEAD, RunOutcome.FENCED_OUT}
