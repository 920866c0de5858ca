"""Guards shared by the whole fleet, their state in Redis: circuit breakers, concurrency
semaphores and token-bucket rate limits.

Each guard is one Lua script, so a decision and its bookkeeping happen atomically on
the Redis server, on Redis's own clock (TIME), whatever the number of workers and hosts.

Why hand-written: the good libraries solve neighbouring problems. `limits` offers
fixed and moving windows but neither a token bucket nor the "when may I try again"
answer we need to defer a task through run_after; redis-py's Lock is a mutex, not a
counting semaphore whose slots expire with their holder's lease; pybreaker keeps a
breaker per process (its Redis storage is not atomic across processes). Each script
here is a few lines and is tested across real worker processes.

A guard that says "not now" raises DeferTask: the task goes back to pending with a
run_after and keeps its attempt.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.utils import timezone

from orchestration.errors import DeferTask

logger = logging.getLogger(__name__)

_client: redis.Redis | None = None
_client_pid: int | None = None


def redis_client() -> redis.Redis:
    """One client per process (a forked worker child gets its own)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, decode_responses=True)
        _client_pid = os.getpid()
    return _client


# --- Limits, from settings (GUARD_LIMITS, overridable by the environment) -------------


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 5  # failures within the window that open the breaker...
    failure_rate: float = 0.0  # ...when they are also at least this share of its calls
    window_seconds: float = 30
    cooldown_seconds: float = 15  # open for this long, then one trial call at a time
    successes: int = 2  # successful trials that close it again


def limits() -> dict:
    return getattr(settings, "GUARD_LIMITS", {}) or {}


def breaker_policy(dependency: str) -> BreakerPolicy:
    return BreakerPolicy(**limits().get("breakers", {}).get(dependency, {}))


def concurrency_limit(name: str) -> int | None:
    """Slots for "agent:<name>" or "dependency:<name>"; None means unlimited."""
    return limits().get("concurrency", {}).get(name)


def rate_limit(dependency: str) -> tuple[float, float] | None:
    """(calls per second, burst) for a dependency; None means unlimited."""
    value = limits().get("rates", {}).get(dependency)
    return (float(value[0]), float(value[1])) if value else None


# --- Circuit breaker -------------------------------------------------------------------

# KEYS[1] = breaker hash. ARGV: cooldown. Returns {allowed, state, retry_in_ms}.
# closed: allow. open: deny until the cooldown ends, then become half-open.
# half-open: allow one trial at a time (the trial slot expires after the cooldown).
_BREAKER_ALLOW = """
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local forced = redis.call('HGET', KEYS[1], 'forced')
if forced == 'open' then return {0, 'forced_open', tonumber(ARGV[1]) * 1000} end
if forced == 'closed' or state == 'closed' then return {1, 'closed', 0} end
local cooldown = tonumber(ARGV[1]) * 1000
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
  if now - opened < cooldown then return {0, 'open', cooldown - (now - opened)} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'trial_until', 0, 'trial_successes', 0)
  state = 'half_open'
end
local trial_until = tonumber(redis.call('HGET', KEYS[1], 'trial_until') or '0')
if now < trial_until then return {0, 'half_open', trial_until - now} end
redis.call('HSET', KEYS[1], 'trial_until', now + cooldown)
return {1, 'half_open', 0}
"""

# KEYS[1] = breaker hash, KEYS[2] = the window's outcomes, counted per second
# ("<second>:ok" / "<second>:fail" fields, so memory stays bounded by the window's length).
# ARGV: ok (1/0), failures threshold, window s, successes needed, failure rate (0..1).
# Closed opens when the window holds at least `failures` failures and they are at least
# `failure_rate` of its calls: a busy dependency with a few failures stays closed.
_BREAKER_RECORD = """
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local ok = ARGV[1] == '1'
if state == 'half_open' then
  if ok then
    local n = redis.call('HINCRBY', KEYS[1], 'trial_successes', 1)
    redis.call('HSET', KEYS[1], 'trial_until', 0)
    if n >= tonumber(ARGV[4]) then
      redis.call('HSET', KEYS[1], 'state', 'closed'); redis.call('DEL', KEYS[2])
      return 'closed'
    end
    return 'half_open'
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'trial_until', 0)
  redis.call('HINCRBY', KEYS[1], 'times_opened', 1)
  return 'open'
end
if state == 'open' then return state end
local window = math.ceil(tonumber(ARGV[3]))
local second = tonumber(t[1])
redis.call('HINCRBY', KEYS[2], second .. (ok and ':ok' or ':fail'), 1)
redis.call('EXPIRE', KEYS[2], window + 1)
if ok then return 'closed' end
local calls, failures = 0, 0
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  local at, outcome = string.match(fields[i], '^(%d+):(%a+)$')
  if tonumber(at) <= second - window then
    redis.call('HDEL', KEYS[2], fields[i])
  else
    local count = tonumber(fields[i + 1])
    calls = calls + count
    if outcome == 'fail' then failures = failures + count end
  end
end
if failures >= tonumber(ARGV[2]) and failures >= tonumber(ARGV[5]) * calls then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  redis.call('HINCRBY', KEYS[1], 'times_opened', 1)
  redis.call('DEL', KEYS[2])
  return 'open'
end
return 'closed'
"""


