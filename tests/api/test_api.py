"""The HTTP API through Django's test client against real PostgreSQL: tokens, safe retries
(with real concurrent requests), every validation case naming its field, backpressure,
reading, listing and cancelling."""

from __future__ import annotations

import json
import re
import threading
from urllib.request import urlopen

import pytest
from django.contrib.messages.storage.cookie import CookieStorage
from django.core.management import call_command
from django.db import connection
from django.http import HttpRequest
from django.test import Client

from agents.entrypoints import place_order
from agents.outside import world
from agents.outside.models import GatewayEntry
from api.models import ApiClient, ClientOrder
from operations.admin import cancel_orders
from orchestration.registry import registry
from orders.actions import apply_transition
from orders.models import Order, OrderTransition
from orders.states import OrderState
from tests.support import wait_until

ORDER = {"customer": "ann@example.com", "items": [{"sku": "PEN", "quantity": 2}, {"sku": "INK", "quantity": 1}]}


def new_client(name: str) -> tuple[ApiClient, str]:
    client = ApiClient(name=name)
    token = client.issue_token()
    client.save()
    return client, token


class Caller:
    """One API client's view of the API: its token on every request."""

    def __init__(self, token: str):
        self.http = Client()
        self.token = token

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def place(self, body=ORDER, key: str | None = "key-1", content_type: str = "application/json"):
        headers = self.headers(**({"Idempotency-Key": key} if key is not None else {}))
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.http.post("/api/orders", data=data, content_type=content_type, headers=headers)

    def get(self, path: str, **params):
        return self.http.get(path, params, headers=self.headers())

    def cancel(self, order_id: int):
        return self.http.post(f"/api/orders/{order_id}/cancel", headers=self.headers())


@pytest.fixture
def ann(catalogue) -> Caller:
    return Caller(new_client("ann's shop")[1])


@pytest.fixture
def bob(catalogue) -> Caller:
    return Caller(new_client("bob's shop")[1])


def error_of(response) -> dict:
    return response.json()["error"]


# --- Placing, safe to retry ---------------------------------------------------------


def test_a_placed_order_answers_201_with_its_state_items_totals_and_history(ann):
    response = ann.place()

    assert response.status_code == 201
    order = response.json()
    assert order["state"] == "CREATED"
    assert order["total"] == "12.00"
    assert [(line["sku"], line["quantity"], line["line_total"]) for line in order["items"]] == [
        ("PEN", 2, "5.00"),
        ("INK", 1, "7.00"),
    ]
    assert [change["to_state"] for change in order["history"]] == ["CREATED"]
    assert Order.objects.get(pk=order["id"]).customer == "ann@example.com"


def test_a_retry_with_the_same_key_and_body_gets_the_original_response(ann):
    first = ann.place()
    apply_transition(first.json()["id"], "inventory.reserved")  # the order moves on meanwhile

    again = ann.place()

    assert again.status_code == 201
    assert again.content == first.content  # the first response, not the order's state now
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert Order.objects.count() == 1


def test_the_same_key_with_a_different_body_is_refused_naming_the_key(ann):
    ann.place()

    response = ann.place({**ORDER, "items": [{"sku": "PEN", "quantity": 3}]})

    assert response.status_code == 422
    assert error_of(response)["code"] == "idempotency_key_reused"
    assert error_of(response)["field"] == "Idempotency-Key"
    assert Order.objects.count() == 1


@pytest.mark.parametrize("key", [None, "", "x" * 201, "has space", "naïve"])
def test_a_missing_or_malformed_idempotency_key_is_a_400_naming_the_header(ann, key):
    response = ann.place(key=key)

    assert response.status_code == 400
    assert error_of(response)["field"] == "Idempotency-Key"
    assert Order.objects.count() == 0


def test_an_order_takes_its_correlation_id_from_the_request(ann):
    response = ann.http.post(
        "/api/orders",
        data=json.dumps(ORDER),
        content_type="application/json",
        headers=ann.headers(**{"Idempotency-Key": "traced", "X-Request-ID": "checkout-42"}),
    )

    assert response.json()["correlation_id"] == "checkout-42"
    assert Order.objects.get(pk=response.json()["id"]).correlation_id == "checkout-42"


def test_two_clients_using_the_same_key_get_an_order_each(ann, bob):
    first, second = ann.place(key="order-1"), bob.place(key="order-1")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


