"""Following an order: its trace, its log lines in every process, the metrics, and stuck work."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import urllib.request
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.http import JsonResponse
from django.test import RequestFactory
from django.urls import path
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agents.entrypoints import place_order
from agents.outside import world
from devservers.processes import find_free_port
from orchestration.models import AgentTask, TaskStatus
from orchestration.observability import otel
from orchestration.observability.logcontext import ContextFilter, JsonFormatter
from orchestration.observability.requests import correlation_from_request
from orchestration.work import runner
from orchestration.work.enqueue import enqueue
from orders.models import Order, Product
from orders.states import OrderState
from tests.support import AGENT_QUEUES, child_environment, finish, scrape, value, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

web_logger = logging.getLogger("tests.web")


def place_order_view(request):
    """What the HTTP API will do: place the order under the request's correlation id."""
    order, _ = place_order(
        request.POST["customer"],
        [("PEN", 1)],
        idempotency_key=request.POST["key"],
        correlation_id=request.correlation_id,
    )
    web_logger.info("placed order %s", order.pk)
    return JsonResponse({"order": order.pk})


urlpatterns = [path("orders", place_order_view)]


@pytest.fixture
def catalogue(transactional_db):
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100)
    Product.objects.create(sku="INK", name="Ink", price=Decimal("7.00"), stocked=100)


@pytest.fixture
def agents(start_worker, start_beat, redis_client, settings, tmp_path):
    """All five agents and the sweeps on one real worker, and beat; the outside world
    well-behaved. Worker and web share a metrics directory, as they would on one machine."""
    metrics_directory = tmp_path / "prometheus"
    metrics_directory.mkdir()
    settings.PROMETHEUS_MULTIPROC_DIR = str(metrics_directory)

    def start(env=None):
        for service in world.SERVICES:
            world.configure(service)
        env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_directory), **(env or {})}
        worker = start_worker([*AGENT_QUEUES, "orchestration"], concurrency=3, env=env)
        start_beat()
        return worker

    return start


def quiet(order: Order, timeout: float = 30) -> None:
    """Every task of the order finished (compensations and messages included)."""
    wait_until(
        lambda: (
            not AgentTask.objects.filter(
                correlation_id=order.correlation_id, status__in=[TaskStatus.PENDING, TaskStatus.CLAIMED]
            ).exists()
        ),
        timeout=timeout,
        what=f"the tasks of order {order.pk} to finish",
    )


