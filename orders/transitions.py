"""The order workflow, declared once as data: the state machine (from, event, to, guard),
what the coordinator announces when an order enters a state, the moves it makes by itself,
and the message the customer gets. Adding a state means editing this file (and the routing
table in agents/routes.py when a new agent must hear about it).

One state and event may have several transitions with different guards: the first whose
guard lets it through is taken (a budget stop cancels before the shipment, finishes after).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orders.screening import needs_screening
from orders.states import NotificationKind
from orders.states import OrderState as S

Guard = Callable[..., str | None]  # returns a refusal reason, or None to allow


@dataclass(frozen=True)
class Transition:
    source: str
    event: str
    target: str
    guard: Guard | None = None
    note: str = ""  # put before the caller's detail in the audit row (and the order's reason)


def _has_no_shipment(order) -> str | None:
    return "a shipment exists" if hasattr(order, "shipment") else None


def _has_shipment(order) -> str | None:
    return None if hasattr(order, "shipment") else "no shipment exists"


def _needs_screening(order) -> str | None:
    return None if needs_screening(order) else "the screening rule does not pick this order"


PLACED = "order.placed"
BUDGET_STOP = "budget.exceeded"
AFTER_SHIPMENT = "stopped by budget after shipment"
REVIEW_EXPIRED = "review.expired"
ACTIVE_BEFORE_SHIPPING = (
    S.CREATED,
    S.INVENTORY_RESERVED,
    S.SCREENING,
    S.AWAITING_REVIEW,
    S.PAYMENT_PROCESSING,
    S.PAYMENT_CONFIRMED,
    S.FULFILLMENT_PENDING,
)

TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.CREATED, "inventory.reserved", S.INVENTORY_RESERVED),
    Transition(S.CREATED, "inventory.out_of_stock", S.CANCELLED),
    Transition(S.CREATED, "inventory.failed", S.CANCELLED),
    # Orders the screening rule picks see the risk-review agent before payment (orders.screening).
    Transition(S.INVENTORY_RESERVED, "payment.requested", S.SCREENING, _needs_screening),
    Transition(S.INVENTORY_RESERVED, "payment.requested", S.PAYMENT_PROCESSING),
    Transition(S.SCREENING, "risk.approved", S.PAYMENT_PROCESSING),
    Transition(S.SCREENING, "risk.rejected", S.CANCELLED, note="rejected by risk review"),
    Transition(S.SCREENING, "risk.review", S.AWAITING_REVIEW),
    Transition(S.SCREENING, "risk.failed", S.AWAITING_REVIEW, note="the risk review failed; an operator decides"),
    Transition(S.AWAITING_REVIEW, "operator.approve", S.PAYMENT_PROCESSING),
    Transition(S.AWAITING_REVIEW, "operator.reject", S.CANCELLED, note="rejected by an operator"),
    # Nobody decided in time: the order is cancelled (it is not paid for unvetted).
    Transition(S.AWAITING_REVIEW, REVIEW_EXPIRED, S.CANCELLED, note="review deadline passed"),
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
        for state in (S.CREATED, S.INVENTORY_RESERVED, S.SCREENING, S.AWAITING_REVIEW, S.PAYMENT_PROCESSING)
    ),
    # Operators can cancel any order that has not shipped.
    *(Transition(state, "operator.cancel", S.CANCELLED, _has_no_shipment) for state in ACTIVE_BEFORE_SHIPPING),
    # A spent budget ends the order from any live state, applied until it is terminal.
    # Before the shipment it cancels, and the cancel's compensation follows. Past it nothing
    # can be undone: the parcel is with the carrier and the customer paid, so the order
    # finishes as shipped and completed, and the customer is told it shipped.
    *(Transition(state, BUDGET_STOP, S.CANCELLED, _has_no_shipment) for state in ACTIVE_BEFORE_SHIPPING),
    Transition(S.FULFILLMENT_PENDING, BUDGET_STOP, S.SHIPPED, _has_shipment, note=AFTER_SHIPMENT),
    Transition(S.SHIPPED, BUDGET_STOP, S.COMPLETED, note=AFTER_SHIPMENT),
)

# What the coordinator tells the other agents when an order enters a state (agents/routes.py
# says who hears each one).
ANNOUNCED: dict[str, str] = {
    S.SCREENING: "order.screening_requested",
    S.AWAITING_REVIEW: "order.review_requested",
    S.PAYMENT_PROCESSING: "order.payment_requested",
    S.PAYMENT_CONFIRMED: "order.payment_confirmed",
    S.FULFILLMENT_PENDING: "order.fulfillment_requested",
    S.SHIPPED: "order.shipped",
    S.COMPLETED: "order.completed",
    S.PAYMENT_FAILED: "order.payment_failed",
    S.CANCELLED: "order.cancelled",
}
# The moves the coordinator makes by itself once an order is in a state.
FOLLOW_UPS: dict[str, str] = {
    S.INVENTORY_RESERVED: "payment.requested",
    S.PAYMENT_CONFIRMED: "fulfillment.requested",
    S.SHIPPED: "order.completed",
}
# The message the customer gets when the order enters a state: one per order and kind.
CUSTOMER_MESSAGES: dict[str, str] = {
    S.PAYMENT_CONFIRMED: NotificationKind.CONFIRMED,
    S.SHIPPED: NotificationKind.SHIPPED,
    S.PAYMENT_FAILED: NotificationKind.FAILED,
    S.CANCELLED: NotificationKind.CANCELLED,
}
# The same messages by the event that announces their state (what the NotificationAgent hears).
MESSAGE_FOR_EVENT: dict[str, str] = {ANNOUNCED[state]: kind for state, kind in CUSTOMER_MESSAGES.items()}

_BY_SOURCE_AND_EVENT: dict[tuple[str, str], tuple[Transition, ...]] = {}
for _transition in TRANSITIONS:
    _key = (_transition.source, _transition.event)
    _BY_SOURCE_AND_EVENT[_key] = (*_BY_SOURCE_AND_EVENT.get(_key, ()), _transition)


def transitions_from(state: str, event: str) -> tuple[Transition, ...]:
    """The declared transitions for this state and event, in the order they are tried."""
    return _BY_SOURCE_AND_EVENT.get((state, event), ())


def is_legal(from_state: str, to_state: str, event: str) -> bool:
    """Whether an audit row describes a declared transition (placement included)."""
    if event == PLACED:
        return from_state == "" and to_state == S.CREATED
    return any(transition.target == to_state for transition in transitions_from(from_state, event))
