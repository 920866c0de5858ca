"""What a load run measured, read back from the rows it left: orders, task attempts, spans."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Q, Sum

from agents.outside.models import ModelCall
from loadlab.workload import percentile
from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus, UsageRecord
from orchestration.observability.usage import Total, totals
from orders.models import Order


@dataclass
class Latencies:
    """Seconds, sorted."""

    samples: list[float] = field(default_factory=list)

    def p(self, p: float) -> float:
        return percentile(self.samples, p)


@dataclass
class Counts:
    attempts: int = 0
    retries: int = 0
    deferrals: int = 0
    reclaims: int = 0
    fenced_out: int = 0
    dead_tasks: int = 0


@dataclass
class Timeline:
    """Each order's placement and finish, in seconds from the first placement."""

    created: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # of the finished ones, same order as latencies
    latencies: list[float] = field(default_factory=list)


def correlation_ids(order_ids: list[int]) -> list[str]:
    return list(Order.objects.filter(pk__in=order_ids).values_list("correlation_id", flat=True))


def timeline(order_ids: list[int]) -> Timeline:
    rows = list(Order.objects.filter(pk__in=order_ids).values_list("created_at", "finished_at"))
    if not rows:
        return Timeline()
    origin = min(created for created, _ in rows)
    result = Timeline(created=sorted((created - origin).total_seconds() for created, _ in rows))
    for created, finished in sorted((row for row in rows if row[1] is not None), key=lambda row: row[1]):
        result.finished.append((finished - origin).total_seconds())
        result.latencies.append((finished - created).total_seconds())
    return result


def claim_to_complete(correlation_ids: list[str]) -> dict[str, Latencies]:
    """Per agent: from the claim to the committed completion of each successful attempt."""
    by_agent: dict[str, Latencies] = defaultdict(Latencies)
    spans = TaskAttempt.objects.filter(correlation_id__in=correlation_ids, status=AttemptStatus.SUCCEEDED)
    for agent, started, finished in spans.values_list("agent", "started_at", "finished_at"):
        by_agent[agent].samples.append((finished - started).total_seconds())
    for latencies in by_agent.values():
        latencies.samples.sort()
    return dict(sorted(by_agent.items()))


def counts(correlation_ids: list[str]) -> Counts:
    spans = TaskAttempt.objects.filter(correlation_id__in=correlation_ids).aggregate(
        attempts=Count("pk"),
        retries=Count("pk", filter=Q(status=AttemptStatus.RETRYING)),
        deferrals=Count("pk", filter=Q(status=AttemptStatus.DEFERRED)),
        fenced_out=Count("pk", filter=Q(status=AttemptStatus.FENCED_OUT)),
    )
    tasks = AgentTask.objects.filter(correlation_id__in=correlation_ids).aggregate(
        reclaims=Sum("reclaims"), dead=Count("pk", filter=Q(status=TaskStatus.DEAD))
    )
    return Counts(
        attempts=spans["attempts"],
        retries=spans["retries"],
        deferrals=spans["deferrals"],
        reclaims=tasks["reclaims"] or 0,
        fenced_out=spans["fenced_out"],
        dead_tasks=tasks["dead"],
    )


def peak_overlap(correlation_ids: list[str], agents: list[str]) -> int:
    """The most attempts of these agents that were running at the same moment."""
    edges: list[tuple[float, int]] = []
    spans = TaskAttempt.objects.filter(correlation_id__in=correlation_ids, agent__in=agents, finished_at__isnull=False)
    for started, finished in spans.values_list("started_at", "finished_at"):
        edges += [(started.timestamp(), 1), (finished.timestamp(), -1)]
    peak = running = 0
    for _moment, step in sorted(edges):
        running += step
        peak = max(peak, running)
    return peak


@dataclass
class ModelFigures:
    """What the run's model calls spent, as our records say (by model) and as the endpoint billed
    (calls and tokens it made, each once: a call it answered from its record is not in it)."""

    by_model: list[Total] = field(default_factory=list)
    endpoint_calls: int = 0
    endpoint_tokens: int = 0

    @property
    def calls(self) -> int:
        return sum(row.calls for row in self.by_model)

    @property
    def tokens(self) -> int:
        return sum(row.tokens for row in self.by_model)

    @property
    def cost(self) -> Decimal:
        return sum((row.cost for row in self.by_model), Decimal(0))


def model_usage(order_ids: list[int]) -> ModelFigures:
    workflows = Order.objects.filter(pk__in=order_ids).values("workflow_id")
    billed = ModelCall.objects.filter(order_ref__in=[str(pk) for pk in order_ids]).aggregate(
        calls=Count("pk"), prompt=Sum("prompt_tokens", default=0), completion=Sum("completion_tokens", default=0)
    )
    return ModelFigures(
        by_model=totals(UsageRecord.objects.filter(workflow_id__in=workflows), "service"),
        endpoint_calls=billed["calls"],
        endpoint_tokens=billed["prompt"] + billed["completion"],
    )
