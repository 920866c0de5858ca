"""Fleet-wide counting semaphores whose slots expire with their holder's lease."""

from __future__ import annotations

from orchestration.redis_client import redis_client

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
