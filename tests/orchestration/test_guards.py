"""Guards across real worker processes, with their state in real Redis: breakers,
semaphores, rate limits, backpressure and budgets."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from agents.entrypoints import place_order
from agents.invariants import check_all
from agents.outside import world
from agents.outside.models import CarrierParcel, GatewayEntry, ProviderMessage
from agents.tasks import expire_reservations
from api.models import ApiClient
from orchestration.errors import DeferTask
from orchestration.limits import budgets
from orchestration.limits.admission import admit
from orchestration.limits.backpressure import MAX_RETRY_AFTER, Overloaded
from orchestration.limits.breakers import CircuitBreaker
from orchestration.limits.buckets import TokenBucket
from orchestration.limits.policies import BreakerPolicy
from orchestration.limits.semaphores import Semaphore
from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus, WorkflowBudget
from orchestration.redis_client import redis_client
from orchestration.work import runner
from orchestration.work.enqueue import enqueue
from orders.models import Order, OrderTransition, Product
from orders.states import TERMINAL_STATES, OrderState
from tests.kernelapp.models import Effect
from tests.support import AGENT_QUEUES, wait_until

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
    for _ in range(2):
        start_worker(["agent.widgeteer"], concurrency=2, env=env)
    start_worker(["orchestration"], name="maintenance", env=env)
    start_beat()

    ids = widget_tasks(16)
    wait_until(lambda: all_succeeded(ids), timeout=90, what="every rate-limited call")

    starts = sorted(float(entry.split()[2]) for entry in redis_client().lrange("widget:log", 0, -1) if "start" in entry)
    window = starts[-1] - starts[0]
    allowed = 4 * window + 1  # the rate over the window, plus the burst
    assert len(starts) <= allowed * 1.1


def test_a_token_bucket_refills_on_redis_clock(redis_client):
    bucket = TokenBucket("unit", rate=10, burst=2)

    assert [bucket.take() for _ in range(3)][:2] == [0, 0]
    assert 0 < bucket.take() <= 0.2


def test_an_attempt_passes_its_guards_in_one_round_trip_and_ends_in_another(settings, redis_client):
    """Breaker, semaphore and rate limit in one script at admission, the slot back and the
    outcome to the breaker in one at the end; a refusal gives back the slots it took."""
    settings.GUARD_LIMITS = {"concurrency": {"dependency:unit": 1}, "rates": {"unit": [0.5, 1]}}

    def evals() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_eval", {}).get("calls", 0))

    before = evals()
    admission = admit(agent="testkit", dependency="unit", holder="first", lease_seconds=30)
    assert evals() - before == 1
    assert Semaphore("dependency:unit", 1).holders() == 1
    admission.end(ok=False)
    assert evals() - before == 2
    assert Semaphore("dependency:unit", 1).holders() == 0
    assert redis_client.hgetall("guard:breaker:unit:window")  # the failure was counted

    # The bucket's only token is spent: the slot this attempt took is given back with the refusal.
    with pytest.raises(DeferTask, match=r"rate limit of 0\.5/s reached for unit"):
        admit(agent="testkit", dependency="unit", holder="second", lease_seconds=30)
    assert Semaphore("dependency:unit", 1).holders() == 0

    # An attempt no guard concerns costs no round trip at all.
    before = evals()
    admit(agent="testkit", dependency=None, holder="third", lease_seconds=30).end(ok=True)
    assert evals() == before


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


def test_backpressure_counts_every_agents_ready_tasks_and_retry_after_follows_the_drain_rate(
    settings, transactional_db
):
    settings.BACKPRESSURE_MAX_PENDING = 4
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("1.00"), stocked=100)
    now = timezone.now()

    def tasks(count: int, name: str, **fields) -> list[AgentTask]:
        common = {"agent": "payment", "operation": "charge", "correlation_id": name}
        return [AgentTask.objects.create(**common, idempotency_key=f"{name}-{i}", **fields) for i in range(count)]

    ready = tasks(5, "ready", run_after=now - timedelta(seconds=1))  # not one of them a reservation
    tasks(20, "backing-off", run_after=now + timedelta(minutes=5))  # not ready: not counted
    finished = {"status": TaskStatus.SUCCEEDED, "finished_at": now - timedelta(seconds=10)}
    tasks(12, "done", **finished)  # 12 a minute: 2 over the limit drain in 10 s
    tasks(50, "done-long-ago", status=TaskStatus.SUCCEEDED, finished_at=now - timedelta(minutes=5))

    with pytest.raises(Overloaded) as refusal:
        place_order("late@example.com", [("PEN", 1)], idempotency_key="late")
    assert refusal.value.retry_after == 10
    assert "limit 4" in str(refusal.value) and not Order.objects.exists()

    AgentTask.objects.filter(correlation_id="done").delete()  # nothing finished lately
    with pytest.raises(Overloaded) as refusal:
        place_order("late@example.com", [("PEN", 1)], idempotency_key="late")
    assert refusal.value.retry_after == MAX_RETRY_AFTER

    AgentTask.objects.filter(pk__in=[task.pk for task in ready[:2]]).update(status=TaskStatus.CANCELLED)
    _, created = place_order("late@example.com", [("PEN", 1)], idempotency_key="late")
    assert created


def test_a_ping_pong_loop_between_two_agents_is_stopped_by_the_step_cap(start_worker):
    start_worker(["agent.pinger", "agent.ponger"], concurrency=2)

    enqueue("pinger", "ping", {"n": 0}, idempotency_key="loop", workflow_id="loop-1")
    budgets.set_caps("loop-1", max_steps=6)

    wait_until(lambda: Effect.objects.filter(key="compensated:loop-1").exists(), what="the loop's compensation")
    budget = WorkflowBudget.objects.get(workflow_id="loop-1")
    assert budget.steps == 6 and "step budget spent" in budget.exceeded_reason
    stopped = AgentTask.objects.get(workflow_id="loop-1", status=TaskStatus.CANCELLED)
    assert stopped.last_error.startswith("budget exceeded")
    time.sleep(1)
    looping = AgentTask.objects.filter(workflow_id="loop-1", agent__in=["pinger", "ponger"])
    assert not looping.filter(status=TaskStatus.PENDING).exists()
    assert Effect.objects.filter(key="compensated:loop-1").count() == 1


def test_an_expensive_order_is_stopped_by_the_cost_cap_and_compensated(start_worker, start_beat, redis_client):
    for service in world.SERVICES:
        world.configure(service)
    start_worker(AGENT_QUEUES, concurrency=2)
    Product.objects.create(sku="GEM", name="Gem", price=Decimal("99.00"), stocked=5)

    order, _ = place_order("rich@example.com", [("GEM", 1)], idempotency_key="costly")
    budgets.set_caps(order.workflow_id, max_cost=Decimal("0.5"))  # one gateway fee is 1 unit

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


def start_order_agents(start_worker, start_beat) -> None:
    for service in world.SERVICES:
        world.configure(service)
    # The test kit's pinger hears every workflow.budget_exceeded too (tests/kernelapp).
    start_worker([*AGENT_QUEUES, "agent.pinger"], concurrency=2)
    start_worker(["orchestration"], name="maintenance")
    start_beat()


def bearer(name: str) -> dict[str, str]:
    client = ApiClient(name=name)
    token = client.issue_token()
    client.save()
    return {"Authorization": f"Bearer {token}"}


def test_orders_placed_under_one_request_id_each_have_their_own_budget_and_all_complete(
    start_worker, start_beat, redis_client
):
    # Two shops send the same X-Request-ID with every order: 20 orders of 6 counted steps
    # each, far past one workflow's 50, if they shared a budget.
    start_order_agents(start_worker, start_beat)
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100)
    shops = [bearer("ann's shop"), bearer("bob's shop")]
    http = Client()

    placed = []
    for index in range(20):
        headers = {**shops[index % 2], "Idempotency-Key": f"order-{index}", "X-Request-ID": "checkout-42"}
        body = {"customer": f"c{index}@example.com", "items": [{"sku": "PEN", "quantity": 1}]}
        response = http.post("/api/orders", data=json.dumps(body), content_type="application/json", headers=headers)
        assert response.status_code == 201, response.content
        placed.append(response.json()["id"])

    orders = Order.objects.filter(pk__in=placed)
    wait_until(lambda: orders.filter(state__in=TERMINAL_STATES).count() == 20, timeout=180, what="all 20 orders to end")
    assert set(orders.values_list("state", flat=True)) == {OrderState.COMPLETED}
    assert set(orders.values_list("correlation_id", flat=True)) == {"checkout-42"}
    spent = WorkflowBudget.objects.filter(correlation_id="checkout-42")
    assert sorted(spent.values_list("workflow_id", flat=True)) == sorted(orders.values_list("workflow_id", flat=True))
    assert len(set(orders.values_list("workflow_id", flat=True))) == 20
    # Each budget counted its own order's steps only, and none ran out.
    assert set(spent.values_list("steps", flat=True)) == {6}
    assert not spent.filter(exceeded_at__isnull=False).exists()


def test_a_budget_that_runs_out_right_after_the_shipment_completes_the_order_and_tells_the_customer(
    start_worker, start_beat, redis_client
):
    Product.objects.create(sku="INK", name="Ink", price=Decimal("7.00"), stocked=5)
    order, _ = place_order("dee@example.com", [("INK", 1)], idempotency_key="spent-after-ship")
    # The counted steps: reserve_stock, advance, charge, advance, ship. The sixth, the
    # advance that hears fulfillment.shipped, finds the budget spent (commit_stock and
    # notify are outside the budget).
    budgets.set_caps(order.workflow_id, max_steps=5)
    start_order_agents(start_worker, start_beat)

    wait_until(lambda: Order.objects.get(pk=order.pk).state in TERMINAL_STATES, timeout=60, what="the order to end")
    order.refresh_from_db()
    assert order.state == OrderState.COMPLETED
    assert order.reason.startswith("stopped by budget after shipment: budget exceeded: step budget spent")
    history = list(OrderTransition.objects.filter(order=order).order_by("pk").values_list("to_state", "event"))
    assert history[-3:] == [
        ("FULFILLMENT_PENDING", "fulfillment.requested"),
        ("SHIPPED", "budget.exceeded"),
        ("COMPLETED", "budget.exceeded"),
    ]
    stopped = AgentTask.objects.get(workflow_id=order.workflow_id, status=TaskStatus.CANCELLED)
    assert (stopped.operation, stopped.event_type) == ("advance", "fulfillment.shipped")
    live = AgentTask.objects.filter(workflow_id=order.workflow_id, status__in=[TaskStatus.PENDING, TaskStatus.CLAIMED])
    wait_until(lambda: not live.exists(), timeout=30, what="the workflow to go quiet")
    assert [result.violations for result in check_all()] == [[]] * 7
    assert sorted(ProviderMessage.objects.filter(order_ref=str(order.pk)).values_list("kind", flat=True)) == [
        "confirmed",
        "shipped",
    ]
    assert sum(GatewayEntry.objects.filter(order_ref=str(order.pk)).values_list("amount", flat=True)) == order.total
    assert CarrierParcel.objects.filter(order_ref=str(order.pk)).count() == 1
    ink = Product.objects.get(sku="INK")
    assert (ink.reserved, ink.sold) == (0, 1)
    assert not AgentTask.objects.filter(workflow_id=order.workflow_id, status=TaskStatus.DEAD).exists()


def test_the_reservation_expiry_joins_the_orders_workflow(transactional_db, redis_client, time_machine):
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=10)
    order, _ = place_order("kim@example.com", [("PEN", 1)], idempotency_key="expiring", correlation_id="shared")
    assert runner.run_task(AgentTask.objects.get(operation="reserve_stock").pk) == "succeeded"

    time_machine.move_to(timezone.now() + timedelta(hours=1))
    assert expire_reservations() == 1

    expiry = AgentTask.objects.get(operation="expire_reservation")
    assert (expiry.workflow_id, expiry.correlation_id) == (order.workflow_id, "shared")
    assert runner.run_task(expiry.pk) == "succeeded"
    # The hold and its expiry, each with the coordinator's step run inline after it.
    assert WorkflowBudget.objects.get(workflow_id=order.workflow_id).steps == 4
    assert AgentTask.objects.filter(workflow_id=order.workflow_id, event_type="inventory.expired").exists()


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
