"""Circuit breakers per outside dependency, shared by every worker process (state in Redis)."""

from __future__ import annotations

from orchestration.limits.lua import NOW
from orchestration.limits.policies import BreakerPolicy, breaker_policy, limits
from orchestration.redis_client import redis_client

# The allow decision, as a Lua function: (breaker hash, cooldown s) -> {allowed, state, retry_in_ms}.
# closed: allow. open: deny until the cooldown ends, then become half-open.
# half-open: allow one trial at a time (the trial slot expires after the cooldown).
ALLOW_FUNCTION = """
local function breaker_allow(key, cooldown_seconds)
  local state = redis.call('HGET', key, 'state') or 'closed'
  local forced = redis.call('HGET', key, 'forced')
  local cooldown = cooldown_seconds * 1000
  if forced == 'open' then return {0, 'forced_open', cooldown} end
  if forced == 'closed' or state == 'closed' then return {1, 'closed', 0} end
  if state == 'open' then
    local opened = tonumber(redis.call('HGET', key, 'opened_at') or '0')
    if now - opened < cooldown then return {0, 'open', cooldown - (now - opened)} end
    redis.call('HSET', key, 'state', 'half_open', 'trial_until', 0, 'trial_successes', 0)
    state = 'half_open'
  end
  local trial_until = tonumber(redis.call('HGET', key, 'trial_until') or '0')
  if now < trial_until then return {0, 'half_open', trial_until - now} end
  redis.call('HSET', key, 'trial_until', now + cooldown)
  return {1, 'half_open', 0}
end
"""

# Recording one call's outcome, as a Lua function: (breaker hash, the window's outcomes counted
# per second ("<second>:ok" / "<second>:fail" fields, so memory stays bounded by the window's
# length), ok, failures threshold, window s, successes needed, failure rate 0..1) -> new state.
# Closed opens when the window holds at least `failures` failures and they are at least
# `failure_rate` of its calls: a busy dependency with a few failures stays closed.
RECORD_FUNCTION = """
local function breaker_record(key, window_key, ok, threshold, window_seconds, successes, failure_rate)
  local state = redis.call('HGET', key, 'state') or 'closed'
  if state == 'half_open' then
    if ok then
      local n = redis.call('HINCRBY', key, 'trial_successes', 1)
      redis.call('HSET', key, 'trial_until', 0)
      if n >= successes then
        redis.call('HSET', key, 'state', 'closed'); redis.call('DEL', window_key)
        return 'closed'
      end
      return 'half_open'
    end
    redis.call('HSET', key, 'state', 'open', 'opened_at', now, 'trial_until', 0)
    redis.call('HINCRBY', key, 'times_opened', 1)
    return 'open'
  end
  if state == 'open' then return state end
  local window = math.ceil(window_seconds)
  local second = tonumber(t[1])
  redis.call('HINCRBY', window_key, second .. (ok and ':ok' or ':fail'), 1)
  redis.call('EXPIRE', window_key, window + 1)
  if ok then return 'closed' end
  local calls, failures = 0, 0
  local fields = redis.call('HGETALL', window_key)
  for i = 1, #fields, 2 do
    local at, outcome = string.match(fields[i], '^(%d+):(%a+)$')
    if tonumber(at) <= second - window then
      redis.call('HDEL', window_key, fields[i])
    else
      local count = tonumber(fields[i + 1])
      calls = calls + count
      if outcome == 'fail' then failures = failures + count end
    end
  end
  if failures >= threshold and failures >= failure_rate * calls then
    redis.call('HSET', key, 'state', 'open', 'opened_at', now)
    redis.call('HINCRBY', key, 'times_opened', 1)
    redis.call('DEL', window_key)
    return 'open'
  end
  return 'closed'
end
"""

# KEYS[1] = breaker hash. ARGV: cooldown s.
_BREAKER_ALLOW = NOW + ALLOW_FUNCTION + "return breaker_allow(KEYS[1], tonumber(ARGV[1]))"
# KEYS: breaker hash, window. ARGV: ok (1/0), failures, window s, successes, failure rate.
_BREAKER_RECORD = (
    NOW
    + RECORD_FUNCTION
    + "return breaker_record(KEYS[1], KEYS[2], ARGV[1] == '1', tonumber(ARGV[2]), tonumber(ARGV[3]), "
    + "tonumber(ARGV[4]), tonumber(ARGV[5]))"
)


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
