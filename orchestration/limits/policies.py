"""The guards' limits, from settings (GUARD_LIMITS, overridable by the environment)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


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
