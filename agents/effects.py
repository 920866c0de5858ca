"""The outside effects an order may cause, each under one idempotency key per order and effect.

An order is charged, refunded and shipped at most once (DESIGN.md invariants 3 and 4), so the
order is each effect's natural key, not the task that asks for it: a retry, a duplicate task and
a compensation all name the same effect. That is what lets a compensation ask the gateway or the
carrier what happened from the order alone, when the call that made the effect timed out or its
task died before our own row was written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from agents.outside import world
from orchestration.errors import RetryableError


class Effect(StrEnum):
    CHARGE = "charge"
    REFUND = "refund"
    PARCEL = "parcel"
    RISK = "risk"  # a risk review: one key per model and ask (agents.risk)


def outside_key(order_id: int, effect: str) -> str:
    """The idempotency key the outside service knows this order's effect by (messages use
    their kind: one message per order and event)."""
    return f"order:{order_id}:{effect}"


@contextmanager
def calling_outside() -> Iterator[None]:
    """Around a call to an outside service: an answer that another try may change (the
    service was unavailable, or timed out, maybe after taking effect) becomes a
    RetryableError, so the kernel tries again with the same key."""
    try:
        yield
    except (world.ServiceUnavailable, world.ServiceTimeout) as error:
        raise RetryableError(str(error)) from error