def command_output(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def first_index(lines: list[str], *needles: str) -> int:
    """The first line holding every needle; fails the test when there is none."""
    for index, line in enumerate(lines):
        if all(needle in line for needle in needles):
            return index
    pytest.fail(f"no line with {needles} in:\n" + "\n".join(lines))


# --- The trace ---------------------------------------------------------------------


def test_the_trace_of_an_order_shows_its_retry_reclaim_and_compensation_in_order(agents, catalogue, client):
    # The gateway fails the first charge, then kills the worker after the second one took
    # effect (the lease of 5 s runs out and the sweep reclaims it); the carrier refuses the
    # parcel, so the order is cancelled and the payment refunded.
    agents(env={"AGENT_TASK_DEFAULT_LEASE_SECONDS": "5"})

    order, _ = place_order("x+flaky+crash+shipfail@example.com", [("INK", 1)], idempotency_key="traced")
    order = finish(order, timeout=60)
    assert order.state == OrderState.CANCELLED
    compensations = AgentTask.objects.filter(
        correlation_id=order.correlation_id, operation__in=["refund", "release_stock", "void_parcel", "notify"]
    )
    wait_until(lambda: {task.status for task in compensations.all()} == {TaskStatus.SUCCEEDED}, what="compensations")

    output = command_output("trace", str(order.pk))
    lines = output.splitlines()
    charge = first_index(
        lines, "payment.charge <- order.payment_requested", "succeeded after 3 attempts", "reclaimed 1x"
    )
    retried = first_index(lines, "attempt 1: retrying", "gateway unavailable")
    reclaimed = first_index(lines, "attempt 2: reclaimed", "lease expired")
    charged = first_index(lines, "attempt 3: succeeded")
    confirmed = first_index(lines, "PAYMENT_PROCESSING -> PAYMENT_CONFIRMED")
    ship = first_index(lines, "fulfillment.ship <- order.fulfillment_requested")
    cancelled = first_index(lines, "FULFILLMENT_PENDING -> CANCELLED on fulfillment.failed", "carrier refused")
    refund = first_index(lines, "payment.refund <- order.cancelled", "succeeded")
    release = first_index(lines, "inventory.release_stock <- order.cancelled", "succeeded")
    assert charge < retried < reclaimed < charged < confirmed < ship < cancelled < min(refund, release)

    states = [
        first_index(lines, f"-> {state} on")
        for state in ("CREATED", "INVENTORY_RESERVED", "PAYMENT_PROCESSING", "PAYMENT_CONFIRMED", "FULFILLMENT_PENDING")
    ]
    assert states == sorted(states) and states[0] < charge < states[-1] < cancelled
    # The cancellation and its compensations hang under the shipment that failed.
    assert indent(lines[refund]) == indent(lines[release]) == indent(lines[cancelled]) > indent(lines[ship])
    # The refund's task is written by the transaction that cancels the order (one clock reading).
    assert offset(lines[refund]) >= offset(lines[cancelled]) > offset(lines[charged]) > offset(lines[reclaimed])
    assert f"Order {order.pk} for x+flaky+crash+shipfail@example.com, now CANCELLED" in output
    assert output == command_output("trace", order.correlation_id)
    assert value(scrape(client), "agent_task_reclaims_total") >= 1


def indent(line: str) -> int:
    text = line.split("s  ", 1)[1]
    return len(text) - len(text.lstrip())


def offset(line: str) -> float:
    return float(line.split("s  ", 1)[0])


def test_a_trace_marks_dead_tasks_their_compensation_and_pending_retries(transactional_db, redis_client):
    one = {"workflow_id": "w1", "correlation_id": "c1"}
    refused, _ = enqueue("testkit", "record", {"key": "no", "permanent": True}, idempotency_key="no", **one)
    flaky, _ = enqueue("testkit", "record", {"key": "again", "fail_times": 1}, idempotency_key="again", **one)
    assert runner.run_task(refused.pk) == "dead"
    assert runner.run_task(flaky.pk) == "retrying"
    compensation = AgentTask.objects.get(correlation_id="c1", operation="hear_failure")
    assert runner.run_task(compensation.pk) == "succeeded"

    lines = command_output("trace", "c1").splitlines()

    dead = first_index(lines, f"testkit.record (task {refused.pk}): DEAD after 1 attempt: PermanentError: refused no")
    failed = first_index(lines, "attempt 1: failed", "PermanentError: refused no")
    heard = first_index(lines, "listener.hear_failure <- testkit.record_failed", "succeeded after 1 attempt")
    pending = first_index(lines, f"testkit.record (task {flaky.pk}): pending, next try at", "after 1 attempt")
    assert dead < failed < heard and indent(lines[heard]) > indent(lines[dead])
    assert "attempt 1: retrying" in lines[pending + 1]
    assert first_index(lines, "3 tasks, 3 attempts (1 failed, 1 retrying, 1 succeeded), 1 dead") < dead


def test_a_correlation_id_shared_by_two_orders_traces_both_and_an_order_only_its_own(catalogue):
    first, _ = place_order("ann@example.com", [("PEN", 1)], idempotency_key="one", correlation_id="checkout-7")
    second, _ = place_order("bob@example.com", [("INK", 1)], idempotency_key="two", correlation_id="checkout-7")

    shared = command_output("trace", "checkout-7")
    own = command_output("trace", str(first.pk))

    assert shared.startswith("Correlation checkout-7: 2 workflows")
    for order in (first, second):
        assert f"Order {order.pk} for" in shared and f"Workflow {order.workflow_id}, correlation checkout-7" in shared
    assert f"Order {first.pk} for ann@example.com, now CREATED" in own and f"Order {second.pk}" not in own
    assert own.count("inventory.reserve_stock <- order.placed") == 1
    assert command_output("trace", first.workflow_id) == own


def test_trace_says_clearly_when_nothing_matches(transactional_db):
    with pytest.raises(CommandError, match="nothing matches 'no-such-order'"):
        call_command("trace", "no-such-order")


# --- Correlation ids and log lines -------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"HTTP_X_REQUEST_ID": "req-42.a:b"}, "req-42.a:b"),
        (
            {"HTTP_TRACEPARENT": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            {"HTTP_TRACEPARENT": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "HTTP_X_REQUEST_ID": "r1"},
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ({"HTTP_TRACEPARENT": "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "HTTP_X_REQUEST_ID": "r1"}, "r1"),
        ({"HTTP_TRACEPARENT": "garbage"}, ""),
        ({"HTTP_X_REQUEST_ID": "has spaces\nand a newline"}, ""),
        ({"HTTP_X_REQUEST_ID": "x" * 65}, ""),
        ({}, ""),
    ],
)
def test_the_correlation_id_comes_from_traceparent_or_x_request_id(headers, expected):
    assert correlation_from_request(RequestFactory().get("/", **headers)) == expected


@pytest.fixture
def web_log():
    """The web process's JSON log stream, as the production LOGGING setting writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_all_log_lines_of_an_order_are_selected_by_its_correlation_id_across_web_and_worker(
    agents, catalogue, client, settings, web_log
):
    settings.ROOT_URLCONF = __name__
    worker = agents(env={"LOG_FORMAT": "json"})
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    traceparent_id = uuid.uuid4().hex

    answer = client.post(
        "/orders", {"customer": "ann+flaky@example.com", "key": "logged"}, HTTP_X_REQUEST_ID=request_id
    )
    other = client.post(
        "/orders",
        {"customer": "bob@example.com", "key": "other"},
        HTTP_TRACEPARENT=f"00-{traceparent_id}-00f067aa0ba902b7-01",
    )
    assert answer["X-Request-ID"] == request_id
    order, other_order = Order.objects.get(pk=answer.json()["order"]), Order.objects.get(pk=other.json()["order"])
    assert (order.correlation_id, other_order.correlation_id) == (request_id, traceparent_id)
    for placed in (order, other_order):
        assert finish(placed).state == OrderState.COMPLETED
        quiet(placed)

    web = [line for line in json_lines(web_log.getvalue()) if line.get("correlation_id") == request_id]
    assert [line["message"] for line in web] == [f"placed order {order.pk}"]
    worker_lines = [line for line in json_lines(worker.log()) if line.get("correlation_id") == request_id]
    tasks = set(AgentTask.objects.filter(correlation_id=request_id).values_list("pk", flat=True))
    # The agent work: every line with a task names one of this order's tasks.
    assert {line["task_id"] for line in worker_lines if "task_id" in line} <= tasks
    retry = next(line for line in worker_lines if "will retry" in line["message"] and line["agent"] == "payment")
    charge = AgentTask.objects.get(correlation_id=request_id, operation="charge")
    assert (retry["agent"], retry["task_id"], retry["attempt"], retry["level"]) == ("payment", charge.pk, 1, "WARNING")
    # Celery's own lines for wake-ups name no order (one wake-up serves many): none is this one's.
    assert not [line for line in worker_lines if "succeeded in" in line["message"]]
    assert not any(
        request_id in json.dumps(line)
        for line in json_lines(worker.log())
        if line.get("correlation_id") == traceparent_id
    )


def test_each_attempt_is_exported_as_a_span_in_the_trace_of_its_correlation_id(transactional_db, redis_client):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    otel.install(exporter, batch=False)
    try:
        correlation = uuid.uuid4().hex
        done, _ = enqueue("testkit", "record", {"key": "ok"}, idempotency_key="ok", correlation_id=correlation)
        refused, _ = enqueue(
            "testkit", "record", {"key": "no", "permanent": True}, idempotency_key="no", correlation_id=correlation
        )
        assert [runner.run_task(done.pk), runner.run_task(refused.pk)] == ["succeeded", "dead"]
    finally:
        otel.install(None)

    spans = exporter.get_finished_spans()
    assert {span.context.trace_id for span in spans} == {int(correlation, 16)}
    attempts = {(span.name, span.attributes["agent.task_id"], span.attributes["agent.outcome"]) for span in spans}
    assert ("testkit.record", done.pk, "succeeded") in attempts and ("testkit.record", refused.pk, "dead") in attempts
    assert all(span.end_time >= span.start_time for span in spans)
    assert otel.trace_id_of("req-42") == otel.trace_id_of("req-42") != 0


# --- Metrics -----------------------------------------------------------------------


def test_metrics_parse_as_prometheus_text_and_count_the_workers_load(agents, catalogue, client):
    agents()
    before = scrape(client)

    orders = [
        place_order(customer, [("PEN", 1)], idempotency_key=f"load-{index}")[0]
        for index, customer in enumerate(["a@example.com", "b+flaky@example.com", "c@example.com"])
    ]
    for order in orders:
        finish(order)
        quiet(order)
    after = scrape(client)

    advanced = value(after, "agent_task_attempts_total", agent="order", outcome="succeeded")
    assert advanced - value(before, "agent_task_attempts_total", agent="order", outcome="succeeded") >= 3 * 3
    assert (
        value(after, "agent_task_retries_total", agent="payment")
        - value(before, "agent_task_retries_total", agent="payment")
        == 1
    )
    assert value(after, "agent_task_attempt_seconds_count", agent="payment") >= 4
    completed = value(after, "order_end_to_end_seconds_count", state="COMPLETED")
    assert completed - value(before, "order_end_to_end_seconds_count", state="COMPLETED") == 3
    assert value(after, "order_end_to_end_seconds_bucket", state="COMPLETED", le="+Inf") == completed
    assert ("agent_tasks", (("agent", "payment"), ("status", "pending"))) in after
    assert value(after, "agent_tasks", agent="payment", status="claimed") == 0
    assert value(after, "agent_breaker_state", dependency="gateway", state="closed") == 1


def test_metrics_take_the_scrape_token_or_a_user_allowed_to_view_tasks_and_no_password(
    client, settings, transactional_db
):
    settings.METRICS_TOKEN = "a-scrape-token-of-at-least-32-characters"
    watcher = User.objects.create_user("watcher", password="a-long-enough-password", is_staff=True)
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_agenttask"))

    def basic(user: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:a-long-enough-password".encode()).decode()

    def status(**request) -> int:
        return client.get("/metrics", **request).status_code

    stranger = {"REMOTE_ADDR": "203.0.113.9"}
    assert status(**stranger) == 403
    assert status(HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}", **stranger) == 200
    assert status(HTTP_AUTHORIZATION="Bearer a-scrape-token-of-at-least-32-characterz", **stranger) == 403
    assert status(HTTP_AUTHORIZATION="Bearer ", **stranger) == 403
    # A user's password opens nothing here, however staff the user.
    assert status(HTTP_AUTHORIZATION=basic("watcher"), **stranger) == 403
    # The test client comes from 127.0.0.1: loopback is trusted only when asked to be.
    assert status() == 403
    settings.METRICS_ALLOW_LOOPBACK = True
    assert status() == 200
    assert status(HTTP_X_FORWARDED_FOR="203.0.113.9") == 403  # a local proxy passing a stranger on
    settings.METRICS_ALLOW_LOOPBACK = False

    client.force_login(watcher)  # staff, but not allowed to view agent tasks
    assert status(**stranger) == 403
    client.force_login(viewer)
    assert status(**stranger) == 200
    settings.METRICS_TOKEN = ""  # no token set: no bearer opens it, not even an empty one
    client.logout()
    assert status(HTTP_AUTHORIZATION="Bearer ", **stranger) == 403


# --- Stuck -------------------------------------------------------------------------


def test_an_order_held_back_is_stuck_until_it_moves(catalogue, client, redis_client, settings, time_machine):
    # No worker runs: nothing moves the order on its own.
    order, _ = place_order("held@example.com", [("PEN", 1)], idempotency_key="held")
    listed = f"order {order.pk} [CREATED]"
    assert listed not in command_output("stuck")

    time_machine.move_to(timezone.now() + timedelta(seconds=settings.STUCK_ORDER_AFTER_SECONDS + 60))
    assert listed in command_output("stuck")
    assert value(scrape(client), "orders_stuck", state="CREATED") == 1

    # The inventory agent reserves, and the coordinator, inline, asks for payment: the order moves.
    task = AgentTask.objects.get(correlation_id=order.correlation_id, operation="reserve_stock")
    assert runner.run_task(task.pk) == "succeeded"
    assert Order.objects.get(pk=order.pk).state == OrderState.PAYMENT_PROCESSING
    assert f"order {order.pk} " not in command_output("stuck")
    assert value(scrape(client), "orders_stuck", state="CREATED") == 0


def test_tasks_retried_too_often_or_claimed_past_their_lease_are_stuck(client, transactional_db):
    now = timezone.now()
    common = {"agent": "payment", "operation": "charge", "correlation_id": "c-stuck"}
    retried = AgentTask.objects.create(**common, idempotency_key="retried", attempts=3, last_error="Boom: again")
    overdue = AgentTask.objects.create(
        **common,
        idempotency_key="overdue",
        status=TaskStatus.CLAIMED,
        attempts=1,
        claimed_by="gone@host:1",
        lease_expires_at=now - timedelta(seconds=90),
    )
    AgentTask.objects.create(**common, idempotency_key="fine", attempts=2)
    AgentTask.objects.create(**common, idempotency_key="dead", status=TaskStatus.DEAD, attempts=5)

    output = command_output("stuck")

    assert (
        f"task {retried.pk} payment.charge [pending]" in output and "3 attempts of 5; last error: Boom: again" in output
    )
    assert f"task {overdue.pk} payment.charge [claimed]" in output and "held by gone@host:1" in output
    assert "Stuck tasks, live after 3 attempts or claimed past their lease: 2" in output
    samples = scrape(client)
    assert value(samples, "agent_tasks_stuck", agent="payment", reason="retried") == 1
    assert value(samples, "agent_tasks_stuck", agent="payment", reason="lease_overdue") == 1


# --- A worker host's exporter --------------------------------------------------------


def scrape_exporter(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def test_a_hosts_exporter_serves_what_the_workers_on_that_host_counted(start_worker, tmp_path):
    # Given a worker that counted an attempt in its host's metrics folder
    folder = tmp_path / "host-metrics"
    start_worker(["agent.testkit"], env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    task, _ = enqueue("testkit", "record", {"key": "counted"}, idempotency_key="counted")
    wait_until(lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED)

    # When the host's exporter serves that folder
    port = find_free_port()
    exporter = subprocess.Popen(
        [sys.executable, "manage.py", "serve_worker_metrics", "--port", str(port)],
        env={**os.environ, **child_environment(), "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = wait_until(lambda: scrape_exporter(port), timeout=60, what="the exporter to answer")
    finally:
        exporter.terminate()
        exporter.wait(10)

    # Then Prometheus reads the worker's count from it
    counted = {
        (sample.labels.get("agent"), sample.labels.get("outcome")): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "agent_task_attempts_total"
    }
    assert counted == {("testkit", "succeeded"): 1.0}


def test_the_exporter_asks_for_the_workers_metrics_folder(settings):
    settings.PROMETHEUS_MULTIPROC_DIR = ""
    with pytest.raises(CommandError, match="PROMETHEUS_MULTIPROC_DIR is not set"):
        call_command("serve_worker_metrics")
