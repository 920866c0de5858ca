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
from orchestration.limits.breakers import ALLOW_FUNCTION, RECORD_FUNCTION, CircuitBreaker
from orchestration.limits.buckets import TAKE_FUNCTION, TokenBucket
from orchestration.limits.lua import NOW
from orchestration.limits.policies import concurrency_limit, rate_limit
from orchestration.limits.semaphores import ACQUIRE_FUNCTION, Semaphore
from orchestration.redis_client import redis_client

logger = logging.getLogger(__name__)


# Every guard of one attempt in one round trip. KEYS: the breaker's hash (when ARGV[1] is 1),
# one sorted set per semaphore, the bucket (when ARGV[6] > 0). ARGV: breaker (1/0), cooldown s,
# holder, lease s, semaphores, rate per s, burst, then each semaphore's limit. Returns {guard,
# detail, wait ms}: {'admitted', '', 0}, or the guard that said "not now" (its state, or which
# semaphore) with the slots this script took given back.
_ADMIT = (
    NOW
    + ALLOW_FUNCTION
    + ACQUIRE_FUNCTION
    + TAKE_FUNCTION
    + """
local holder, lease, semaphores = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local first = 1
if ARGV[1] == '1' then
  local verdict = breaker_allow(KEYS[1], tonumber(ARGV[2]))
  if verdict[1] == 0 then return {'breaker', verdict[2], verdict[3]} end
  first = 2
end
local function give_back(taken)
  for j = first, first + taken - 1 do redis.call('ZREM', KEYS[j], holder) end
end
for i = 1, semaphores do
  local wait = semaphore_acquire(KEYS[first + i - 1], holder, tonumber(ARGV[7 + i]), lease)
  if wait > 0 then
    give_back(i - 1)
    return {'semaphore', tostring(i), wait}
  end
end
if tonumber(ARGV[6]) > 0 then
  local wait = bucket_take(KEYS[first + semaphores], tonumber(ARGV[6]), tonumber(ARGV[7]))
  if wait > 0 then
    give_back(semaphores)
    return {'rate', '', wait}
  end
end
return {'admitted', '', 0}
"""
)

# The end of an attempt in one round trip: its slots given back and, when ARGV[2] is 'ok' or
# 'fail', the outcome recorded on the breaker. KEYS: the semaphores', then the breaker's hash
# and window. ARGV: holder, outcome, semaphores, then the breaker's policy (failures, window s,
# successes, failure rate).
_END = (
    NOW
    + RECORD_FUNCTION
    + """
local holder, outcome, semaphores = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 1, semaphores do redis.call('ZREM', KEYS[i], holder) end
if outcome ~= '' then
  return breaker_record(KEYS[semaphores + 1], KEYS[semaphores + 2], outcome == 'ok', tonumber(ARGV[4]),
    tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
end
return ''
"""
)


@dataclass
class Admission:
    """What a task attempt holds while it runs, given back when it ends."""

    holder: str
    semaphores: list[Semaphore]
    breaker: CircuitBreaker | None

    def extend(self, lease_seconds: float) -> bool:
        """Hold every slot for another lease; False when one was lost to another holder."""
        kept = True
        for semaphore in self.semaphores:
            try:
                kept = semaphore.extend(self.holder, lease_seconds) and kept
            except redis.RedisError:  # nobody is admitted while Redis is down either
                logger.warning("could not extend %s", semaphore.name, exc_info=True)
        return kept

    def end(self, *, ok: bool | None) -> None:
        """Give the slots back and tell the breaker how the dependency answered (``ok`` None:
        the attempt ended for another reason, and the breaker hears nothing). One round trip,
        none when the attempt holds no slot and has no breaker."""
        outcome = "" if ok is None or self.breaker is None else ("ok" if ok else "fail")
        if not self.semaphores and not outcome:
            return
        keys = [semaphore.key for semaphore in self.semaphores]
        args: list[str | int | float] = [self.holder, outcome, len(self.semaphores)]
        if outcome and self.breaker is not None:
            policy = self.breaker.policy
            keys += [self.breaker.key, self.breaker.window_key]
            args += [policy.failures, policy.window_seconds, policy.successes, policy.failure_rate]
        try:
            redis_client().eval(_END, len(keys), *keys, *args)
        except redis.RedisError:  # the slots expire with the lease anyway
            logger.warning("could not end the admission of %s", self.holder, exc_info=True)


def defer(seconds: float, reason: str) -> DeferTask:
    # A little slack so a crowd of deferred tasks does not come back in one instant.
    return DeferTask(timezone.now() + timedelta(seconds=max(seconds, 0.2) * 1.1), reason)


def admit(*, agent: str, dependency: str | None, holder: str, lease_seconds: float) -> Admission:
    """Let an attempt run, or raise DeferTask naming the guard that said "not now". Every
    guard in one round trip; none for an attempt that no guard concerns."""
    breaker = CircuitBreaker(dependency) if dependency else None
    semaphores = [
        Semaphore(name, slots)
        for name in [f"agent:{agent}", *([f"dependency:{dependency}"] if dependency else [])]
        if (slots := concurrency_limit(name)) is not None
    ]
    rate = rate_limit(dependency) if dependency else None
    admission = Admission(holder, semaphores, breaker)
    if breaker is None and not semaphores and rate is None:
        return admission
    keys = [*([breaker.key] if breaker else []), *(semaphore.key for semaphore in semaphores)]
    if rate is not None:
        keys.append(TokenBucket(str(dependency), *rate).key)
    args = [
        1 if breaker else 0,
        breaker.policy.cooldown_seconds if breaker else 0,
        holder,
        lease_seconds,
        len(semaphores),
        rate[0] if rate else 0,
        rate[1] if rate else 0,
        *(semaphore.limit for semaphore in semaphores),
    ]
    guard, detail, wait_ms = redis_client().eval(_ADMIT, len(keys), *keys, *args)
    wait = float(wait_ms) / 1000
    if guard == "breaker":
        # A half-open trial slot taken here but not used frees itself after the cool-down.
        raise defer(wait, f"circuit breaker for {dependency} is {detail}")
    if guard == "semaphore":
        refused = semaphores[int(detail) - 1]
        raise defer(min(wait, 1.0), f"concurrency limit of {refused.limit} reached for {refused.name}")
    if guard == "rate" and rate is not None:
        raise defer(wait, f"rate limit of {rate[0]:g}/s reached for {dependency}")
    return admission