def test_a_refused_request_leaves_its_key_free_for_the_corrected_retry(ann):
    refused = ann.place({**ORDER, "items": [{"sku": "NOPE", "quantity": 1}]}, key="k")

    accepted = ann.place(key="k")

    assert refused.status_code == 422
    assert accepted.status_code == 201
    assert "Idempotent-Replayed" not in accepted.headers


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_make_one_order_and_get_one_answer(catalogue):
    _, token = new_client("racer")
    racers = 6
    start = threading.Barrier(racers)
    responses = []

    def race():
        try:
            start.wait()
            responses.append(Caller(token).place(key="same-key"))
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [response.status_code for response in responses] == [201] * racers
    assert len({response.content for response in responses}) == 1  # the same answer, to the byte
    assert sum("Idempotent-Replayed" not in response.headers for response in responses) == 1
    assert Order.objects.count() == 1 and ClientOrder.objects.count() == 1


# --- Authentication -----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer oc_not-a-token", "Basic dXNlcjpwYXNz", "oc_token-without-scheme"],
)
def test_no_or_a_bad_token_is_a_401_asking_for_a_bearer_token(ann, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    response = Client().get("/api/orders", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["field"] == "Authorization"


def test_a_deactivated_client_gets_401(catalogue):
    client, token = new_client("gone")
    client.is_active = False
    client.save()

    assert Caller(token).get("/api/orders").status_code == 401


def test_a_token_is_stored_only_as_its_hash_and_records_its_last_use(catalogue):
    client, token = new_client("careful")

    Caller(token).get("/api/orders")

    client.refresh_from_db()
    assert token not in {client.token_hash, client.token_prefix} and token.startswith(client.token_prefix)
    assert client.last_used_at is not None


def test_create_api_client_prints_a_token_that_works(catalogue, capsys):
    call_command("create_api_client", "warehouse")

    token = capsys.readouterr().out.strip()
    assert Caller(token).get("/api/orders").status_code == 200


def cookie_contents(response) -> str:
    """Every cookie the response sets, as stored and as Django's message storage reads it."""
    contents = []
    for morsel in response.cookies.values():
        contents += [morsel.value, repr(CookieStorage(HttpRequest())._decode(morsel.value))]
    return " ".join(contents)


def tokens_on(response) -> list[str]:
    return re.findall(r'<code class="new-token">(oc_[^<]+)</code>', response.content.decode())


def test_a_client_created_in_the_admin_is_shown_its_token_once_and_never_in_a_cookie(catalogue, admin_client):
    response = admin_client.post("/admin/api/apiclient/add/", {"name": "shop", "is_active": "on"})

    [token] = tokens_on(response)
    assert Caller(token).get("/api/orders").status_code == 200
    assert token not in cookie_contents(response)
    assert "no-store" in response.headers["Cache-Control"]
    assert token not in admin_client.get("/admin/api/apiclient/").content.decode()
    assert token not in cookie_contents(admin_client.get("/admin/api/apiclient/"))


def test_issuing_new_tokens_in_the_admin_shows_them_once_and_the_old_ones_stop_working(catalogue, admin_client):
    (first, old_first), (second, old_second) = new_client("one"), new_client("two")

    response = admin_client.post(
        "/admin/api/apiclient/",
        {"action": "issue_new_tokens", "_selected_action": [first.pk, second.pk]},
    )

    tokens = tokens_on(response)
    assert len(tokens) == 2
    assert [Caller(token).get("/api/orders").status_code for token in tokens] == [200, 200]
    assert [Caller(token).get("/api/orders").status_code for token in (old_first, old_second)] == [401, 401]
    assert not any(token in cookie_contents(response) for token in tokens)


# --- Validation: 4xx naming the field, never a 500 -------------------------------------

BAD_BODIES = [
    ({**ORDER, "items": [{"sku": "NOPE", "quantity": 1}]}, "items[0].sku"),
    ({**ORDER, "items": [{"sku": "PEN", "quantity": 0}]}, "items[0].quantity"),
    ({**ORDER, "items": [{"sku": "PEN", "quantity": -3}]}, "items[0].quantity"),
    ({**ORDER, "items": [{"sku": "PEN", "quantity": 101}]}, "items[0].quantity"),
    ({**ORDER, "items": [{"sku": "PEN", "quantity": "2"}]}, "items[0].quantity"),
    ({**ORDER, "items": [{"sku": "PEN", "quantity": 1.5}]}, "items[0].quantity"),
    ({**ORDER, "items": [{"sku": "INK", "quantity": 1}, {"sku": "PEN"}]}, "items[1].quantity"),
    ({**ORDER, "items": [{"sku": "PEN", "quantity": 1}] * 2}, "items[1].sku"),
    ({**ORDER, "items": [{"sku": f"S{i}", "quantity": 1} for i in range(21)]}, "items"),
    ({**ORDER, "items": []}, "items"),
    ({"items": ORDER["items"]}, "customer"),
    ({**ORDER, "customer": ""}, "customer"),
    ({**ORDER, "customer": "nul\x00byte"}, "customer"),
    ({**ORDER, "customer": "x" * 255}, "customer"),
    ({**ORDER, "itmes": []}, "itmes"),
    ([ORDER], "body"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_an_invalid_order_is_a_422_naming_the_field(ann, body, field):
    response = ann.place(body)

    assert response.status_code == 422, response.content
    assert error_of(response)["field"] == field
    assert field in error_of(response)["message"]


def test_a_lone_surrogate_in_a_string_is_a_422_not_a_database_error(ann):
    response = ann.place('{"customer": "\\ud800", "items": [{"sku": "PEN", "quantity": 1}]}')

    assert response.status_code == 422
    assert error_of(response)["field"] == "customer"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        ('{"customer": "ann", "items": [', "application/json", 400, "body"),
        ('{"customer": "a", "customer": "b", "items": []}', "application/json", 400, "body"),
        ("", "application/json", 400, "body"),
        ("[" * 50_000, "application/json", 400, "body"),
        (b"\xff\xfe{}", "application/json", 400, "body"),
        ("customer=ann", "application/x-www-form-urlencoded", 415, "Content-Type"),
        (json.dumps(ORDER), "text/plain", 415, "Content-Type"),
        (json.dumps({**ORDER, "customer": "x" * 70_000}), "application/json", 413, "body"),
    ],
)
def test_a_body_that_is_not_json_or_too_large_is_refused_naming_it(ann, body, content_type, status, field):
    response = ann.place(body, content_type=content_type)

    assert response.status_code == status, response.content
    assert error_of(response)["field"] == field


# --- Backpressure --------------------------------------------------------------------


def test_an_overloaded_system_answers_503_with_retry_after_but_still_replays(ann, settings):
    accepted = ann.place(key="before")
    settings.BACKPRESSURE_MAX_PENDING = 1  # the accepted order's reservation is pending

    refused = ann.place({**ORDER, "customer": "bea@example.com"}, key="during")
    replayed = ann.place(key="before")

    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert error_of(refused)["code"] == "overloaded"
    assert replayed.status_code == 201 and replayed.json() == accepted.json()


# --- Fair use: one client cannot lock the others out ------------------------------------


def test_a_client_over_its_rate_limit_gets_429_with_retry_after_and_the_others_are_still_served(
    ann, bob, settings, redis_client
):
    settings.API_RATE_PER_SECOND = 0.01  # a new token every 100 s
    settings.API_RATE_BURST = 3

    answers = [ann.get("/api/orders").status_code for _ in range(3)]
    refused = ann.get("/api/orders")
    refused_order = ann.place()

    assert answers == [200, 200, 200]
    assert refused.status_code == refused_order.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 100
    assert error_of(refused)["code"] == "rate_limited"
    assert "API_RATE_PER_SECOND" in error_of(refused)["message"]
    assert Order.objects.count() == 0
    assert bob.get("/api/orders").status_code == 200


def test_a_client_with_too_many_unfinished_orders_gets_429_until_one_finishes(ann, bob, settings):
    settings.API_MAX_UNFINISHED_ORDERS = 2
    first = ann.place(key="a").json()["id"]
    ann.place(key="b")

    refused = ann.place(key="c")

    assert refused.status_code == 429
    assert error_of(refused)["code"] == "too_many_unfinished_orders"
    assert "API_MAX_UNFINISHED_ORDERS" in error_of(refused)["message"]
    assert ann.place(key="a").status_code == 201  # a retry of an accepted order is still answered
    assert bob.place(key="c").status_code == 201  # another client is not held back
    ann.cancel(first)  # a terminal state frees a place
    assert ann.place(key="c").status_code == 201
    assert ann.place(key="d").status_code == 429


# --- Reading and listing ---------------------------------------------------------------


def test_an_order_is_read_with_its_history_as_it_is_now(ann):
    order_id = ann.place().json()["id"]
    apply_transition(order_id, "inventory.reserved", agent="inventory")

    order = ann.get(f"/api/orders/{order_id}").json()

    assert order["state"] == "INVENTORY_RESERVED"
    assert [(c["from_state"], c["to_state"], c["by"]) for c in order["history"]] == [
        ("", "CREATED", ""),
        ("CREATED", "INVENTORY_RESERVED", "inventory"),
    ]


@pytest.mark.parametrize("path", ["/api/orders/999999", "/api/orders/9223372036854775807"])
def test_an_unknown_order_is_a_404(ann, path):
    response = ann.get(path)

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_another_clients_orders_are_invisible(ann, bob):
    order_id = ann.place().json()["id"]
    place_order("walk-in@example.com", [("PEN", 1)], idempotency_key="not-through-the-api")

    assert bob.get(f"/api/orders/{order_id}").status_code == 404
    assert bob.cancel(order_id).status_code == 404
    assert bob.get("/api/orders").json()["items"] == []


def test_the_list_pages_newest_first_without_gaps_or_repeats_while_orders_arrive(ann):
    ids = [ann.place(key=f"k{i}").json()["id"] for i in range(5)]

    first = ann.get("/api/orders", limit=2).json()
    ann.place(key="arrived-meanwhile")
    second = ann.get("/api/orders", limit=2, cursor=first["next_cursor"]).json()
    last = ann.get("/api/orders", limit=2, cursor=second["next_cursor"]).json()

    seen = [order["id"] for page in (first, second, last) for order in page["items"]]
    assert seen == sorted(ids, reverse=True)
    assert last["next_cursor"] is None


def test_the_list_filters_by_state(ann):
    reserved = ann.place(key="a").json()["id"]
    ann.place(key="b")
    apply_transition(reserved, "inventory.reserved")

    page = ann.get("/api/orders", state="INVENTORY_RESERVED").json()

    assert [order["id"] for order in page["items"]] == [reserved]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"state": "LOST"}, "state"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"cursor": "x"}, "cursor")],
)
def test_a_bad_list_parameter_is_a_422_naming_it(ann, params, field):
    response = ann.get("/api/orders", **params)

    assert response.status_code == 422
    assert error_of(response)["field"] == field