class CircuitBreaker:
    """Closed, open when failures in a window pass a count and a share of the calls,
    half-open after a cool-down, closed after M successful trials."""

    def __init__(self, dependency: str, policy: BreakerPolicy | None = None):
        self.dependency = dependency
        self.policy = policy or breaker_policy(dependency)
        self.key = f"guard:breaker:{dependency}"
        self.window_key = f"guard:breaker:{dependency}:window"

    def allow(self) -> tuple[bool, str, float]:
        """(allowed, state, seconds until it may allow)."""
        allowed, state, retry_ms = redis_client().eval(_BREAKER_ALLOW, 1, self.key, self.policy.cooldown_seconds)
        return bool(allowed), state, float(retry_ms) / 1000

    def record(self, ok: bool) -> str:
        return redis_client().eval(
            _BREAKER_RECORD,
            2,
            self.key,
            self.window_key,
            1 if ok else 0,
            self.policy.failures,
            self.policy.window_seconds,
            self.policy.successes,
            self.policy.failure_rate,
        )

    def state(self) -> dict:
        raw = redis_client().hgetall(self.key)
        forced = raw.get("forced")
        return {
            "dependency": self.dependency,
            "state": f"forced_{forced}" if forced else raw.get("state", "closed"),
            "times_opened": int(raw.get("times_opened", 0)),
        }

    def force(self, state: str | None) -> None:
        """An operator's override: "open", "closed", or None to let it decide again."""
        if state not in {"open", "closed", None}:
            raise ValueError(f"a breaker can be forced 'open' or 'closed', not {state!r}")
        if state is None:
            redis_client().hdel(self.key, "forced")
        else:
            redis_client().hset(self.key, mapping={"forced": state, "state": "closed" if state == "closed" else "open"})
            if state == "closed":
                redis_client().delete(self.window_key)

    def reset(self) -> None:
        redis_client().delete(self.key, self.window_key)


def all_breakers() -> list[dict]:
    names = set(limits().get("breakers", {}))
    for key in redis_client().scan_iter("guard:breaker:*"):
        if not key.endswith(":window"):
            names.add(key.removeprefix("guard:breaker:"))
    return [CircuitBreaker(name).state() for name in sorted(names)]


# --- Semaphore whose slots expire with the holder's lease --------------------------------

# KEYS[1] = sorted set of holders scored by lease expiry (ms). ARGV: holder, limit, lease s.
# Returns 0 when admitted, else milliseconds until the earliest slot frees.
_SEMAPHORE_ACQUIRE = """
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]) * 1000, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 1000 + 60000)
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - now)
"""


class Semaphore:
    """A fleet-wide counting semaphore: a killed holder's slot frees when its lease ends."""

    def __init__(self, name: str, limit: int):
        self.name = name
        self.limit = limit
        self.key = f"guard:semaphore:{name}"

    def acquire(self, holder: str, lease_seconds: float) -> float:
        """0 when admitted, else seconds until a slot may free."""
        return float(redis_client().eval(_SEMAPHORE_ACQUIRE, 1, self.key, holder, self.limit, lease_seconds)) / 1000

    def extend(self, holder: str, lease_seconds: float) -> bool:
        """Keep the holder's slot for another lease (a heartbeat); False when it was lost.

        The acquire script re-scores a holder already in the set whatever the count, so this
        moves the slot's expiry instead of taking a second one. A holder whose slot expired
        gets one back only if a slot is free."""
        return self.acquire(holder, lease_seconds) == 0

    def release(self, holder: str) -> None:
        redis_client().zrem(self.key, holder)

    def holders(self) -> int:
        return redis_client().zcard(self.key)


# --- Token bucket on Redis's clock --------------------------------------------------------

# KEYS[1] = bucket hash. ARGV: rate per s, burst. Returns 0 when a token was taken,
# else milliseconds until one is there.
_TOKEN_BUCKET = """
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or burst)
local last = tonumber(redis.call('HGET', KEYS[1], 'at') or now)
tokens = math.min(burst, tokens + (now - last) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 60000)
return wait
"""


class TokenBucket:
    def __init__(self, name: str, rate: float, burst: float):
        self.name, self.rate, self.burst = name, rate, burst
        self.key = f"guard:bucket:{name}"

    def take(self) -> float:
        """0 when a call may go now, else seconds to wait."""
        return float(redis_client().eval(_TOKEN_BUCKET, 1, self.key, self.rate, self.burst)) / 1000


# --- Admission of one task attempt -----------------------------------------------------------


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
        for name in [f"agent:{agent}", f"dependency:{dependency}" if dependency else None]:
            slots = concurrency_limit(name) if name else None
            if slots is None:
                continue
            semaphore = Semaphore(name, slots)
            wait = semaphore.acquire(holder, lease_seconds)
            if wait:
                raise defer(min(wait, 1.0), f"concurrency limit of {slots} reached for {name}")
            admission.semaphores.append(semaphore)
        rate = rate_limit(dependency) if dependency else None
        if rate is not None:
            wait = TokenBucket(dependency, *rate).take()
            if wait:
                raise defer(wait, f"rate limit of {rate[0]:g}/s reached for {dependency}")
    except DeferTask:
        # A half-open trial slot taken here but not used frees itself after the cool-down.
        admission.release()
        raise
    return admission
