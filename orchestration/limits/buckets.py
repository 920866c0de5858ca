"""Token-bucket rate limits on Redis's clock."""

from __future__ import annotations

from orchestration.limits.lua import NOW
from orchestration.redis_client import redis_client

# Taking a token, as a Lua function: (bucket hash, rate per s, burst) -> 0 when a token was
# taken, else milliseconds until one is there.
TAKE_FUNCTION = """
local function bucket_take(key, rate, burst)
  local tokens = tonumber(redis.call('HGET', key, 'tokens') or burst)
  local last = tonumber(redis.call('HGET', key, 'at') or now)
  tokens = math.min(burst, tokens + (now - last) * rate / 1000)
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 60000)
  return wait
end
"""

# KEYS[1] = bucket hash. ARGV: rate per s, burst.
_TOKEN_BUCKET = NOW + TAKE_FUNCTION + "return bucket_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))"


class TokenBucket:
    def __init__(self, name: str, rate: float, burst: float):
        self.name, self.rate, self.burst = name, rate, burst
        self.key = f"guard:bucket:{name}"

    def take(self) -> float:
        """0 when a call may go now, else seconds to wait."""
        return float(redis_client().eval(_TOKEN_BUCKET, 1, self.key, self.rate, self.burst)) / 1000
