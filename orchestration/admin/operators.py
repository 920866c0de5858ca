"""What an operator may do to the kernel's rows, each limited to the rows where it is legal.

Every action returns an Outcome (what changed, what was refused and why) and writes one
OperatorAction row naming the operator, whatever came of it. The admin calls these; so can
a shell. The domain adds its own actions (cancelling an order) and records them with
`record`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q
from django.utils import timezone

from orchestration.limits.breakers import CircuitBreaker, all_breakers
from orchestration.models import AgentTask, OperatorAction, TaskStatus
from orchestration.work import lifecycle, sweeps

TASKS = "orchestration.agenttask"
BREAKER = "breaker"
SWEEP = "sweep"

# One action touches at most this many rows; the rest are refused with a reason, so a
# "select all" on a million dead letters cannot turn into one endless request.
MAX_ROWS_PER_ACTION = 1000


@dataclass
class Outcome:
    action: str
    done: list[Any] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    detail: str = ""

    def summary(self, noun: str = "task") -> str:
        """One sentence for the operator: what changed, then what was refused and why."""
        parts = [f"{self.action}: {len(self.done)} {noun}{'' if len(self.done) == 1 else 's'} done"]
        if self.done:
            parts[0] += f" ({', '.join(map(str, self.done[:20]))}{', ...' if len(self.done) > 20 else ''})"
        if self.refused:
            reasons = "; ".join(f"{target}: {why}" for target, why in list(self.refused.items())[:10])
            more = f"; and {len(self.refused) - 10} more" if len(self.refused) > 10 else ""
            parts.append(f"{len(self.refused)} refused ({reasons}{more})")
        if self.detail:
            parts.append(self.detail)
        return ". ".join(parts) + "."


def operator_name(user) -> str:
    return user.get_username() if hasattr(user, "get_username") else str(user)


def record(operator, outcome: Outcome, *, target_kind: str, targets: Iterable[Any]) -> OperatorAction:
    """The audit row of one operator action."""
    return OperatorAction.objects.create(
        operator=operator_name(operator),
        action=outcome.action,
        target_kind=target_kind,
        targets=[_plain(target) for target in targets],
        done=[_plain(target) for target in outcome.done],
        refused={str(target): why for target, why in outcome.refused.items()},
        detail=outcome.detail,
    )


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | str) else str(value)


def _limited(task_ids: Iterable[int], outcome: Outcome) -> list[int]:
    ids = sorted(set(task_ids))
    for task_id in ids[MAX_ROWS_PER_ACTION:]:
        outcome.refused[f"task {task_id}"] = f"over the limit of {MAX_ROWS_PER_ACTION} rows per action; run it again"
    return ids[:MAX_ROWS_PER_ACTION]


def _statuses(task_ids: list[int]) -> dict[int, str]:
    return dict(AgentTask.objects.filter(id__in=task_ids).values_list("id", "status"))


def retry_dead_tasks(task_ids: Iterable[int], *, operator) -> Outcome:
    """Replay dead tasks: fresh attempts under the same idempotency key. Others are refused."""
    outcome = Outcome("retry dead tasks")
    asked = sorted(set(task_ids))
    ids = _limited(asked, outcome)
    statuses = _statuses(ids)
    for task_id in ids:
        status = statuses.get(task_id)
        if status is None:
            outcome.refused[f"task {task_id}"] = "no such task"
        elif status != TaskStatus.DEAD:
            outcome.refused[f"task {task_id}"] = f"is {status}, not dead"
        elif lifecycle.replay(task_id):
            outcome.done.append(task_id)
        else:
            outcome.refused[f"task {task_id}"] = "changed while we looked (no longer dead)"
    record(operator, outcome, target_kind=TASKS, targets=asked)
    return outcome


def cancel_pending_tasks(task_ids: Iterable[int], *, operator, reason: str = "") -> Outcome:
    """Withdraw pending tasks before they run. Claimed or finished ones are refused."""
    outcome = Outcome("cancel pending tasks")
    asked = sorted(set(task_ids))
    ids = _limited(asked, outcome)
    statuses = _statuses(ids)
    why = reason or f"cancelled by operator {operator_name(operator)}"
    for task_id in ids:
        status = statuses.get(task_id)
        if status is None:
            outcome.refused[f"task {task_id}"] = "no such task"
        elif status == TaskStatus.CLAIMED:
            outcome.refused[f"task {task_id}"] = "is claimed: a worker is running it"
        elif status != TaskStatus.PENDING:
            outcome.refused[f"task {task_id}"] = f"is {status}, not pending"
        elif lifecycle.cancel(task_id, reason=why):
            outcome.done.append(task_id)
        else:
            outcome.refused[f"task {task_id}"] = "changed while we looked (no longer pending)"
    record(operator, outcome, target_kind=TASKS, targets=asked)
    return outcome


FORCIBLE = {"open": "forced_open", "closed": "forced_closed", None: None}


def known_breakers() -> set[str]:
    return {breaker["dependency"] for breaker in all_breakers()}


def force_breaker(dependency: str, state: str | None, *, operator) -> Outcome:
    """Force a circuit breaker "open" or "closed", or None to let it decide again."""
    action = f"force breaker {state}" if state else "release breaker"
    outcome = Outcome(action)
    target = f"breaker {dependency}"
    if state not in FORCIBLE:
        outcome.refused[target] = f"a breaker can be forced open or closed, not {state!r}"
    elif dependency not in known_breakers():
        outcome.refused[target] = "no such breaker (neither configured in GUARD_LIMITS nor seen in Redis)"
    else:
        breaker = CircuitBreaker(dependency)
        before = breaker.state()["state"]
        if state is None and not before.startswith("forced_"):
            outcome.refused[target] = f"is {before}, not forced"
        elif before == FORCIBLE[state]:
            outcome.refused[target] = f"is already {before}"
        else:
            breaker.force(state)
            outcome.done.append(dependency)
            outcome.detail = f"{dependency} was {before}, now {breaker.state()['state']}"
    record(operator, outcome, target_kind=BREAKER, targets=[dependency])
    return outcome


def reclaim_now(*, operator, rounds: int = 20) -> Outcome:
    """Run the lease sweep now, instead of waiting for beat: claims whose lease ran out go
    back to pending (or dead when out of attempts). Live leases are never touched."""
    outcome = Outcome("reclaim expired leases")
    overdue = Q(status=TaskStatus.CLAIMED, lease_expires_at__lt=timezone.now())
    candidates = list(AgentTask.objects.filter(overdue).order_by("id").values_list("id", flat=True)[:10000])
    total = 0
    for _ in range(rounds):
        reclaimed = sweeps.reclaim_expired_leases()
        total += reclaimed
        if not reclaimed:
            break
    taken_back = set(
        AgentTask.objects.filter(id__in=candidates).exclude(status=TaskStatus.CLAIMED).values_list("id", flat=True)
    )
    outcome.done = [task_id for task_id in candidates if task_id in taken_back]
    outcome.detail = f"{total} expired lease{'' if total == 1 else 's'} reclaimed"
    if not total:
        outcome.detail += ": no claim had outlived its lease"
    record(operator, outcome, target_kind=SWEEP, targets=["reclaim_expired_leases"])
    return outcome
