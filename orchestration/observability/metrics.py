"""Prometheus metrics, served at /metrics to holders of the scrape token (METRICS_TOKEN) and to
users allowed to view agent tasks; loopback clients too when METRICS_ALLOW_LOOPBACK is on.

Two kinds of numbers:
- What workers count as they go (attempts by outcome, retries, dead letters, lease
  reclaims, TTL expiries, attempt durations). Each process counts its own; with
  PROMETHEUS_MULTIPROC_DIR set (the same empty directory for the web process and every
  worker on a machine, created before they start and emptied at each deploy),
  prometheus_client's multiprocess mode adds up every process's numbers at scrape time.
  Without it, /metrics shows only the serving process's own counters.
- What the database and Redis know (tasks pending, claimed and dead per agent, stuck
  tasks, the age of the oldest ready task, circuit breaker states), read at scrape time,
  right whichever process serves.
  The domain adds its own collectors by dotted path in METRICS_COLLECTORS.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery.signals import task_postrun
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min, Q, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.utils import timezone
from django.utils.module_loading import import_string
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError

from orchestration.limits.breakers import all_breakers
from orchestration.models import AgentTask, TaskStatus, UsageRecord
from orchestration.observability import otel
from orchestration.observability.logcontext import current_log_context, log_context
from orchestration.observability.stuck import stuck_conditions
from orchestration.registry import registry as agent_registry
from orchestration.work.outcome import RunOutcome

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

MESSAGES = Counter(
    "agent_task_messages_total",
    "Runs a worker started (a task claimed from a wake-up's batch, or named by a message), by what came "
    "of them (not-claimed: a message naming a task that was taken or finished).",
    ["outcome"],
)
ATTEMPTS = Counter("agent_task_attempts_total", "Attempts of agent tasks, by agent and outcome.", ["agent", "outcome"])
RETRIES = Counter("agent_task_retries_total", "Attempts that failed transiently and went back to pending.", ["agent"])
DEAD_LETTERS = Counter(
    "agent_task_dead_letters_total",
    "Tasks sent to the dead letters: a permanent error, or out of attempts (a lease lost on the last one too).",
    ["agent"],
)
REJECTED_MESSAGES = Counter(
    "broker_messages_rejected_total",
    "Broker messages that could not become a task run, by reason: each is kept as a RejectedMessage.",
    ["reason"],
)
RECLAIMS = Counter("agent_task_reclaims_total", "Claims taken back by the sweep after their lease ran out.")
EXPIRED = Counter("agent_task_expired_total", "Pending tasks dead-lettered because their TTL ran out.")
ATTEMPT_SECONDS = Histogram(
    "agent_task_attempt_seconds",
    "Time from claiming a task to the end of the attempt, by agent.",
    ["agent"],
    buckets=LATENCY_BUCKETS,
)

# The sweeps' Celery tasks return how many rows they changed.
SWEEP_COUNTERS = {
    "orchestration.reclaim_expired_leases": RECLAIMS,
    "orchestration.expire_overdue_tasks": EXPIRED,
}


def observe_attempt(agent: str | None, outcome: RunOutcome, seconds: float) -> None:
    MESSAGES.labels(outcome).inc()
    if not agent or not outcome.ran:
        return
    ATTEMPTS.labels(agent, outcome).inc()
    ATTEMPT_SECONDS.labels(agent).observe(seconds)
    if outcome == RunOutcome.RETRYING:
        RETRIES.labels(agent).inc()
    elif outcome == RunOutcome.DEAD:
        DEAD_LETTERS.labels(agent).inc()


def observe_inline_steps(steps: Iterable[Any]) -> None:
    """Steps that ran inside another task's transaction (runner.run_inline_steps) are attempts
    of their agent like any other: counted and timed once that transaction committed."""
    for step in steps:
        ATTEMPTS.labels(step.agent, RunOutcome.SUCCEEDED).inc()
        ATTEMPT_SECONDS.labels(step.agent).observe((step.finished_at - step.started_at).total_seconds())


def observed_run(run: Callable[..., RunOutcome]) -> Callable[..., RunOutcome]:
    """Wraps runner.run_task: the run gets its own log context (the runner binds the
    task to it once claimed), and its outcome is counted and timed under that agent
    (and exported as a span when OpenTelemetry is on)."""

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> RunOutcome:
        with log_context():
            started, started_ns = time.monotonic(), time.time_ns()
            outcome = run(*args, **kwargs)
            context = current_log_context()
            observe_attempt(context.get("agent"), outcome, time.monotonic() - started)
            otel.record_attempt(context, outcome, started_ns, time.time_ns())
            return outcome

    return wrapper


@task_postrun.connect
def _count_sweep(sender=None, retval=None, **_kwargs) -> None:
    counter = SWEEP_COUNTERS.get(getattr(sender, "name", ""))
    if counter is not None and isinstance(retval, int) and retval > 0:
        counter.inc(retval)


class TaskCollector:
    """Task counts from the database at scrape time, in one GROUP BY."""

    STATUSES = (TaskStatus.PENDING, TaskStatus.CLAIMED, TaskStatus.DEAD)

    def collect(self) -> Iterable[Metric]:
        now = timezone.now()
        stuck = stuck_conditions(now)
        try:
            rows = list(
                AgentTask.objects.filter(status__in=self.STATUSES)
                .values("agent", "status")
                .annotate(
                    count=Count("id"),
                    **{f"stuck_{reason}": Count("id", filter=condition) for reason, condition in stuck.items()},
                    oldest_ready=Min("run_after", filter=Q(status=TaskStatus.PENDING, run_after__lte=now)),
                )
            )
        except DatabaseError:
            logger.warning("metrics: could not read task counts", exc_info=True)
            return
        agents = sorted({*agent_registry.agents, *(row["agent"] for row in rows)})
        counts = {(agent, status): 0 for agent in agents for status in self.STATUSES}
        stuck_counts = {(agent, reason): 0 for agent in agents for reason in stuck}
        oldest = dict.fromkeys(agents, 0.0)
        for row in rows:
            counts[row["agent"], row["status"]] = row["count"]
            for reason in stuck:
                stuck_counts[row["agent"], reason] += row[f"stuck_{reason}"]
            if row["oldest_ready"] is not None:
                oldest[row["agent"]] = max(oldest[row["agent"]], (now - row["oldest_ready"]).total_seconds())

        tasks = GaugeMetricFamily(
            "agent_tasks", "Agent tasks by agent and status, from the database.", labels=["agent", "status"]
        )
        for (agent, status), count in counts.items():
            tasks.add_metric([agent, str(status)], count)
        yield tasks
        stuck_family = GaugeMetricFamily(
            "agent_tasks_stuck",
            "Live tasks past STUCK_TASK_ATTEMPTS attempts (retried) or claimed past their lease (lease_overdue).",
            labels=["agent", "reason"],
        )
        for (agent, reason), count in stuck_counts.items():
            stuck_family.add_metric([agent, reason], count)
        yield stuck_family
        age = GaugeMetricFamily(
            "agent_task_oldest_ready_seconds",
            "How long the oldest ready pending task has waited for a worker, by agent (0 when none).",
            labels=["agent"],
        )
        for agent, seconds in oldest.items():
            age.add_metric([agent], seconds)
        yield age


class BreakerCollector:
    """Each circuit breaker's state (1 for the one it is in) and how often it opened, from Redis."""

    STATES = ("closed", "open", "half_open", "forced_open", "forced_closed")

    def collect(self) -> Iterable[Metric]:
        try:
            breakers = all_breakers()
        except RedisError:
            logger.warning("metrics: could not read the circuit breakers", exc_info=True)
            return
        state = GaugeMetricFamily(
            "agent_breaker_state",
            "Circuit breaker state by dependency: 1 for the current one.",
            labels=["dependency", "state"],
        )
        opened = CounterMetricFamily(
            "agent_breaker_opened", "Times each circuit breaker opened.", labels=["dependency"]
        )
        for breaker in breakers:
            for name in self.STATES:
                state.add_metric([breaker["dependency"], name], 1 if breaker["state"] == name else 0)
            opened.add_metric([breaker["dependency"]], breaker["times_opened"])
        yield state
        yield opened