# --- Cancelling ----------------------------------------------------------------------


def test_cancelling_an_order_cancels_it_and_a_repeat_answers_the_same(ann):
    order_id = ann.place().json()["id"]

    first, again = ann.cancel(order_id), ann.cancel(order_id)

    assert first.status_code == again.status_code == 200
    assert first.json()["state"] == again.json()["state"] == "CANCELLED"
    assert first.json()["history"][-1]["by"] == "api client ann's shop"
    assert Order.objects.get(pk=order_id).state == OrderState.CANCELLED


def test_an_operators_cancel_shows_as_operator_never_as_their_username(ann, django_user_model):
    order_id = ann.place().json()["id"]
    alice = django_user_model.objects.create_superuser("alice.operator", "alice@example.com", "a-long-pass-123")
    cancel_orders([order_id], operator=alice)

    order = ann.get(f"/api/orders/{order_id}").json()

    assert order["state"] == "CANCELLED"
    assert order["history"][-1]["by"] == "operator"
    assert "alice" not in json.dumps(order)
    assert OrderTransition.objects.filter(order_id=order_id).latest("id").actor == "alice.operator"  # audit keeps it


def test_cancelling_a_shipped_order_is_a_409_naming_its_state(ann):
    order_id = ann.place().json()["id"]
    for event in ("inventory.reserved", "payment.requested", "payment.charged", "fulfillment.requested"):
        apply_transition(order_id, event)
    apply_transition(order_id, "fulfillment.shipped")

    response = ann.cancel(order_id)

    assert response.status_code == 409
    assert error_of(response)["code"] == "illegal_state"
    assert "SHIPPED" in error_of(response)["message"]


