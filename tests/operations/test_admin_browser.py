"""The admin in a real headless Chromium against Django's live server, with real workers:
log in, open the dashboard, retry a dead task and see it complete, open an order and see
its timeline. Screenshots are kept in test-artifacts/browser/."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.operations.browser import ARTIFACTS, find_chromium, why_skipped

if why_skipped():
    pytest.skip(why_skipped(), allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright

from agents.entrypoints import place_order
from agents.outside import world
from orchestration.models import AgentTask, OperatorAction, TaskAttempt, TaskStatus
from orchestration.work.enqueue import enqueue
from orders.models import Order, OrderTransition, Product
from orders.states import TERMINAL_STATES, OrderState
from tests.kernelapp.models import Effect
from tests.support import AGENT_QUEUES, OPERATOR_PASSWORD, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an event loop running in this thread; Django refuses ORM
    # calls from a thread with a running loop unless told they are safe (they are: the
    # test code is synchronous, the loop only drives the browser).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=find_chromium(), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser, live_server, operator, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=live_server.url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"), full_page=True)
    context.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Page) -> None:
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", "operator")
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("operations")
    expect(page.locator("#content h1")).to_have_text("Control room")


def test_log_in_and_open_the_dashboard(page):
    log_in(page)
    screenshot(page, "01-index")

    page.locator("#content-main .app-operations").get_by_role("link", name="Dashboard").click()

    expect(page.locator("#content h1")).to_have_text("Dashboard")
    for section in ("Backlog per agent", "Throughput and latency", "Circuit breakers", "Stuck orders", "Live workers"):
        expect(page.locator("#content-main h2", has_text=section)).to_be_visible()
    expect(page.locator("#backlog tr.agent-payment")).to_be_visible()
    expect(page.locator("#breakers tr.breaker-gateway")).to_contain_text("closed")
    screenshot(page, "02-dashboard")


def test_retry_a_dead_task_and_see_it_complete(page, start_worker):
    start_worker(["agent.testkit"])
    task, _ = enqueue(
        "testkit",
        "record",
        {"key": "retried-from-the-browser"},
        idempotency_key="browser-retry",
        run_after=timezone.now() + timedelta(hours=1),  # created without a message
    )
    AgentTask.objects.filter(pk=task.pk).update(
        status=TaskStatus.DEAD, attempts=5, last_error="RetryableError: the widget was down", finished_at=timezone.now()
    )

    log_in(page)
    page.goto("/admin/orchestration/deadletter/")
    row = page.locator("#result_list tbody tr", has_text="the widget was down")
    expect(row).to_have_count(1)
    screenshot(page, "03-dead-letters")
    row.locator("input[name=_selected_action]").check()
    page.select_option("select[name=action]", "retry_dead")
    page.click("button[name=index]")

    expect(page.locator("ul.messagelist")).to_contain_text(re.compile("retry dead tasks: 1 task done", re.IGNORECASE))
    screenshot(page, "04-retried")

    wait_until(
        lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, timeout=30, what="the replayed task"
    )
    page.goto(f"/admin/orchestration/agenttask/{task.pk}/change/")
    expect(page.locator("div.form-row.field-status")).to_contain_text("Succeeded")
    expect(page.locator("#spans-group")).to_contain_text("succeeded")
    screenshot(page, "05-task-succeeded")
    assert Effect.objects.filter(key="retried-from-the-browser").count() == 1


@pytest.fixture
def fleet(start_worker, start_beat):
    Product.objects.create(sku="INK", name="Ink", price=Decimal("7.00"), stocked=100)
    for service in world.SERVICES:
        world.configure(service)
    start_worker([*AGENT_QUEUES, "orchestration"], concurrency=3)
    start_beat()


def test_open_an_order_and_see_its_timeline(page, fleet):
    # "+flaky": the gateway fails the first charge, so one attempt is a marked failure.
    order, _ = place_order("ann+flaky@example.com", [("INK", 2)], idempotency_key="browser-order")
    wait_until(lambda: Order.objects.get(pk=order.pk).state in TERMINAL_STATES, timeout=60, what="the order")
    wait_until(
        lambda: (
            not AgentTask.objects.filter(
                correlation_id=order.correlation_id, status__in=[TaskStatus.PENDING, TaskStatus.CLAIMED]
            ).exists()
        ),
        what="the order's last tasks",
    )
    spans = TaskAttempt.objects.filter(correlation_id=order.correlation_id)

    log_in(page)
    page.goto("/admin/orders/order/")
    page.locator("#result_list").get_by_role("link", name=str(order.pk), exact=True).click()

    expect(page.locator("#content h1")).to_have_text("View order")
    timeline = page.locator("#timeline svg.trace-timeline")
    expect(timeline).to_be_visible()
    expect(timeline.locator("g.span")).to_have_count(spans.count())
    failed = timeline.locator("g.span.failed")
    expect(failed).to_have_count(spans.exclude(status="succeeded").count())
    expect(failed.first.locator("title")).to_contain_text("gateway")
    expect(timeline.locator(".failure-mark")).to_have_count(spans.exclude(status="succeeded").count())
    expect(page.locator("#transitions-group")).to_contain_text("COMPLETED")
    expect(page.locator(".field-related")).to_contain_text("payment (charged)")
    timeline.scroll_into_view_if_needed()
    screenshot(page, "06-order-timeline")

    page.locator(".field-related").get_by_role("link", name=re.compile(r"^tasks")).click()
    expect(page.locator("#result_list tbody tr")).to_have_count(
        AgentTask.objects.filter(correlation_id=order.correlation_id).count()
    )
    screenshot(page, "07-order-tasks")


def test_an_operator_approves_an_order_the_model_sent_for_review(page, fleet):
    Product.objects.create(sku="TV", name="Television", price=Decimal("1500.00"), stocked=10)
    # "+suspect": the simulated model answers "review", so the order waits for a person.
    order, _ = place_order("dan+suspect@example.com", [("TV", 1)], idempotency_key="browser-review")
    wait_until(
        lambda: Order.objects.get(pk=order.pk).state == OrderState.AWAITING_REVIEW, timeout=60, what="the review"
    )

    log_in(page)
    page.goto("/admin/orders/orderawaitingreview/")
    row = page.locator("#result_list tbody tr", has_text=f"order {order.pk}")
    expect(row).to_contain_text("review by sim-large")
    expect(row).to_contain_text("an unusual basket for 1500.00 EUR")  # the model's reasons
    screenshot(page, "08-orders-waiting-for-review")
    row.locator("input[name=_selected_action]").check()
    page.select_option("select[name=action]", "approve_selected")
    page.click("button[name=index]")

    done = re.compile(rf"approve reviewed orders: 1 order done \({order.pk}\)", re.IGNORECASE)
    expect(page.locator("ul.messagelist")).to_contain_text(done)
    expect(page.locator("#result_list")).to_have_count(0)  # nothing left to review
    screenshot(page, "09-review-approved")
    wait_until(lambda: Order.objects.get(pk=order.pk).state == OrderState.COMPLETED, timeout=60, what="completion")
    approval = OrderTransition.objects.get(order=order, event="operator.approve")
    assert (approval.to_state, approval.actor) == (OrderState.PAYMENT_PROCESSING, "operator")
    audit = OperatorAction.objects.get(action="approve reviewed orders")
    assert (audit.operator, audit.done) == ("operator", [order.pk])

    page.goto(f"/admin/orders/order/{order.pk}/change/")
    expect(page.locator(".field-risk_review")).to_contain_text("review by primary model sim-large")
    expect(page.locator(".field-model_costs")).to_contain_text("sim-large: 1 calls (0 not billed)")
    screenshot(page, "10-order-risk-and-costs")
