"""Test agents for the kernel's tests: domain-free, driven by their payload."""

from __future__ import annotations

import os
import time

from django.apps import apps

from orchestration.errors import PermanentError, RetryableError
from orchestration.limits.budgets import BUDGET_EVENT
from orchestration.redis_client import redis_client
from orchestration.registry import AgentDefinition, Operation, register, subscribe
from orchestration.work.autonomous import run_autonomously
from tests.kernelapp.models import Effect, StepLog


def record(context) -> dict:
    """Write an Effect (through a gate, if named); optionally sleep, fail N times, or fail for good."""
    payload = context.payload
    if payload.get("permanent"):
        raise PermanentError(f"refused {payload['key']}")
    if context.attempt <= payload.get("fail_times", 0):
        raise RetryableError(f"transient failure {context.attempt} for {payload['key']}")
    Effect.objects.create(key=payload["key"], pid=os.getpid(), attempt=context.attempt, gate_id=payload.get("gate"))
    time.sleep(payload.get("sleep", 0))
    if payload.get("emit"):
        context.emit("testkit.recorded", {"key": payload["key"]})
    return {"pid": os.getpid(), "attempt": context.attempt}


def call_then_record(context) -> dict:
    """A slow outside call on the first attempt (``sleep`` seconds), then an Effect. As a
    compensating operation it spends no budget step, so no transaction is open while it waits:
    a host cut off meanwhile comes back with a live connection and its late completion reaches
    the database."""
    if context.attempt == 1:
        time.sleep(context.payload["sleep"])
    Effect.objects.create(key=context.payload["key"], pid=os.getpid(), attempt=context.attempt)
    return {"attempt": context.attempt}


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


def work(context) -> dict:
    """Work for ``seconds`` while holding what the payload asks for, heartbeating as told.

    payload: key, seconds; heartbeat "every" (seconds between heartbeats), "keep_alive"
    (the slow part inside context.keeping_alive()) or absent (silent); lock {"model": label,
    "pk": id} to hold that row (select_for_update) for the whole attempt. Start and end go
    to Redis ("work:log"), outside any transaction, so a test sees who ran when.
    """
    payload, client = context.payload, redis_client()
    key, seconds = payload["key"], payload["seconds"]
    client.rpush("work:log", f"start {key} {context.attempt} {time.time()}")
    if payload.get("lock"):
        locked = payload["lock"]
        apps.get_model(locked["model"]).objects.select_for_update().get(pk=locked["pk"])
    Effect.objects.create(key=key, pid=os.getpid(), attempt=context.attempt)
    client.set(f"work:holding:{key}", context.attempt)
    if payload.get("heartbeat") == "keep_alive":
        with context.keeping_alive():
            time.sleep(seconds)
    elif payload.get("heartbeat"):
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            time.sleep(min(payload["heartbeat"], max(ends - time.monotonic(), 0)))
            context.heartbeat()
    else:
        time.sleep(seconds)
    client.rpush("work:log", f"end {key} {context.attempt} {time.time()}")
    return {"attempt": context.attempt}


def heard(context) -> None:
    Effect.objects.create(key=f"heard:{context.payload['key']}", pid=os.getpid(), attempt=context.attempt)


def heard_failure(context) -> None:
    Effect.objects.create(key=f"failed:{context.payload['key']}", pid=os.getpid(), attempt=context.attempt)


def call_widget(context) -> None:
    """A call to the simulated dependency "widget": it logs when each call starts and
    ends, so a test can measure how many ran at once, and fails while told to."""
    client = redis_client()
    client.incr("widget:calls")
    if client.get("widget:failing") == "1":
        raise RetryableError("widget is down")
    client.rpush("widget:log", f"start {context.task_id} {time.time()}")
    time.sleep(context.payload.get("sleep", 0))
    client.rpush("widget:log", f"end {context.task_id} {time.time()}")


def ping(context) -> None:
    context.emit("kit.pinged", {"n": context.payload.get("n", 0) + 1})


def pong(context) -> None:
    context.emit("kit.ponged", {"n": context.payload.get("n", 0) + 1})


def compensate(context) -> None:
    Effect.objects.create(key=f"compensated:{context.workflow_id}", pid=os.getpid(), attempt=context.attempt)


register(
    AgentDefinition(
        name="widgeteer",
        responsibility="Calls the widget service.",
        operations=(Operation("call_widget", call_widget, lease_seconds=3, max_attempts=10, dependency="widget"),),
    )
)
register(
    AgentDefinition(
        name="pinger",
        responsibility="Answers every pong with a ping.",
        operations=(Operation("ping", ping), Operation("undo_loop", compensate, compensation=True)),
        emits=frozenset({"kit.pinged"}),
    )
)
register(
    AgentDefinition(
        name="ponger",
        responsibility="Answers every ping with a pong.",
        operations=(Operation("pong", pong),),
        emits=frozenset({"kit.ponged"}),
    )
)
subscribe("kit.pinged", "ponger", "pong")
subscribe("kit.ponged", "pinger", "ping")
subscribe(BUDGET_EVENT, "pinger", "undo_loop")

register(
    AgentDefinition(
        name="testkit",
        responsibility="Records test effects on request.",
        operations=(
            Operation("record", record, max_attempts=3, dead_event="testkit.record_failed"),
            Operation("slow_record", record, lease_seconds=3, max_attempts=3),
            Operation("long_job", long_job, lease_seconds=3, max_attempts=5),
            Operation("work", work, lease_seconds=3, max_attempts=3, dependency="vault"),
            Operation("call_then_record", call_then_record, lease_seconds=3, max_attempts=5, compensation=True),
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
