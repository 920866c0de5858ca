"""The operators' admin: every action refuses the rows where it is not legal and records
the operator; pages are read-only; big lists answer without counting their table."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents.entrypoints import place_order
from orchestration.admin.timeline import render_svg
from orchestration.limits.breakers import CircuitBreaker
from orchestration.models import (
    AgentTask,
    AttemptStatus,
    OperatorAction,
    TaskAttempt,
    TaskStatus,
    Worker,
)
from orchestration.observability.tracing import Mark, build_trace
from orders.actions import Line, apply_transition, create_order
from orders.models import Order, OrderTransition, Product, Shipment
from orders.states import OrderState

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:orchestration_agenttask_changelist"


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, django_user_model):
    """A staff user who may look at everything and act on nothing."""
    viewer = django_user_model.objects.create_user("viewer", password="a-long-viewer-pass-123", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client.force_login(viewer)
    return client


def task(status: str = TaskStatus.PENDING, key: str = "", **fields) -> AgentTask:
    now = timezone.now()
    defaults = {
        "agent": "testkit",
        "operation": "record",
        "payload": {"key": key},
        "status": status,
        "idempotency_key": key or f"key-{time.monotonic_ns()}",
        "correlation_id": "corr-" + (key or "x"),
        "run_after": now + timedelta(hours=1),  # no test worker would take it anyway
        "finished_at": now if status in {TaskStatus.SUCCEEDED, TaskStatus.DEAD, TaskStatus.CANCELLED} else None,
    }
    return AgentTask.objects.create(**{**defaults, **fields})


def run_action(client, url: str, action: str, ids: list[int], follow: bool = True):
    return client.post(url, {"action": action, "_selected_action": [str(i) for i in ids]}, follow=follow)


def page_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def last_action() -> OperatorAction:
    return OperatorAction.objects.order_by("-id").first()


# --- Retry dead tasks ---------------------------------------------------------------------


def test_retry_replays_only_dead_tasks_and_records_the_operator(operator_client):
    dead = [task(TaskStatus.DEAD, f"dead-{i}", attempts=5, last_error="boom") for i in range(2)]
    done = task(TaskStatus.SUCCEEDED, "done")
    waiting = task(TaskStatus.PENDING, "waiting")

    response = run_action(operator_client, reverse(CHANGELIST), "retry_dead", [t.pk for t in [*dead, done, waiting]])

    assert response.status_code == 200
    for row in dead:
        row.refresh_from_db()
        assert (row.status, row.attempts) == (TaskStatus.PENDING, 0)
    assert AgentTask.objects.get(pk=done.pk).status == TaskStatus.SUCCEEDED
    assert AgentTask.objects.get(pk=waiting.pk).status == TaskStatus.PENDING
    [message] = page_messages(response)
    assert "retry dead tasks: 2 tasks done" in message
    assert f"task {done.pk}: is succeeded, not dead" in message
    assert f"task {waiting.pk}: is pending, not dead" in message
    action = last_action()
    assert action.operator == "operator"
    assert action.target_kind == "orchestration.agenttask"
    assert sorted(action.done) == sorted(t.pk for t in dead)
    assert set(action.refused) == {f"task {done.pk}", f"task {waiting.pk}"}


def test_the_dead_letters_list_shows_dead_tasks_only_and_retries_them(operator_client):
    dead = task(TaskStatus.DEAD, "dead-letter", last_error="PermanentError: refused")
    alive = task(TaskStatus.PENDING, "alive")
    url = reverse("admin:orchestration_deadletter_changelist")

    listed = operator_client.get(url)
    assert list(listed.context["cl"].result_list) == [AgentTask.objects.get(pk=dead.pk)]
    assert "PermanentError: refused" in listed.content.decode()

    # A row that is not dead cannot even be selected here: it is outside the list.
    response = run_action(operator_client, url, "retry_dead", [dead.pk, alive.pk])
    assert AgentTask.objects.get(pk=dead.pk).status == TaskStatus.PENDING
    assert "1 task done" in page_messages(response)[0]


# --- Cancel pending tasks -----------------------------------------------------------------


def test_cancel_withdraws_pending_tasks_and_refuses_claimed_or_finished_ones(operator_client):
    pending = task(TaskStatus.PENDING, "pending")
    claimed = task(TaskStatus.CLAIMED, "claimed", claimed_by="host:1", lease_expires_at=timezone.now())
    dead = task(TaskStatus.DEAD, "dead")

    response = run_action(operator_client, reverse(CHANGELIST), "cancel_pending", [pending.pk, claimed.pk, dead.pk])

    pending.refresh_from_db()
    assert pending.status == TaskStatus.CANCELLED
    assert pending.last_error == "cancelled by operator operator"
    assert AgentTask.objects.get(pk=claimed.pk).status == TaskStatus.CLAIMED
    assert AgentTask.objects.get(pk=dead.pk).status == TaskStatus.DEAD
    [message] = page_messages(response)
    assert f"task {claimed.pk}: is claimed: a worker is running it" in message
    assert f"task {dead.pk}: is dead, not pending" in message
    action = last_action()
    assert (action.operator, action.action, action.done) == ("operator", "cancel pending tasks", [pending.pk])


# --- Cancel an order --------------------------------------------------------------------------


@pytest.fixture
def pen():
    return Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100)


def order_in(state: str, key: str) -> Order:
    """An order walked along the state machine to ``state`` (shipped ones get their shipment)."""
    order, _ = create_order(
        "ann@example.com", [Line("PEN", 1)], idempotency_key=key, workflow_id=f"w-{key}", correlation_id=f"c-{key}"
    )
    path = {
        OrderState.CREATED: [],
        OrderState.PAYMENT_PROCESSING: ["inventory.reserved", "payment.requested"],
        OrderState.SHIPPED: [
            "inventory.reserved",
            "payment.requested",
            "payment.charged",
            "fulfillment.requested",
            "fulfillment.shipped",
        ],
        OrderState.COMPLETED: [
            "inventory.reserved",
            "payment.requested",
            "payment.charged",
            "fulfillment.requested",
            "fulfillment.shipped",
            "order.completed",
        ],
    }[state]
    for event in path:
        if event == "fulfillment.shipped":
            Shipment.objects.create(order=order, carrier_reference=f"pcl-{key}")
        order = apply_transition(order.pk, event, agent="order")
    return order


def test_cancel_order_compensates_refuses_shipped_or_ended_orders_and_records_the_operator(operator_client, pen):
    created = order_in(OrderState.CREATED, "created")
    paying = order_in(OrderState.PAYMENT_PROCESSING, "paying")
    shipped = order_in(OrderState.SHIPPED, "shipped")
    completed = order_in(OrderState.COMPLETED, "completed")
    url = reverse("admin:orders_order_changelist")

    response = run_action(
        operator_client, url, "cancel_selected", [o.pk for o in (created, paying, shipped, completed)]
    )

    for order in (created, paying):
        order.refresh_from_db()
        assert order.state == OrderState.CANCELLED
        change = OrderTransition.objects.filter(order=order).latest("id")
        assert (change.event, change.actor) == ("operator.cancel", "operator")
        # The compensation is under way: the cancel event made the release, refund, void and message tasks.
        compensation = set(
            AgentTask.objects.filter(workflow_id=order.workflow_id, event_type="order.cancelled").values_list(
                "agent", "operation"
            )
        )
        assert compensation == {
            ("inventory", "release_stock"),
            ("payment", "refund"),
            ("fulfillment", "void_parcel"),
            ("notification", "notify"),
        }
    assert Order.objects.get(pk=shipped.pk).state == OrderState.SHIPPED
    assert Order.objects.get(pk=completed.pk).state == OrderState.COMPLETED
    [message] = page_messages(response)
    assert "cancel orders: 2 orders done" in message
    assert f"order {shipped.pk} in state SHIPPED cannot take event 'operator.cancel'" in message
    assert f"order {completed.pk} in state COMPLETED cannot take event 'operator.cancel'" in message
    action = last_action()
    assert (action.operator, action.target_kind) == ("operator", "orders.order")
    assert sorted(action.done) == sorted([created.pk, paying.pk])
    assert set(action.refused) == {f"order {shipped.pk}", f"order {completed.pk}"}


def test_the_order_page_offers_cancel_only_where_it_is_legal(operator_client, pen):
    live = order_in(OrderState.PAYMENT_PROCESSING, "live")
    shipped = order_in(OrderState.SHIPPED, "gone")

    assert (
        'id="cancel-order"'
        in operator_client.get(reverse("admin:orders_order_change", args=[live.pk])).content.decode()
    )
    page = operator_client.get(reverse("admin:orders_order_change", args=[shipped.pk])).content.decode()
    assert 'id="cancel-order"' not in page

    cancel = reverse("admin:orders_order_cancel", args=[live.pk])
    response = operator_client.post(cancel, {"reason": "customer phoned"}, follow=True)
    assert Order.objects.get(pk=live.pk).state == OrderState.CANCELLED
    assert OrderTransition.objects.filter(order=live).latest("id").detail == "customer phoned"
    assert "1 order done" in page_messages(response)[0]

    # Posting anyway (a stale page, say) is refused, naming the state, and still recorded.
    response = operator_client.post(reverse("admin:orders_order_cancel", args=[shipped.pk]), follow=True)
    assert "in state SHIPPED cannot take event 'operator.cancel'" in page_messages(response)[0]
    assert Order.objects.get(pk=shipped.pk).state == OrderState.SHIPPED
    assert last_action().refused == {
        f"order {shipped.pk}": f"order {shipped.pk} in state SHIPPED cannot take event 'operator.cancel'"
    }


# --- Breakers and the reclaim ----------------------------------------------------------------


def test_forcing_a_breaker_changes_it_refuses_what_is_not_legal_and_records_the_operator(operator_client, redis_client):
    url = reverse("admin:breakers")

    def force(dependency: str, choice: str) -> str:
        return page_messages(operator_client.post(url, {"dependency": dependency, "force": choice}, follow=True))[0]

    assert "1 breaker done" in force("gateway", "open")
    assert CircuitBreaker("gateway").state()["state"] == "forced_open"
    assert CircuitBreaker("gateway").allow()[0] is False
    assert "breaker gateway: is already forced_open" in force("gateway", "open")
    assert "breaker nowhere: no such breaker" in force("nowhere", "open")
    assert "breaker carrier: is closed, not forced" in force("carrier", "release")

    assert "gateway was forced_open, now forced_closed" in force("gateway", "closed")
    assert "1 breaker done" in force("gateway", "release")
    assert CircuitBreaker("gateway").state()["state"] == "closed"

    actions = list(OperatorAction.objects.order_by("id").values_list("operator", "action", "done", "refused"))
    assert [(a[1], a[2]) for a in actions] == [
        ("force breaker open", ["gateway"]),
        ("force breaker open", []),
        ("force breaker open", []),
        ("release breaker", []),
        ("force breaker closed", ["gateway"]),
        ("release breaker", ["gateway"]),
    ]
    assert {a[0] for a in actions} == {"operator"}
    page = operator_client.get(url).content.decode()
    assert 'class="breaker-gateway" data-state="closed"' in page


def test_run_a_reclaim_takes_back_only_expired_leases(operator_client):
    now = timezone.now()
    expired = task(TaskStatus.CLAIMED, "expired", claimed_by="gone:1", lease_expires_at=now - timedelta(seconds=5))
    live = task(TaskStatus.CLAIMED, "live", claimed_by="busy:2", lease_expires_at=now + timedelta(minutes=5))

    response = operator_client.post(reverse("admin:reclaim"), {"next": reverse("admin:dashboard")}, follow=True)

    assert response.redirect_chain[-1][0] == reverse("admin:dashboard")
    assert AgentTask.objects.get(pk=expired.pk).status == TaskStatus.PENDING
    assert AgentTask.objects.get(pk=live.pk).status == TaskStatus.CLAIMED
    assert "1 expired lease reclaimed" in page_messages(response)[0]
    action = last_action()
    assert (action.operator, action.action, action.done) == ("operator", "reclaim expired leases", [expired.pk])


# --- Read-only by default ---------------------------------------------------------------------


def test_a_viewer_sees_everything_and_can_change_nothing(viewer_client, pen):
    dead = task(TaskStatus.DEAD, "dead")
    order = order_in(OrderState.CREATED, "order")

    listing = viewer_client.get(reverse("admin:orchestration_deadletter_changelist"))
    assert listing.status_code == 200
    assert 'name="action"' not in listing.content.decode()  # no actions without the operate permission
    page = viewer_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert 'id="cancel-order"' not in page and 'name="_save"' not in page

    refused = [
        viewer_client.post(reverse("admin:breakers"), {"dependency": "gateway", "force": "open"}),
        viewer_client.post(reverse("admin:reclaim")),
        viewer_client.post(reverse("admin:orders_order_cancel", args=[order.pk])),
        viewer_client.post(reverse("admin:orchestration_agenttask_change", args=[dead.pk]), {"status": "pending"}),
        viewer_client.get(reverse("admin:orchestration_agenttask_add")),
        viewer_client.get(reverse("admin:orders_order_delete", args=[order.pk])),
    ]
    assert [response.status_code for response in refused] == [403] * len(refused)
    assert AgentTask.objects.get(pk=dead.pk).status == TaskStatus.DEAD
    assert Order.objects.get(pk=order.pk).state == OrderState.CREATED
    assert not OperatorAction.objects.exists()


def test_even_a_superuser_cannot_edit_system_owned_rows(operator_client, pen):
    dead = task(TaskStatus.DEAD, "dead")
    order = order_in(OrderState.CREATED, "order")

    for url in (
        reverse("admin:orchestration_agenttask_change", args=[dead.pk]),
        reverse("admin:orders_order_change", args=[order.pk]),
    ):
        page = operator_client.get(url)
        assert page.status_code == 200
        assert 'name="_save"' not in page.content.decode()
    assert (
        operator_client.post(reverse("admin:orders_order_change", args=[order.pk]), {"state": "COMPLETED"}).status_code
        == 403
    )
    assert Order.objects.get(pk=order.pk).state == OrderState.CREATED


def test_every_admin_page_answers(operator_client, pen, redis_client):
    order = order_in(OrderState.SHIPPED, "shipped")
    dead = task(TaskStatus.DEAD, "dead")
    TaskAttempt.objects.create(
        task=dead,
        number=1,
        fence=1,
        agent="testkit",
        operation="record",
        correlation_id="c",
        worker="w:1",
        status=AttemptStatus.FAILED,
    )
    Worker.objects.create(name="host:1", hostname="host", pid=1)
    OperatorAction.objects.create(operator="operator", action="retry dead tasks", target_kind="x")
    site = admin.site
    for model, model_admin in site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        listing = operator_client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert listing.status_code == 200, info
        first = model_admin.get_queryset(listing.wsgi_request).order_by("pk").first()
        if first is not None:
            assert (
                operator_client.get(reverse("admin:{}_{}_change".format(*info), args=[first.pk])).status_code == 200
            ), info
    for name in ("admin:index", "admin:dashboard", "admin:breakers"):
        assert operator_client.get(reverse(name)).status_code == 200, name
    assert operator_client.get(reverse("admin:orders_order_change", args=[order.pk])).status_code == 200


# --- Who sees what -------------------------------------------------------------------------


def staff_client(django_user_model, *codenames: str):
    user = django_user_model.objects.create_user(f"staff-{len(codenames)}", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_the_dashboard_breakers_and_metrics_need_their_view_permissions(django_user_model, redis_client):
    pages = [reverse("admin:dashboard"), reverse("admin:breakers"), "/metrics"]

    def answers(client) -> list[int]:
        return [client.get(url, REMOTE_ADDR="203.0.113.9").status_code for url in pages]

    bare = staff_client(django_user_model)
    assert answers(bare) == [403, 403, 403]
    assert "app-operations" not in bare.get(reverse("admin:index")).content.decode()  # no empty section
    assert answers(staff_client(django_user_model, "view_agenttask")) == [200, 403, 200]
    breakers_only = staff_client(django_user_model, "view_agenttask", "view_breakers")
    assert answers(breakers_only) == [200, 200, 200]
    index = breakers_only.get(reverse("admin:index")).content.decode()
    assert "Circuit breakers" in index and "Dead letters" not in index


def test_admin_logins_lock_out_one_username_from_one_address_after_failures_until_the_cool_off(
    client, operator, settings, time_machine
):
    def log_in(password: str, address: str) -> int:
        response = client.post(
            "/admin/login/?next=/admin/", {"username": "operator", "password": password}, REMOTE_ADDR=address
        )
        client.logout()
        return response.status_code

    attacker, colleague = "203.0.113.9", "198.51.100.7"
    failures = [log_in("guess", attacker) for _ in range(settings.AXES_FAILURE_LIMIT - 1)]
    assert failures == [200] * (settings.AXES_FAILURE_LIMIT - 1)  # the form again, with its error
    assert log_in("guess", attacker) == 429

    assert log_in("a-long-operator-pass-123", attacker) == 429  # even the right password, from there
    assert log_in("a-long-operator-pass-123", colleague) == 302  # the operator is not locked out elsewhere
    time_machine.move_to(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(seconds=1))
    assert log_in("a-long-operator-pass-123", attacker) == 302


# --- Searches and filters -------------------------------------------------------------------

OUR_APPS = {"orchestration", "orders", "agents", "outside", "api"}


def unindexed_scans(plan: dict, table: str, partial_indexes: set[str]) -> list[str]:
    """The plan's reads of ``table`` that no index condition narrows: the whole table (a walk
    through a partial index, which holds only some rows, such as the dead ones, is fine)."""
    found = []
    if plan.get("Relation Name") == table:
        kind, index = plan["Node Type"], plan.get("Index Name")
        whole_index = kind in {"Index Scan", "Index Only Scan"} and "Index Cond" not in plan
        if kind == "Seq Scan" or (whole_index and index not in partial_indexes):
            found.append(f"{kind} {plan.get('Filter', '')}")
    for child in plan.get("Plans", []):
        found += unindexed_scans(child, table, partial_indexes)
    return found


def test_every_admin_search_is_an_exact_match_that_an_index_serves(operator_client):
    request = operator_client.get(reverse("admin:index")).wsgi_request
    searched = 0
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a whole-table read only where no index can serve
        cursor.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indpred IS NOT NULL")
        partial_indexes = {name for (name,) in cursor.fetchall()}
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in OUR_APPS or not model_admin.get_search_fields(request):
            continue
        for term in ("42", "ann@example.com", "oc_AbCdEfGh"):
            found, _ = model_admin.get_search_results(request, model_admin.get_queryset(request), term)
            sql, params = found.order_by().query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
                plan = cursor.fetchone()[0][0]["Plan"]
            assert not unindexed_scans(plan, model._meta.db_table, partial_indexes), f"{model.__name__}, {term}: {plan}"
            searched += 1
    assert searched >= 3 * 12


def test_a_search_matches_the_whole_term_exactly(operator_client, pen):
    Product.objects.create(sku="PENCIL", name="Pencil", price=Decimal("1.00"), stocked=1)
    url = reverse("admin:orders_product_changelist")

    def found(term: str) -> list[str]:
        return [product.sku for product in operator_client.get(url, {"q": term}).context["cl"].result_list]

    assert found("PEN") == ["PEN"]
    assert found("pen") == []  # exact: the index is on the value as written
    assert found("PEN PENCIL") == []


def test_view_only_staff_cannot_filter_on_what_a_list_does_not_declare(viewer_client):
    task(TaskStatus.DEAD, "secret-payload", payload={"card": "4242"})
    probes = [
        "/admin/api/apiclient/?token_hash__startswith=ab",
        "/admin/orchestration/agenttask/?payload__icontains=4242",
        "/admin/orchestration/agenttask/?last_error__icontains=x",
        "/admin/orchestration/deadletter/?status__exact=dead",  # a filter of the task list, not of this one
        "/admin/orders/order/?customer__startswith=a",
    ]
    declared = [
        "/admin/orchestration/agenttask/?correlation_id=corr-secret-payload&status__exact=dead",
        "/admin/orchestration/agenttask/?agent=testkit&stuck=any&claimed_by=host:1",
        "/admin/orchestration/deadletter/?agent=testkit",
        "/admin/orders/order/?state__exact=CREATED&stuck=yes",
        "/admin/api/apiclient/?is_active__exact=1",
    ]

    assert [viewer_client.get(url).status_code for url in probes] == [400] * len(probes)
    assert [viewer_client.get(url).status_code for url in declared] == [200] * len(declared)


def test_the_links_on_an_order_page_and_a_worker_page_open_the_right_rows(viewer_client, pen):
    order = order_in(OrderState.PAYMENT_PROCESSING, "linked")
    other = order_in(OrderState.CREATED, "other")
    for key in ("reserve", "charge"):
        task(TaskStatus.SUCCEEDED, f"{order.pk}-{key}", workflow_id=order.workflow_id)
    task(TaskStatus.DEAD, f"{order.pk}-dead", workflow_id=order.workflow_id)
    task(TaskStatus.PENDING, f"{other.pk}-other", workflow_id=other.workflow_id)
    held = task(TaskStatus.CLAIMED, "held", claimed_by="host:7", lease_expires_at=timezone.now())
    worker = Worker.objects.create(name="host:7", hostname="host", pid=7)

    page = viewer_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    related = re.search(r'<div class="readonly">(.*?tasks \(.*?)</div>', page, re.S)[1]
    links = dict(
        (text, href.replace("&amp;", "&")) for href, text in re.findall(r'<a href="([^"]+)">([^<]+)</a>', related)
    )
    assert set(links) >= {"tasks (1 dead, 2 succeeded)", "dead letters", "events", "reservations (0)"}
    for text, url in links.items():
        assert viewer_client.get(url).status_code == 200, text
    tasks_listed = viewer_client.get(links["tasks (1 dead, 2 succeeded)"]).context["cl"].result_list
    assert {t.workflow_id for t in tasks_listed} == {order.workflow_id} and len(tasks_listed) == 3

    worker_page = viewer_client.get(reverse("admin:orchestration_worker_changelist")).content.decode()
    claimed = re.search(r'<a href="([^"]+)">claimed tasks</a>', worker_page)[1].replace("&amp;", "&")
    assert [t.pk for t in viewer_client.get(claimed).context["cl"].result_list] == [held.pk]
    assert worker.name in claimed.replace("%3A", ":")


# --- The dashboard ---------------------------------------------------------------------------


def test_the_dashboard_shows_backlog_dead_letters_open_breakers_stuck_orders_and_workers(
    operator_client, pen, redis_client
):
    task(TaskStatus.DEAD, "dead")
    task(
        TaskStatus.PENDING,
        "ready",
        agent="payment",
        operation="charge",
        run_after=timezone.now() - timedelta(seconds=30),
    )
    task(
        TaskStatus.SUCCEEDED,
        "done",
        agent="payment",
        operation="charge",
        created_at=timezone.now() - timedelta(seconds=2),
    )
    stuck = order_in(OrderState.PAYMENT_PROCESSING, "stuck")
    Order.objects.filter(pk=stuck.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    CircuitBreaker("carrier").force("open")
    Worker.objects.create(name="host:42", hostname="host", pid=42, queues="agent.payment")

    response = operator_client.get(reverse("admin:dashboard"))

    assert response.status_code == 200
    context = response.context
    payment = next(row for row in context["backlog"] if row.agent == "payment")
    assert (payment.ready, payment.oldest_ready_seconds >= 29) == (1, True)
    assert context["totals"]["dead"] == 1
    assert [row["dependency"] for row in context["open_breakers"]] == ["carrier"]
    assert [order.pk for order, _quiet in context["stuck_orders"]] == [stuck.pk]
    assert [worker.name for worker in context["workers"]] == ["host:42"]
    charge = next(row for row in context["throughput"].per_agent if row.agent == "payment")
    assert charge.succeeded == 1 and 1.5 < charge.p50_seconds < 10
    page = response.content.decode()
    for section in ("backlog", "throughput", "breakers", "stuck-orders", "workers"):
        assert f'id="{section}"' in page
    assert "forced_open" in page and f"order {stuck.pk}" in page


# --- Large tables -------------------------------------------------------------------------------


def counts_in(queries) -> list[str]:
    return [query["sql"] for query in queries if re.search(r"\bCOUNT\(", query["sql"], re.IGNORECASE)]


def test_a_list_of_a_million_tasks_answers_without_counting_them(operator_client):
    table = AgentTask._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (agent, operation, event_type, payload, payload_version, status, priority,
                attempts, max_attempts, reclaims, run_after, idempotency_key, workflow_id, correlation_id,
                claimed_by, fence, last_error, cost, created_at, updated_at, finished_at)
            SELECT 'bulk', 'op', '', '{{}}'::jsonb, 1,
                   CASE WHEN n % 10 = 0 THEN 'dead' ELSE 'succeeded' END, 0, 1, 5, 0, now(),
                   'bulk:' || n, 'bulk-wf-' || (n % 1000), 'bulk-' || (n % 1000), '', 1,
                   CASE WHEN n % 10 = 0 THEN 'boom ' || n ELSE '' END, 0, now(), now(), now()
            FROM generate_series(1, 1000000) AS n
            """
        )
        cursor.execute(f"ANALYZE {table}")  # what autovacuum does to a table this size

    pages = {
        "all tasks": reverse(CHANGELIST),
        "a later page": reverse(CHANGELIST) + "?p=3",
        "filtered by status": reverse(CHANGELIST) + "?status__exact=dead",
        "filtered by agent": reverse(CHANGELIST) + "?agent=bulk",
        "one workflow": reverse(CHANGELIST) + "?workflow_id=bulk-wf-7",
        "one correlation id": reverse(CHANGELIST) + "?correlation_id=bulk-7",
        "search by key": reverse(CHANGELIST) + "?q=bulk:424242",
        "dead letters": reverse("admin:orchestration_deadletter_changelist"),
        "attempts": reverse("admin:orchestration_taskattempt_changelist"),
    }
    for what, url in pages.items():
        started = time.monotonic()
        with CaptureQueriesContext(connection) as queries:
            response = operator_client.get(url)
        took = time.monotonic() - started
        assert response.status_code == 200, what
        counts = counts_in(queries.captured_queries)
        if what in {"all tasks", "a later page"}:
            assert counts == [], f"{what}: {counts}"  # the estimate from pg_class
        else:
            # At most a bounded count: COUNT(*) over a subquery with a LIMIT.
            assert all(re.search(r"LIMIT \d+\)", sql) for sql in counts), f"{what}: {counts}"
        assert took < 10, f"{what} took {took:.1f}s"
        if what != "attempts":
            assert response.context["cl"].result_list, what

    listing = operator_client.get(reverse(CHANGELIST))
    cl = listing.context["cl"]
    assert cl.paginator.estimated and cl.result_count > 900_000
    assert "about" in listing.content.decode()
    key = operator_client.get(reverse(CHANGELIST) + "?q=bulk:424242").context["cl"]
    assert [t.idempotency_key for t in key.result_list] == ["bulk:424242"]
    assert key.result_count == 1
    workflow = operator_client.get(reverse(CHANGELIST) + "?workflow_id=bulk-wf-7").context["cl"]
    assert workflow.result_count == 1000 and not workflow.paginator.estimated


