"""The kernel's knobs, read from Django settings with defaults that suit production."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class KernelSettings:
    default_lease_seconds: int
    max_lease_seconds: int
    max_runtime_seconds: int
    default_max_attempts: int
    backoff_base_seconds: float
    backoff_cap_seconds: float
    republish_after_seconds: int
    sweep_batch_size: int
    finished_retention_days: int
    dead_retention_days: int
    worker_heartbeat_seconds: int
    worker_gone_after_seconds: int
    idle_in_transaction_seconds: int  # 0: the database ends no idle transaction


def kernel_settings() -> KernelSettings:
    get = lambda name, default: getattr(settings, name, default)  # noqa: E731
    return KernelSettings(
        default_lease_seconds=get("AGENT_TASK_DEFAULT_LEASE_SECONDS", 60),
        max_lease_seconds=get("AGENT_TASK_MAX_LEASE_SECONDS", 600),
        max_runtime_seconds=get("AGENT_TASK_MAX_RUNTIME_SECONDS", 1800),
        default_max_attempts=get("AGENT_TASK_MAX_ATTEMPTS", 5),
        backoff_base_seconds=get("AGENT_TASK_BACKOFF_BASE_SECONDS", 1.0),
        backoff_cap_seconds=get("AGENT_TASK_BACKOFF_CAP_SECONDS", 300.0),
        republish_after_seconds=get("AGENT_TASK_REPUBLISH_AFTER_SECONDS", 30),
        sweep_batch_size=get("AGENT_TASK_SWEEP_BATCH_SIZE", 500),
        finished_retention_days=get("AGENT_TASK_RETENTION_DAYS", 7),
        dead_retention_days=get("AGENT_TASK_DEAD_RETENTION_DAYS", 30),
        worker_heartbeat_seconds=get("WORKER_HEARTBEAT_SECONDS", 10),
        worker_gone_after_seconds=get("WORKER_GONE_AFTER_SECONDS", 60),
        idle_in_transaction_seconds=get("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", 0),
    )
