"""What the models cost, as operators see it: the admin and /metrics add up to what the simulated
endpoint billed, a retry after a crash is not billed twice, and the trace says which attempt was."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest
from django.urls import reverse

from agents import chat
from agents.entrypoints import place_order
from agents.outside import world
from agents.outside.models import ModelCall
from orchestration.models import AgentTask, UsageRecord, WorkflowBudget
from orchestration.observability.tracing import build_trace, render_trace
from orders.models import Order, Product
from orders.states import OrderState
from tests.support import AGENT_QUEUES, scrape, value, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fleet(start_worker, start_beat, redis_client):
    # A short lease: the worker the model's "+modelcrash" kills is reclaimed within seconds.
    Product.objects.create(sku="TV", name="Television", price=Decimal("1500.00"), stocked=100)
    for service in world.SERVICES:
        world.configure(service)
    start_worker([*AGENT_QUEUES, "orchestration"], concurrency=2, env={"AGENT_TASK_DEFAULT_LEASE_SECONDS": "5"})
    start_beat()


def settled(order: Order) -> bool:
    state = Order.objects.get(pk=order.pk).state
    return state in {OrderState.COMPLETED, OrderState.AWAITING_REVIEW}


def test_costs_in_the_admin_and_the_metrics_add_up_to_what_the_endpoint_billed(fleet, client, operator):
    good, _ = place_order("ann@example.com", [("TV", 1)], idempotency_key="good")
    crashed, _ = place_order("bob+modelcrash@example.com", [("TV", 2)], idempotency_key="crashed")
    malformed, _ = place_order("cy+malformed@example.com", [("TV", 1)], idempotency_key="malformed")
    orders = (good, crashed, malformed)
    wait_until(lambda: all(settled(order) for order in orders), timeout=90, what="the orders to be screened")

    # What the endpoint billed: each completion once, priced per model.
    billed: dict[str, list] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    for call in ModelCall.objects.filter(order_ref__in=[str(order.pk) for order in orders]):
        totals = billed[call.model]
        totals[0] += 1
        totals[1] += call.prompt_tokens
        totals[2] += call.completion_tokens
        totals[3] += chat.price(call.model, call.prompt_tokens, call.completion_tokens)
    assert {model: totals[0] for model, totals in billed.items()} == {"sim-large": 4, "sim-small": 2}

    # The crashed worker's completion was billed once; its retry got it back for free...
    [call] = ModelCall.objects.filter(order_ref=str(crashed.pk))
    assert call.replays == 1
    screen = AgentTask.objects.get(workflow_id=crashed.workflow_id, operation="screen")
    assert (screen.attempts, screen.reclaims) == (2, 1)
    # ...and is counted once, by the attempt that learned of it, as the trace shows.
    lines = render_trace(build_trace(crashed.workflow_id))
    usage_lines = [line for line in lines if "model call" in line]
    assert len(usage_lines) == 1 and "attempt 2" in usage_lines[0] and " billed" in usage_lines[0]

    # Our records, the workflows' budgets, the admin and the metrics all say the same.
    records = UsageRecord.objects.filter(billed=True)
    for model, (calls, prompt, completion, cost) in billed.items():
        mine = records.filter(service=model)
        assert mine.count() == calls
        assert sum(mine.values_list("prompt_tokens", flat=True)) == prompt
        assert sum(mine.values_list("completion_tokens", flat=True)) == completion
        assert sum(mine.values_list("cost", flat=True)) == cost
    all_tokens = sum(totals[1] + totals[2] for totals in billed.values())
    assert sum(WorkflowBudget.objects.values_list("tokens", flat=True)) == all_tokens
    assert sum(WorkflowBudget.objects.values_list("money", flat=True)) == sum(t[3] for t in billed.values())

    client.force_login(operator)
    page = client.get(reverse("admin:orchestration_usagerecord_changelist"))
    by_model = {row.name: row for row in page.context["by_model"]}
    by_agent = {row.name: row for row in page.context["by_agent"]}
    for model, (calls, prompt, completion, cost) in billed.items():
        row = by_model[model]
        assert (row.calls, row.unbilled, row.prompt_tokens, row.completion_tokens, row.cost) == (
            calls,
            0,
            prompt,
            completion,
            cost,
        )
    assert list(by_agent) == ["risk"] and by_agent["risk"].cost == sum(t[3] for t in billed.values())
    order_page = client.get(reverse("admin:orders_order_change", args=[good.pk])).content.decode()
    [good_call] = ModelCall.objects.filter(order_ref=str(good.pk))
    good_tokens = good_call.prompt_tokens + good_call.completion_tokens
    good_cost = chat.price("sim-large", good_call.prompt_tokens, good_call.completion_tokens)
    assert f"sim-large: 1 calls (0 not billed), {good_tokens} tokens, {good_cost}" in order_page

    samples = scrape(client)
    for model, (calls, prompt, completion, cost) in billed.items():
        labels = {"agent": "risk", "model": model}
        assert value(samples, "agent_model_calls_total", billed="true", **labels) == calls
        assert value(samples, "agent_model_tokens_total", kind="prompt", **labels) == prompt
        assert value(samples, "agent_model_tokens_total", kind="completion", **labels) == completion
        assert value(samples, "agent_model_cost_total", **labels) == pytest.approx(float(cost))
