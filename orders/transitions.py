"""The order state machine, declared once as data: (from, event, to, guard)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orders.states import OrderState as S

Guard = Callable[..., str | None]  # returns a refusal reason, or None to allow


@dataclass(frozen=True)
class Transition:
    source: str
    event: str
    target: str
    guard: Guard | None = None


def _has_no_shipment(order) -> str | None:
    return "a shipment exists" if hasattr(order, "shipment") else None


PLACED = "order.placed"
ACTIVE_BEFORE_SHIPPING = (
    S.CREATED,
    S.INVENTORY_RESERVED,
    S.PAYMENT_PROCESSING,
    S.PAYMENT_CONFIRMED,
    S.FULFILLMENT_PENDING,
)

TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.CREATED, "inventory.reserved", S.INVENTORY_RESERVED),
    Transition(S.CREATED, "inventory.out_of_stock", S.CANCELLED),
    Transition(S.INVENTORY_RESERVED, "payment.requested", S.PAYMENT_PROCESSING),
    Transition(S.PAYMENT_PROCESSING, "payment.charged", S.PAYMENT_CONFIRMED),
    Transition(S.PAYMENT_PROCESSING, "payment.declined", S.PAYMENT_FAILED),
    Transition(S.PAYMENT_PROCESSING, "payment.failed", S.PAYMENT_FAILED),
    Transition(S.PAYMENT_CONFIRMED, "fulfillment.requested", S.FULFILLMENT_PENDING),
    Transition(S.FULFILLMENT_PENDING, "fulfillment.shipped", S.SHIPPED),
    Transition(S.FULFILLMENT_PENDING, "fulfillment.failed", S.CANCELLED, _has_no_shipment),
    Transition(S.SHIPPED, "order.completed", S.COMPLETED),
    # A reservation that expires before payment cancels the order.
    *(
        Transition(state, "inventory.expired", S.CANCELLED)
        for state in (S.CREATED, S.INVENTORY_RESERVED, S.PAYMENT_PROCESSING)
    ),
    # Operators and budgets can stop any order that has not shipped.
    *(Transition(state, "operator.cancel", S.CANCELLED, _has_no_shipment) for state in ACTIVE_BEFORE_SHIPPING),
    *(Transition(state, "budget.exceeded", S.CANCELLED, _has_no_shipment) for state in ACTIVE_BEFORE_SHIPPING),
)

_BY_SOURCE_AND_EVENT = {(t.source, t.event): t for t in TRANSITIONS}


def find_transition(state: str, event: str) -> Transition | None:
    return _BY_SOURCE_AND_EVENT.get((state, event))


def is_legal(from_state: str, to_state: str, event: str) -> bool:
    """Whether an audit row describes a declared transition (placement included)."""
    if event == PLACED:
        return from_state == "" and to_state == S.CREATED
    transition = find_transition(from_state, event)
    return transition is not None and transition.target == to_state
