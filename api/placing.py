"""Placing an order through the API, safe to retry: the first response is kept with the
client's idempotency key (Stripe-style) and given again to every retry with the same body."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from agents.placement import place_order
from api.models import ApiClient, ClientOrder
from api.serialize import order_detail
from orders.actions import Line, fingerprint
from orders.errors import IdempotencyKeyReused


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
