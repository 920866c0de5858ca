"""Guards across real worker processes, with their state in real Redis: breakers,
semaphores, rate limits, backpressure and budgets."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from agents.outside import world
from agents.outside.models import GatewayEntry
from agents.placement import place_order
from orchestration import budgets
from orchestration.backpressure import Overloaded
from orchestration.enqueue import enqueue
from orchestration.guards import BreakerPolicy, CircuitBreaker, Semaphore, TokenBucket, redis_client
from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus, WorkflowBudget
from orders.models import Order, OrderTransition, Product
from orders.states import TERMINAL_STATES, OrderState
from tests.conftest import wait_until
from tests.kernelapp.models import Effect
from tests.test_orders_workflow import AGENT_QUEUES

pytestmark = pytest.mark.django_db(transaction=True)


def guard_env(**limits) -> dict[str, str]:
    return {"GUARD_LIMITS": json.dumps({"breakers": {}, "concurrency": {}, "rates": {}, **limits})}


def widget_tasks(count: int, **payload) -> list[int]:
    return [
        enqueue("widgeteer", "call_widget", dict(payload), idempotency_key=f"widget-{i}")[0].pk for i in range(count)
    ]


def all_succeeded(ids: list[int]) -> bool:
    return AgentTask.objects.filter(pk__in=ids, status=TaskStatus.SUCCEEDED).count() == len(ids)


def widget_intervals(killed_at: float | None = None) -> list[tuple[float, float]]:
    # Pair each start with the next end of the same task; a start with no end was killed.
    events = [entry.split() for entry in redis_client().lrange("widget:log", 0, -1)]
    open_calls: dict[str, list[float]] = {}
    intervals = []
    for kind, task_id, moment in events:
        if kind == "start":
            open_calls.setdefault(task_id, []).append(float(moment))
        else:
            intervals.append((open_calls[task_id].pop(0), float(moment)))
    for moments in open_calls.values():
        intervals += [(moment, killed_at or moment) for moment in moments]
    return intervals


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


def test_the_breaker_opens_stops_calls_while_open_and_closes_after_trials(start_worker, start_beat):
    env = guard_env(breakers={"widget": {"failures": 3, "window_seconds": 30, "cooldown_seconds": 4, "successes": 2}})
    redis_client().set("widget:failing", "1")
    start_worker(["agent.widgeteer"], concurrency=2, env=env)
    start_worker(["orchestration"], name="maintenance", env=env)
    start_beat()
    breaker = CircuitBreaker("widget")

    ids = widget_tasks(8)
    wait_until(lambda: breaker.state()["state"] == "open", what="breaker to open")
    calls_when_opened = int(redis_client().get("widget:calls"))
    time.sleep(3)  # inside the 4 s cool-down
    assert int(redis_client().get("widget:calls")) == calls_when_opened  # nothing reached the widget

    redis_client().set("widget:failing", "0")
    wait_until(lambda: all_succeeded(ids), timeout=60, what="every task after the breaker closed")
    assert breaker.state()["state"] == "closed"
    # Deferred attempts were given back: attempts spent equal calls that reached the widget.
    spent = sum(AgentTask.objects.filter(pk__in=ids).values_list("attempts", flat=True))
    assert spent == int(redis_client().get("widget:calls"))


def test_an_operator_can_force_a_breaker_open_and_closed(redis_client):
    breaker = CircuitBreaker("gateway")

    breaker.force("open")
    assert breaker.allow()[0] is False and breaker.state()["state"] == "forced_open"
    breaker.force("closed")
    assert breaker.allow()[0] is True and breaker.state()["state"] == "forced_closed"
    breaker.force(None)
    assert breaker.allow()[0] is True


def test_a_busy_dependency_with_a_few_failures_stays_closed_until_failures_are_the_majority(redis_client):
    breaker = CircuitBreaker("busy", BreakerPolicy(failures=3, failure_rate=0.5, window_seconds=30))

    outcomes = [breaker.record(ok) for ok in [True] * 10 + [False] * 4]
    assert set(outcomes) == {"closed"}  # 4 failures in 14 calls: under half

    outcomes = [breaker.record(False) for _ in range(6)]
    assert outcomes[-1] == "open" and outcomes.count("open") == 1  # 10 of 20 calls failed
    assert breaker.state()["state"] == "open" and breaker.allow()[0] is False


def test_the_semaphore_never_admits_more_than_its_limit_even_when_holders_are_killed(start_worker, start_beat):
    env = guard_env(concurrency={"dependency:widget": 2})
    doomed = start_worker(["agent.widgeteer"], concurrency=2, env=env)
    start_worker(["agent.widgeteer"], concurrency=2, env=env)
    start_worker(["orchestration"], name="maintenance", env=env)
    start_beat()

    ids = widget_tasks(10, sleep=1.0)
    wait_until(lambda: redis_client().llen("widget:log") >= 3, what="calls under way")
    doomed.kill()
    killed_at = time.time()
    start_worker(["agent.widgeteer"], concurrency=2, env=env)

    wait_until(lambda: all_succeeded(ids), timeout=90, what="every call, once the killed slots came back")
    assert most_at_once(widget_intervals(killed_at)) <= 2
    assert Semaphore("dependency:widget", 2).holders() == 0


def test_a_rate_limit_holds_across_processes(start_worker, start_beat):
    env = guard_env(rates={"widget": [4, 1]})
    for _ in range(3):
        start_worker(["agent.widgeteer"], concurrency=2, env=env)
    start_worker(["orchestration"], name="maintenance", env=env)
    start_beat()

    ids = widget_tasks(24)
    wait_until(lambda: all_succeeded(ids), timeout=90, what="every rate-limited call")

    starts = sorted(float(entry.split()[2]) for entry in redis_client().lrange("widget:log", 0, -1) if "start" in entry)
    window = starts[-1] - starts[0]
    allowed = 4 * window + 1  # the rate over the window, plus the burst
    assert len(starts) <= allowed * 1.1


def test_a_token_bucket_refills_on_redis_clock(redis_client):
    bucket = TokenBucket("unit", rate=10, burst=2)

    assert [bucket.take() for _ in range(3)][:2] == [0, 0]
    assert 0 < bucket.take() <= 0.2


def test_backpressure_refuses_at_the_limit_and_accepts_again_below_it(settings, transactional_db):
    settings.BACKPRESSURE_MAX_PENDING = 3
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("1.00"), stocked=100)
    for i in range(3):
        place_order(f"c{i}@example.com", [("PEN", 1)], idempotency_key=f"bp{i}")

    with pytest.raises(Overloaded) as refusal:
        place_order("late@example.com", [("PEN", 1)], idempotency_key="bp-late")
    assert refusal.value.retry_after > 0 and "limit 3" in str(refusal.value)
    assert place_order("c0@example.com", [("PEN", 1)], idempotency_key="bp0")[1] is False  # replays still answer

    AgentTask.objects.filter(operation="reserve_stock").first().delete()
    _, created = place_order("late@example.com", [("PEN", 1)], idempotency_key="bp-late")
    assert created and Order.objects.count() == 4


def test_a_ping_pong_loop_between_two_agents_is_stopped_by_the_step_cap(start_worker):
    start_worker(["agent.pinger", "agent.ponger"], concurrency=2)

    enqueue("pinger", "ping", {"n": 0}, idempotency_key="loop", correlation_id="loop-1")
    budgets.set_caps("loop-1", max_steps=6)

    wait_until(lambda: Effect.objects.filter(key="compensated:loop-1").exists(), what="the loop's compensation")
    budget = WorkflowBudget.objects.get(correlation_id="loop-1")
    assert budget.steps == 6 and "step budget spent" in budget.exceeded_reason
    stopped = AgentTask.objects.get(correlation_id="loop-1", status=TaskStatus.CANCELLED)
    assert stopped.last_error.startswith("budget exceeded")
    time.sleep(1)
    looping = AgentTask.objects.filter(correlation_id="loop-1", agent__in=["pinger", "ponger"])
    assert not looping.filter(status=TaskStatus.PENDING).exists()
    assert Effect.objects.filter(key="compensated:loop-1").count() == 1


def test_an_expensive_order_is_stopped_by_the_cost_cap_and_compensated(start_worker, start_beat, redis_client):
    for service in world.SERVICES:
        world.configure(service)
    start_worker(AGENT_QUEUES, concurrency=2)
    Product.objects.create(sku="GEM", name="Gem", price=Decimal("99.00"), stocked=5)

    order, _ = place_order("rich@example.com", [("GEM", 1)], idempotency_key="costly")
    budgets.set_caps(order.correlation_id, max_cost=Decimal("0.5"))  # one gateway fee is 1 unit

    wait_until(lambda: Order.objects.get(pk=order.pk).state in TERMINAL_STATES, what="the order to stop")
    order.refresh_from_db()
    assert order.state == OrderState.CANCELLED
    stop = OrderTransition.objects.get(order=order, event="budget.exceeded")
    assert "cost budget spent" in stop.detail
    wait_until(
        lambda: sum(GatewayEntry.objects.filter(order_ref=str(order.pk)).values_list("amount", flat=True)) == 0,
        what="the refund",
    )
    wait_until(lambda: Product.objects.get(sku="GEM").reserved == 0, what="the stock back")


def test_a_handler_that_overruns_its_lease_without_heartbeats_is_stopped_and_retried(start_worker):
    start_worker(["agent.testkit"])
    # slow_record has a 3 s lease and never heartbeats: the kernel stops it 3 s after its claim.
    task, _ = enqueue("testkit", "slow_record", {"key": "overrun", "sleep": 20}, idempotency_key="overrun")

    span = wait_until(
        lambda: TaskAttempt.objects.filter(task=task, number=1).exclude(status=AttemptStatus.RUNNING).first(),
        timeout=15,
        what="the first attempt to end",
    )
    assert span.status == AttemptStatus.RETRYING and "LeaseExpired" in span.error
    task.refresh_from_db()
    assert task.status in {TaskStatus.PENDING, TaskStatus.CLAIMED} and task.attempts >= 1
    assert not Effect.objects.filter(key="overrun").exists()  # the overrun's effects rolled back
