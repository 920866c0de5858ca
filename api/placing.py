"""Placing an order through the API, safe to retry: the first response is kept with the
client's idempotency key (Stripe-style) and given again to every retry with the same body."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from agents.entrypoints import place_order
from api.errors import ApiError
from api.models import ApiClient, ClientOrder
from api.serialize import order_detail
from orders.actions import Line, fingerprint
from orders.errors import IdempotencyKeyReused
from orders.models import Order
from orders.states import TERMINAL_STATES, OrderState

LIVE_STATES = [state.value for state in OrderState if state not in TERMINAL_STATES]


@dataclass(frozen=True)
class Placement:
    status: int
    body: str  # JSON, as first sent
    replayed: bool


def place_once(client: ApiClient, key: str, customer: str, lines: list[Line], correlation_id: str) -> Placement:
    """Place the order once per (client, key). A refused request (bad line, backpressure)
    keeps nothing, so the same key can be retried once the cause is fixed."""
    digest = fingerprint(customer, lines)
    record = ClientOrder.objects.filter(client=client, idempotency_key=key).first()
    if record is None:
        refuse_past_unfinished_cap(client)
        with transaction.atomic():
            claimed = _claim(client, key, digest)
            if claimed is not None:
                order, _ = place_order(
                    customer,
                    lines,
                    # Scoped by client: two clients choosing the same key never meet.
                    idempotency_key=f"api:{client.pk}:{key}",
                    correlation_id=correlation_id,
                )
                body = json.dumps(order_detail(order))
                claimed.order, claimed.response_status, claimed.response_body = order, 201, body
                claimed.save(update_fields=["order", "response_status", "response_body"])
                return Placement(201, body, replayed=False)
        # A concurrent request with this key committed first: answer as it did.
        record = ClientOrder.objects.get(client=client, idempotency_key=key)
    if record.request_fingerprint != digest:
        raise IdempotencyKeyReused(f"key {key!r} was used for order {record.order_id} with a different body")
    return Placement(record.response_status, record.response_body, replayed=True)


def _claim(client: ApiClient, key: str, digest: str) -> ClientOrder | None:
    """Take the key for this transaction, or None when another request holds it. PostgreSQL
    makes a second insert of the same key wait until the first transaction ends."""
    try:
        with transaction.atomic():
            return ClientOrder.objects.create(client=client, idempotency_key=key, request_fingerprint=digest)
    except IntegrityError:
        return None


def unfinished_orders(client: ApiClient, cap: int) -> int:
    """The client's orders not yet in a terminal state, counted up to ``cap``: the live
    orders come from the (state, updated_at) index, each joined to its placement by key."""
    live = Order.objects.filter(state__in=LIVE_STATES, api_placement__client=client)
    return len(live.values("pk")[:cap])


def refuse_past_unfinished_cap(client: ApiClient) -> None:
    """429 when the client already has API_MAX_UNFINISHED_ORDERS orders in flight, so one
    client cannot fill the system. Checked before placing, not under a lock: requests racing
    each other may pass the cap by a few."""
    cap = settings.API_MAX_UNFINISHED_ORDERS
    if unfinished_orders(client, cap) >= cap:
        raise ApiError(
            429,
            "too_many_unfinished_orders",
            f"this client has {cap} orders that have not finished, the most it may have "
            "(API_MAX_UNFINISHED_ORDERS); place more when some have completed or been cancelled",
        )
