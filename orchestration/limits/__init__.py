"""Limits: guards shared by the whole fleet, their state in Redis: circuit breakers, concurrency
semaphores and token-bucket rate limits.

Each guard is a Lua function run on the Redis server, so a decision and its bookkeeping
happen atomically, on Redis's own clock (TIME), whatever the number of workers and hosts. An
attempt passes all of its guards in one script and ends in one more (admission.py): two round
trips for an attempt that has guards, none for one that has not.

Why hand-written: the good libraries solve neighbouring problems. `limits` offers
fixed and moving windows but neither a token bucket nor the "when may I try again"
answer we need to defer a task through run_after; redis-py's Lock is a mutex, not a
counting semaphore whose slots expire with their holder's lease; pybreaker keeps a
breaker per process (its Redis storage is not atomic across processes). Each script
here is a few lines and is tested across real worker processes.

A guard that says "not now" raises DeferTask: the task goes back to pending with a
run_after and keeps its attempt.
"""