class UsageCollector:
    """Metered calls (language models) by agent and model, from the usage records at scrape time:
    the same rows the admin adds up, so the two always agree. Tokens and cost count the billed
    calls only; a call answered from the service's idempotency record is a call, not a cost."""

    def collect(self) -> Iterable[Metric]:
        try:
            rows = list(
                UsageRecord.objects.values("agent", "service", "billed").annotate(
                    calls=Count("id"),
                    prompt=Sum("prompt_tokens"),
                    completion=Sum("completion_tokens"),
                    cost=Sum("cost"),
                )
            )
        except DatabaseError:
            logger.warning("metrics: could not read the usage records", exc_info=True)
            return
        calls = CounterMetricFamily(
            "agent_model_calls",
            "Calls to metered services, by agent, model and whether billed.",
            labels=["agent", "model", "billed"],
        )
        tokens = CounterMetricFamily(
            "agent_model_tokens",
            "Tokens billed, by agent, model and kind (prompt, completion).",
            labels=["agent", "model", "kind"],
        )
        cost = CounterMetricFamily(
            "agent_model_cost",
            "What the billed calls cost (MODEL_PRICES' unit), by agent and model.",
            labels=["agent", "model"],
        )
        for row in rows:
            labels = [row["agent"], row["service"]]
            calls.add_metric([*labels, "true" if row["billed"] else "false"], row["calls"])
            if row["billed"]:
                tokens.add_metric([*labels, "prompt"], row["prompt"])
                tokens.add_metric([*labels, "completion"], row["completion"])
                cost.add_metric(labels, float(row["cost"]))
        yield calls
        yield tokens
        yield cost


