"""Test agents for the kernel's tests: domain-free, driven by their payload."""

from __future__ import annotations

import os
import time

from orchestration.autonomous import run_autonomously
from orchestration.errors import PermanentError, RetryableError
from orchestration.registry import AgentDefinition, Operation, register, subscribe
from tests.kernelapp.models import Effect, StepLog


def record(context) -> dict:
    """Write an Effect; optionally sleep first, fail N times, or fail for good."""
    payload = context.payload
    if payload.get("permanent"):
        raise PermanentError(f"refused {payload['key']}")
    if context.attempt <= payload.get("fail_times", 0):
        raise RetryableError(f"transient failure {context.attempt} for {payload['key']}")
    Effect.objects.create(key=payload["key"], pid=os.getpid(), attempt=context.attempt)
    time.sleep(payload.get("sleep", 0))
    if payload.get("emit"):
        context.emit("testkit.recorded", {"key": payload["key"]})
    return {"pid": os.getpid(), "attempt": context.attempt}


def long_job(context) -> dict:
    """Numbered steps with a checkpoint after each: a re-run resumes where it stopped."""
    key, steps = context.payload["key"], context.payload["steps"]
    start = (context.checkpoint or {}).get("next_step", 0)
    for step in range(start, steps):
        time.sleep(context.payload.get("step_seconds", 0.3))
        run_autonomously(StepLog.objects.create, key=key, step=step, attempt=context.attempt)
        context.heartbeat(checkpoint={"next_step": step + 1})
    Effect.objects.create(key=key, pid=os.getpid(), attempt=context.attempt)
    return {"resumed_from": start}


def heard(context) -> None:
    Effect.objects.create(key=f"heard:{context.payload['key']}", pid=os.getpid(), attempt=context.attempt)


def heard_failure(context) -> None:
    Effect.objects.create(key=f"failed:{context.payload['key']}", pid=os.getpid(), attempt=context.attempt)


register(
    AgentDefinition(
        name="testkit",
        responsibility="Records test effects on request.",
        operations=(
            Operation("record", record, max_attempts=3, dead_event="testkit.record_failed"),
            Operation("slow_record", record, lease_seconds=3, max_attempts=3),
            Operation("long_job", long_job, lease_seconds=3, max_attempts=5),
        ),
        emits=frozenset({"testkit.recorded", "testkit.record_failed"}),
        writes=frozenset({"kernelapp.Effect"}),
    )
)
register(
    AgentDefinition(
        name="listener",
        responsibility="Hears what the test kit records.",
        operations=(Operation("hear", heard), Operation("hear_failure", heard_failure)),
        writes=frozenset({"kernelapp.StepLog"}),
    )
)
subscribe("testkit.recorded", "listener", "hear")
subscribe("testkit.record_failed", "listener", "hear_failure")
