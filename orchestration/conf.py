"""The kernel's knobs, read from Django settings (settings/config.py holds each default, once)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed


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
    claim_batch: int  # tasks one claim takes when a worker drains
    drain_seconds: float  # how long one wake-up drains before handing over
    eager_follow_ups: int  # new tasks one completion keeps for its own process (0: none)
    wakeup_ttl_seconds: int  # a waiting wake-up's mark lasts this long (a lost message's mark expires)


@functools.cache
def kernel_settings() -> KernelSettings:
    """Read once per process: the runner asks about twenty times per order (settings are
    fixed once a process has started; a test's override sends setting_changed, below)."""
    return KernelSettings(
        default_lease_seconds=settings.AGENT_TASK_DEFAULT_LEASE_SECONDS,
        max_lease_seconds=settings.AGENT_TASK_MAX_LEASE_SECONDS,
        max_runtime_seconds=settings.AGENT_TASK_MAX_RUNTIME_SECONDS,
        default_max_attempts=settings.AGENT_TASK_MAX_ATTEMPTS,
        backoff_base_seconds=settings.AGENT_TASK_BACKOFF_BASE_SECONDS,
        backoff_cap_seconds=settings.AGENT_TASK_BACKOFF_CAP_SECONDS,
        republish_after_seconds=settings.AGENT_TASK_REPUBLISH_AFTER_SECONDS,
        sweep_batch_size=settings.AGENT_TASK_SWEEP_BATCH_SIZE,
        finished_retention_days=settings.AGENT_TASK_RETENTION_DAYS,
        dead_retention_days=settings.AGENT_TASK_DEAD_RETENTION_DAYS,
        worker_heartbeat_seconds=settings.WORKER_HEARTBEAT_SECONDS,
        worker_gone_after_seconds=settings.WORKER_GONE_AFTER_SECONDS,
        idle_in_transaction_seconds=settings.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
        claim_batch=settings.AGENT_TASK_CLAIM_BATCH,
        drain_seconds=settings.AGENT_TASK_DRAIN_SECONDS,
        eager_follow_ups=settings.AGENT_TASK_EAGER_FOLLOW_UPS,
        wakeup_ttl_seconds=settings.AGENT_TASK_WAKEUP_TTL_SECONDS,
    )


def _forget_kernel_settings(**_kwargs) -> None:
    kernel_settings.cache_clear()


setting_changed.connect(_forget_kernel_settings)
