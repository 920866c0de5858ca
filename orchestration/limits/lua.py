"""What every guard script starts with: Redis's clock, read once per script.

Each guard's Lua is a function (breakers, semaphores, buckets), so one script can run it on
its own and another can run several in one round trip (admission: admit and end)."""

# t[1] is the second, `now` the millisecond; the guards' functions read both.
NOW = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