def test_the_order_page_links_to_its_own_workflow_not_every_order_of_its_correlation_id(operator_client, pen):
    mine, _ = place_order("ann@example.com", [("PEN", 1)], idempotency_key="mine", correlation_id="shared-req")
    place_order("bob@example.com", [("PEN", 2)], idempotency_key="theirs", correlation_id="shared-req")

    page = operator_client.get(reverse("admin:orders_order_change", args=[mine.pk])).content.decode()

    assert f"workflow_id={mine.workflow_id}" in page and "tasks (1 pending)" in page
    assert "shared with other orders" in page
    listed = operator_client.get(reverse(CHANGELIST) + f"?q={mine.pk}").context["cl"].result_list
    assert [task.payload for task in listed] == [{"order_id": mine.pk}]


def test_the_order_list_fetches_items_and_products_with_the_list(operator_client, pen):
    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert operator_client.get(reverse("admin:orders_order_changelist")).status_code == 200
        return len(queries.captured_queries)

    for i in range(3):
        order_in(OrderState.CREATED, f"few-{i}")
    few = queries_for_list()
    for i in range(20):
        order_in(OrderState.CREATED, f"many-{i}")
    assert queries_for_list() == few
    page = operator_client.get(reverse("admin:orders_order_changelist")).content.decode()
    assert "1 x PEN" in page


