"""Admission of one task attempt: the breaker, the semaphores and the rate limit it must pass.

A guard that says "not now" raises DeferTask: the task goes back to pending with a
run_after and keeps its attempt."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.utils import timezone

from orchestration.errors import DeferTask
from orchestration.limits.breakers import CircuitBreaker
from orchestration.limits.buckets import TokenBucket
from orchestration.limits.policies import concurrency_limit, rate_limit
from orchestration.limits.semaphores import Semaphore

logger = logging.getLogger(__name__)


@dataclass
class Admission:
    """What a task attempt holds while it runs, released when it ends."""

    holder: str
    semaphores: list[Semaphore]
    breaker: CircuitBreaker | None

    def release(self) -> None:
        for semaphore in self.semaphores:
            try:
                semaphore.release(self.holder)
            except redis.RedisError:  # the slot expires with the lease anyway
                logger.warning("could not release %s", semaphore.name, exc_info=True)

    def extend(self, lease_seconds: float) -> bool:
        """Hold every slot for another lease; False when one was lost to another holder."""
        kept = True
        for semaphore in self.semaphores:
            try:
                kept = semaphore.extend(self.holder, lease_seconds) and kept
            except redis.RedisError:  # nobody is admitted while Redis is down either
                logger.warning("could not extend %s", semaphore.name, exc_info=True)
        return kept

    def record(self, ok: bool) -> None:
        if self.breaker is not None:
            try:
                self.breaker.record(ok)
            except redis.RedisError:
                logger.warning("could not record a %s result", self.breaker.dependency, exc_info=True)


def defer(seconds: float, reason: str) -> DeferTask:
    # A little slack so a crowd of deferred tasks does not come back in one instant.
    return DeferTask(timezone.now() + timedelta(seconds=max(seconds, 0.2) * 1.1), reason)


def admit(*, agent: str, dependency: str | None, holder: str, lease_seconds: float) -> Admission:
    """Let an attempt run, or raise DeferTask naming the guard that said "not now"."""
    admission = Admission(holder, [], None)
    try:
        if dependency:
            breaker = CircuitBreaker(dependency)
            allowed, state, retry_in = breaker.allow()
            if not allowed:
                raise defer(retry_in, f"circuit breaker for {dependency} is {state}")
            admission.breaker = breaker
        for name in [f"agent:{agent}", *([f"dependency:{dependency}"] if dependency else [])]:
            slots = concurrency_limit(name)
            if slots is None:
                continue
            semaphore = Semaphore(name, slots)
            wait = semaphore.acquire(holder, lease_seconds)
            if wait:
                raise defer(min(wait, 1.0), f"concurrency limit of {slots} reached for {name}")
            admission.semaphores.append(semaphore)
        rate = rate_limit(dependency) if dependency else None
        if rate is not None:
            wait = TokenBucket(str(dependency), *rate).take()
            if wait:
                raise defer(wait, f"rate limit of {rate[0]:g}/s reached for {dependency}")
    except DeferTask:
        # A half-open trial slot taken here but not used frees itself after the cool-down.
        admission.release()
        raise
    return admission