# --- Callers cannot choose failures ---------------------------------------------------


def test_with_simulated_failures_off_a_crash_tag_in_the_address_kills_no_worker(ann, start_worker):
    # Given workers that do not simulate failures, and a gateway told through Redis to decline all
    worker = start_worker(registry.queues(), concurrency=2, env={"SIMULATED_FAILURES": "false"})
    pool = sorted(worker.pool_pids())
    world.configure("gateway", refusal_rate=1.0)

    # When a caller asks for a crash in the customer address
    response = ann.place({**ORDER, "customer": "mallory+crash@example.com"}, key="mallory")
    order_id = response.json()["id"]

    # Then the order goes through as any other, and every worker process is still the same one
    wait_until(lambda: ann.get(f"/api/orders/{order_id}").json()["state"] == "COMPLETED", timeout=45)
    assert worker.is_running() and sorted(worker.pool_pids()) == pool
    assert GatewayEntry.objects.filter(order_ref=str(order_id), kind="charge").count() == 1


# --- The schema and the docs -----------------------------------------------------------


def test_the_docs_page_loads_its_scripts_from_this_server_not_a_cdn(live_server):
    page = urlopen(f"{live_server.url}/api/docs").read().decode()

    assets = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"', page)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    assert not [asset for asset in assets if asset.startswith(("http:", "https:", "//"))]
    for asset in assets:
        assert urlopen(f"{live_server.url}{asset}").status == 200, asset


def test_the_openapi_schema_and_the_docs_page_are_served(db):
    schema = Client().get("/api/openapi.json").json()

    assert {"/api/orders", "/api/orders/{order_id}", "/api/orders/{order_id}/cancel"} <= set(schema["paths"])
    assert Client().get("/api/docs").status_code == 200