def metrics_registry() -> CollectorRegistry:
    """What one scrape reads: the processes' numbers and the database's."""
    scrape = CollectorRegistry(auto_describe=False)
    directory = getattr(settings, "PROMETHEUS_MULTIPROC_DIR", "")
    if directory:
        MultiProcessCollector(scrape, path=directory)
    else:
        scrape.register(REGISTRY)
    scrape.register(TaskCollector())
    scrape.register(BreakerCollector())
    scrape.register(UsageCollector())
    for path in getattr(settings, "METRICS_COLLECTORS", []):
        scrape.register(import_string(path)())
    return scrape


# --- Who may read them ------------------------------------------------------------

FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
VIEW_PERMISSION = "orchestration.view_agenttask"  # the numbers are the task table's


def from_loopback(request: HttpRequest) -> bool:
    """A client on this machine, not one a local reverse proxy is passing on."""
    if any(header in request.headers for header in FORWARDING_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def has_scrape_token(request: HttpRequest) -> bool:
    """`Authorization: Bearer <METRICS_TOKEN>`, compared in constant time; never without a token set."""
    expected = getattr(settings, "METRICS_TOKEN", "")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def may_read_metrics(request: HttpRequest) -> bool:
    """The scrape token; a logged-in user with the view permission on agent tasks (superusers
    have it); loopback clients only when METRICS_ALLOW_LOOPBACK is on."""
    if has_scrape_token(request):
        return True
    if settings.METRICS_ALLOW_LOOPBACK and from_loopback(request):
        return True
    user = getattr(request, "user", None)
    return user is not None and user.is_active and user.has_perm(VIEW_PERMISSION)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not may_read_metrics(request):
        return HttpResponseForbidden(
            "metrics need 'Authorization: Bearer <METRICS_TOKEN>' "
            "or a session with the view permission on agent tasks\n"
        )
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
