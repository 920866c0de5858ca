"""The risk-review agent end to end, on real workers against the simulated model endpoint: its
three verdicts, an operator's decision, a review nobody decided, answers that must not be acted
on, the fallback chain, heartbeats through a long chain, and a workflow past its token cap."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from agents import invariants
from agents.entrypoints import decide_review, place_order
from agents.outside.model_server import configure_model
from agents.outside.models import GatewayEntry, ModelCall, ProviderMessage
from orchestration.limits.budgets import set_caps
from orchestration.models import AgentTask, UsageRecord
from orders.models import Order, OrderTransition, Product, Reservation, RiskAssessment
from orders.states import OrderState, ReservationStatus, RiskSource
from tests.support import finish, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def screened(catalogue):
    """A product dear enough that every order of it is screened (RISK_SCREEN_ABOVE is 1000)."""
    return Product.objects.create(sku="TV", name="Television", price=Decimal("1500.00"), stocked=100)


def path(order: Order) -> list[str]:
    return list(OrderTransition.objects.filter(order=order).order_by("pk").values_list("to_state", flat=True))


def chain(order: Order) -> list[tuple[str, int, str]]:
    return [(ask["model"], ask["ask"], ask["outcome"]) for ask in RiskAssessment.objects.get(order=order).chain]


def wait_for_state(order: Order, state: str, timeout: float = 45) -> Order:
    wait_until(lambda: Order.objects.get(pk=order.pk).state == state, timeout=timeout, what=f"order {order.pk} {state}")
    return Order.objects.get(pk=order.pk)


def messages(order: Order) -> list[str]:
    return sorted(ProviderMessage.objects.filter(order_ref=str(order.pk)).values_list("kind", flat=True))


def test_a_model_approves_rejects_or_asks_an_operator_who_decides_in_time_or_not(fleet, screened, settings):
    # An operator has 8 s; the orders that do not pick the operator's decision run out of it.
    settings.RISK_REVIEW_SECONDS = 8
    fleet(env={"RISK_REVIEW_SECONDS": "8"})

    small, _ = place_order("sam@example.com", [("PEN", 1)], idempotency_key="small")
    good, _ = place_order("ann@example.com", [("TV", 1)], idempotency_key="good")
    fraud, _ = place_order("bob+fraud@example.com", [("TV", 2)], idempotency_key="fraud")
    decided, _ = place_order("cy+suspect@example.com", [("TV", 1)], idempotency_key="decided")
    forgotten, _ = place_order("dee+suspect@example.com", [("TV", 1)], idempotency_key="forgotten")

    # The one an operator approves waits for them, its stock held past its deadline.
    decided = wait_for_state(decided, OrderState.AWAITING_REVIEW)
    hold = Reservation.objects.get(order=decided).expires_at
    assert (hold - decided.updated_at).total_seconds() >= 8 + settings.RESERVATION_TTL_SECONDS - 1
    decide_review(decided.pk, approve=True, actor="alice", note="called the customer")

    small, good, fraud, decided = (finish(order) for order in (small, good, fraud, decided))
    assert small.state == OrderState.COMPLETED and OrderState.SCREENING not in path(small)
    assert not RiskAssessment.objects.filter(order=small).exists()
    assert not UsageRecord.objects.filter(workflow_id=small.workflow_id).exists()

    assert good.state == OrderState.COMPLETED
    assert path(good)[:4] == ["CREATED", "INVENTORY_RESERVED", "SCREENING", "PAYMENT_PROCESSING"]
    assessment = RiskAssessment.objects.get(order=good)
    assert (assessment.verdict, assessment.decided_by, assessment.model) == ("approve", RiskSource.PRIMARY, "sim-large")
    assert chain(good) == [("sim-large", 1, "decided")]

    assert fraud.state == OrderState.CANCELLED
    assert fraud.reason.startswith("rejected by risk review: reject by primary model sim-large: the address looks made")
    assert not GatewayEntry.objects.filter(order_ref=str(fraud.pk)).exists()
    wait_until(lambda: Reservation.objects.get(order=fraud).status == ReservationStatus.RELEASED, what="release")
    wait_until(lambda: messages(fraud) == ["cancelled"], what="the customer told")

    assert decided.state == OrderState.COMPLETED
    approval = OrderTransition.objects.get(order=decided, event="operator.approve")
    assert (approval.from_state, approval.to_state, approval.actor, approval.detail) == (
        OrderState.AWAITING_REVIEW,
        OrderState.PAYMENT_PROCESSING,
        "alice",
        "called the customer",
    )
    assert GatewayEntry.objects.get(order_ref=str(decided.pk), kind="charge").amount == decided.total

    # Nobody decided on this one: its deadline cancelled it, before its stock hold could run out.
    forgotten = finish(forgotten, timeout=60)
    assert forgotten.state == OrderState.CANCELLED
    assert path(forgotten)[-2:] == [OrderState.AWAITING_REVIEW, OrderState.CANCELLED]
    assert forgotten.reason == "review deadline passed: nobody decided within 8 s"
    # The release follows the cancel in its own step; it must be a release, not the hold's expiry.
    hold = Reservation.objects.filter(order=forgotten)
    wait_until(lambda: hold.get().status != ReservationStatus.ACTIVE, what="the hold ended")
    assert Reservation.objects.get(order=forgotten).status == ReservationStatus.RELEASED  # not EXPIRED
    assert not GatewayEntry.objects.filter(order_ref=str(forgotten.pk)).exists()
    wait_until(lambda: Product.objects.get(sku="TV").reserved == 0, what="every hold given back")
    wait_until(lambda: all(check.holds for check in invariants.check_all()), what="the invariants")


def test_a_workflow_past_its_token_cap_is_stopped_and_compensated(fleet, screened, start_worker):
    fleet(queues=["agent.order", "agent.payment", "agent.fulfillment", "agent.notification"])
    order, _ = place_order("eve@example.com", [("TV", 1)], idempotency_key="capped")
    set_caps(order.workflow_id, max_tokens=50)  # one model call spends more
    start_worker(["agent.inventory", "agent.risk"])

    order = finish(order)

    assert order.state == OrderState.CANCELLED
    assert "token budget spent" in order.reason
    spent = UsageRecord.objects.filter(workflow_id=order.workflow_id, billed=True)
    assert spent.count() == 1 and spent.get().prompt_tokens + spent.get().completion_tokens > 50
    charge = AgentTask.objects.get(workflow_id=order.workflow_id, operation="charge")
    assert charge.status == "cancelled" and "budget exceeded" in charge.last_error
    assert not GatewayEntry.objects.filter(order_ref=str(order.pk)).exists()
    wait_until(lambda: Reservation.objects.get(order=order).status == ReservationStatus.RELEASED, what="release")
    wait_until(lambda: messages(order) == ["cancelled"], what="the customer told")


def test_answers_that_are_malformed_off_schema_or_wrong_about_the_order_are_never_acted_on(fleet, screened, settings):
    # Each answer takes 1.6 s and each model is asked twice: 6.4 s of calls, more than the
    # 5 s lease, which the agent keeps by heartbeating while it waits. (The models' breakers
    # are set not to open on these bad answers, so that every order walks the whole chain.)
    limits = {**settings.GUARD_LIMITS, "breakers": {f"model:{name}": {"failures": 100} for name in settings.MODELS}}
    env = {"AGENT_TASK_DEFAULT_LEASE_SECONDS": "5", "MODEL_TIMEOUT_SECONDS": "4", "GUARD_LIMITS": json.dumps(limits)}
    fleet(env=env, concurrency=3)
    configure_model(latency_ms=1600)

    malformed, _ = place_order("fay+malformed+fraud@example.com", [("TV", 1)], idempotency_key="malformed")
    off_schema, _ = place_order("gus+offschema+fraud@example.com", [("TV", 1)], idempotency_key="offschema")
    wrong, _ = place_order("hal+wrongamount+fraud@example.com", [("TV", 1)], idempotency_key="wrong")

    for order, outcome in ((malformed, "malformed"), (off_schema, "off_schema"), (wrong, "contradicts")):
        order = wait_for_state(order, OrderState.AWAITING_REVIEW, timeout=60)  # not rejected
        assessment = RiskAssessment.objects.get(order=order)
        assert (assessment.verdict, assessment.decided_by, assessment.model) == ("review", RiskSource.RULE, "")
        assert chain(order) == [
            ("sim-large", 1, outcome),
            ("sim-large", 2, outcome),
            ("sim-small", 1, outcome),
            ("sim-small", 2, outcome),
        ]
        assert ModelCall.objects.filter(order_ref=str(order.pk)).count() == 4  # each answer was billed...
        assert UsageRecord.objects.filter(workflow_id=order.workflow_id, billed=True).count() == 4  # ...and counted
        screen = AgentTask.objects.get(workflow_id=order.workflow_id, operation="screen")
        assert (screen.attempts, screen.reclaims) == (1, 0)  # the heartbeats kept its claim
    assert "names a total of 15001" in RiskAssessment.objects.get(order=wrong).chain[0]["detail"]


def test_the_fallback_model_decides_when_the_primary_is_down_or_slow_and_the_rule_when_both_are_down(fleet, screened):
    fleet(env={"MODEL_TIMEOUT_SECONDS": "1"})

    configure_model("sim-large", unavailable_rate=1)
    down, _ = place_order("ida@example.com", [("TV", 1)], idempotency_key="primary-down")
    down = finish(down)
    configure_model("sim-large", latency_ms=3000)
    slow, _ = place_order("jo@example.com", [("TV", 1)], idempotency_key="primary-slow")
    slow = finish(slow)
    configure_model("sim-large", unavailable_rate=1)
    configure_model("sim-small", unavailable_rate=1)
    both, _ = place_order("kim@example.com", [("TV", 1)], idempotency_key="both-down")
    both = wait_for_state(both, OrderState.AWAITING_REVIEW)

    assert down.state == slow.state == OrderState.COMPLETED
    assert RiskAssessment.objects.get(order=down).decided_by == RiskSource.FALLBACK
    assert chain(down) == [
        ("sim-large", 1, "unavailable"),
        ("sim-large", 2, "unavailable"),
        ("sim-small", 1, "decided"),
    ]
    assert list(UsageRecord.objects.filter(workflow_id=down.workflow_id).values_list("service", flat=True)) == [
        "sim-small"  # an error is not billed
    ]
    assert chain(slow) == [("sim-large", 1, "timeout"), ("sim-small", 1, "decided")]
    assert "fallback model sim-small" in OrderTransition.objects.get(order=slow, to_state="PAYMENT_PROCESSING").detail

    assessment = RiskAssessment.objects.get(order=both)
    assert (assessment.verdict, assessment.decided_by) == ("review", RiskSource.RULE)
    assert {outcome for _model, _ask, outcome in chain(both)} <= {"unavailable", "breaker_open"}
    assert "review by the rule" in OrderTransition.objects.get(order=both, to_state="AWAITING_REVIEW").detail
