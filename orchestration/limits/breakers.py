"""Circuit breakers per outside dependency, shared by every worker process (state in Redis)."""

from __future__ import annotations

from orchestration.limits.policies import BreakerPolicy, breaker_policy, limits
from orchestration.redis_client import redis_client

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
        raw: dict[str, str] = redis_client().hgetall(self.key)  # type: ignore[assignment]  # decoded by the client
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
