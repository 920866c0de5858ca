"""Token-bucket rate limits on Redis's clock."""

from __future__ import annotations

from orchestration.redis_client import redis_client

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
