"""The HTTP API: place, read, list and cancel orders. Served under /api/, with its OpenAPI
schema at /api/openapi.json and a docs page at /api/docs."""

from __future__ import annotations

from typing import Annotated

from django.http import HttpRequest, HttpResponse
from ninja import Header, NinjaAPI, Path, Query

from agents.entrypoints import cancel_order as cancel_with_compensation
from api.auth import ClientToken
from api.errors import IDEMPOTENCY_HEADER, ApiError, install_error_handlers
from api.parsing import StrictJsonParser
from api.placing import place_once
from api.schemas import IDEMPOTENCY_KEY_PATTERN, MAX_ID, Error, OrderIn, OrderOut, OrderPage
from api.serialize import client_actor, order_detail, order_summary
from orders.actions import Line
from orders.errors import IllegalTransition
from orders.models import Order
from orders.states import OrderState

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

api = NinjaAPI(
    title="Orders API",
    version="1",
    description=(
        "Place and follow orders. Every request needs `Authorization: Bearer <client token>`. "
        "`POST /api/orders` needs an `Idempotency-Key`: a retry with the same key and body gets "
        "the first response again (with `Idempotent-Replayed: true`); the same key with another "
        'body is refused (422). Every error is `{"error": {"code", "message", "field", "details"}}`. '
        "Each client has a rate limit and a cap on its unfinished orders; past either it gets 429."
    ),
    auth=ClientToken(),
    parser=StrictJsonParser(),
    urls_namespace="api",
)
install_error_handlers(api)

# What each operation may answer besides success, so the schema documents every status.
UNAUTHENTICATED = 401
INVALID = 422  # a parameter or the body is wrong; the error names it
TOO_MANY = 429  # the client's rate limit, or (placing) its cap on unfinished orders
OrderId = Annotated[int, Path(ge=1, le=MAX_ID, description="The order's id.")]


def refuse_unknown_query(request: HttpRequest, *known: str) -> None:
    """A misspelt parameter (?stat=CANCELLED) is refused, not silently ignored."""
    unknown = sorted(set(request.GET) - set(known))
    if unknown:
        raise ApiError(422, "invalid", f"unknown query parameter {unknown[0]!r}", unknown[0])


def owned_order(request: HttpRequest, order_id: int) -> Order:
    """The calling client's order; another client's order does not exist for it (404)."""
    refuse_unknown_query(request)
    order = Order.objects.filter(pk=order_id, api_placement__client=request.auth).first()
    if order is None:
        raise ApiError(404, "not_found", f"no order {order_id} placed by this client", "order_id")
    return order


@api.post(
    "/orders",
    response={201: OrderOut, (400, UNAUTHENTICATED, 413, 415, INVALID, TOO_MANY, 503): Error},
    summary="Place an order",
    openapi_extra={"responses": {201: {"headers": {"Idempotent-Replayed": {"schema": {"type": "string"}}}}}},
)
def place(
    request: HttpRequest,
    payload: OrderIn,
    idempotency_key: Annotated[
        str,
        Header(
            alias=IDEMPOTENCY_HEADER,
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Chosen by the client, unique per order it means to place (e.g. a UUID).",
        ),
    ],
):
    """Accept the order (state CREATED) and start its workflow. 503 with Retry-After when the
    system is overloaded: retry later with the same key. 429 when this client is over its
    rate limit (with Retry-After) or has API_MAX_UNFINISHED_ORDERS orders still in flight."""
    refuse_unknown_query(request)
    lines = [Line(sku=line.sku, quantity=line.quantity) for line in payload.items]
    placement = place_once(request.auth, idempotency_key, payload.customer, lines, request.correlation_id)
    # The stored bytes go out as they are, not re-validated: a replay is the original
    # response, even after the schema has grown a field since.
    reply = HttpResponse(placement.body, status=placement.status, content_type="application/json; charset=utf-8")
    if placement.replayed:
        reply["Idempotent-Replayed"] = "true"
    return reply


@api.get(
    "/orders",
    response={200: OrderPage, (UNAUTHENTICATED, INVALID, TOO_MANY): Error},
    summary="List your orders, newest first",
)
def list_orders(
    request: HttpRequest,
    state: Annotated[OrderState | None, Query(description="Only orders in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID, description="The next_cursor of the previous page.")] = None,
):
    """Keyset pagination on the order id: stable while new orders arrive, and no COUNT(*)."""
    refuse_unknown_query(request, "state", "limit", "cursor")
    orders = Order.objects.filter(api_placement__client=request.auth)
    if state:
        orders = orders.filter(state=state)
    if cursor:
        orders = orders.filter(pk__lt=cursor)
    page = list(orders.order_by("-pk")[: limit + 1])
    next_cursor = page[limit - 1].pk if len(page) > limit else None
    return {"items": [order_summary(order) for order in page[:limit]], "next_cursor": next_cursor}


@api.get(
    "/orders/{order_id}",
    response={200: OrderOut, (UNAUTHENTICATED, 404, INVALID, TOO_MANY): Error},
    summary="An order: state, lines, totals, history",
)
def get_order(request: HttpRequest, order_id: OrderId):
    return order_detail(owned_order(request, order_id))


@api.post(
    "/orders/{order_id}/cancel",
    response={200: OrderOut, (UNAUTHENTICATED, 404, 409, INVALID, TOO_MANY): Error},
    summary="Cancel an order",
)
def cancel(request: HttpRequest, order_id: OrderId):
    """Cancel and compensate (release stock, refund, tell the customer). Cancelling a
    cancelled order answers 200 again; a shipped or otherwise finished one is a 409."""
    order = owned_order(request, order_id)
    try:
        order = cancel_with_compensation(order.pk, actor=client_actor(request.auth))
    except IllegalTransition as refusal:
        if refusal.state != OrderState.CANCELLED:
            raise
        order = Order.objects.get(pk=order.pk)
    return order_detail(order)
