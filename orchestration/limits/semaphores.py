"""Fleet-wide counting semaphores whose slots expire with their holder's lease."""

from __future__ import annotations

from orchestration.limits.lua import NOW
from orchestration.redis_client import redis_client

# Taking a slot, as a Lua function: (sorted set of holders scored by lease expiry in ms, holder,
# limit, lease s) -> 0 when admitted, else milliseconds until the earliest slot frees.
ACQUIRE_FUNCTION = """
local function semaphore_acquire(key, holder, limit, lease_seconds)
  redis.call('ZREMRANGEBYSCORE', key, 0, now)
  if redis.call('ZSCORE', key, holder) or redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now + lease_seconds * 1000, holder)
    redis.call('PEXPIRE', key, lease_seconds * 1000 + 60000)
    return 0
  end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(first[2]) - now)
end
"""

# KEYS[1] = the holders. ARGV: holder, limit, lease s.
_SEMAPHORE_ACQUIRE = (
    NOW + ACQUIRE_FUNCTION + "return semaphore_acquire(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))"
)


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