# --- The timeline picture ------------------------------------------------------------------------


def test_the_timeline_draws_one_bar_per_attempt_and_marks_the_failed_ones():
    start = timezone.now() - timedelta(seconds=10)
    parent = task(TaskStatus.SUCCEEDED, "charge", agent="payment", operation="charge", created_at=start)
    child = task(
        TaskStatus.DEAD,
        "ship",
        agent="fulfillment",
        operation="ship",
        parent=parent,
        workflow_id=parent.workflow_id,
        created_at=start + timedelta(seconds=4),
    )
    never = task(
        TaskStatus.CANCELLED,
        "never",
        agent="notification",
        operation="notify",
        parent=parent,
        workflow_id=parent.workflow_id,
        created_at=start + timedelta(seconds=5),
    )

    def span(of, number, status, begin, end, error=""):
        TaskAttempt.objects.create(
            task=of,
            number=number,
            fence=number,
            agent=of.agent,
            operation=of.operation,
            correlation_id=of.correlation_id,
            worker=f"host:{number}",
            status=status,
            error=error,
            started_at=start + timedelta(seconds=begin),
            finished_at=start + timedelta(seconds=end),
        )

    span(parent, 1, AttemptStatus.RETRYING, 0.1, 0.5, "RetryableError: gateway <unavailable>")
    span(parent, 2, AttemptStatus.SUCCEEDED, 1.5, 2.0)
    span(child, 1, AttemptStatus.FAILED, 4.1, 6.0, "PermanentError: carrier said no")
    trace = build_trace(parent.workflow_id, [Mark(start + timedelta(seconds=2), "order 1: A -> B", parent.pk)])

    svg = render_svg(trace, now=start + timedelta(seconds=10))

    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('<g class="span') == 3
    assert svg.count('<g class="span failed"') == 2
    assert svg.count('class="failure-mark"') == 2
    assert svg.count('class="task-not-run"') == 1 and f'data-task="{never.pk}"' in svg
    assert "gateway &lt;unavailable&gt;" in svg and "<unavailable>" not in svg  # escaped
    assert "PermanentError: carrier said no" in svg
    assert "order 1: A -&gt; B" in svg
    assert ">+0s<" in svg and re.search(r">\+\d+s<", svg)
    # Bars keep time order: the child's failed attempt starts to the right of the parent's bars.
    xs = [float(x) for x in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="[\d.]+" height="12"', svg)]
    assert xs[0] < xs[1] < xs[2]
