"""OrderAgent, the coordinator: it alone moves orders through their state machine."""

from __future__ import annotations

from django.db import transaction

from orchestration.events import emit
from orchestration.registry import AgentDefinition, Operation, register
from orders.actions import apply_transition, lock_order
from orders.models import Order
from orders.states import TERMINAL_STATES, OrderState
from orders.transitions import BUDGET_STOP

NAME = "order"

# Events from the other agents that move an order.
HEARS = (
    "inventory.reserved",
    "inventory.out_of_stock",
    "inventory.expired",
    "payment.charged",
    "payment.declined",
    "payment.failed",
    "fulfillment.shipped",
    "fulfillment.failed",
)


# What the coordinator tells the other agents when an order enters a state.
ANNOUNCED = {
    OrderState.PAYMENT_PROCESSING: "order.payment_requested",
    OrderState.PAYMENT_CONFIRMED: "order.payment_confirmed",
    OrderState.FULFILLMENT_PENDING: "order.fulfillment_requested",
    OrderState.SHIPPED: "order.shipped",
    OrderState.COMPLETED: "order.completed",
    OrderState.PAYMENT_FAILED: "order.payment_failed",
    OrderState.CANCELLED: "order.cancelled",
}
# The moves the coordinator makes on its own once an order is in a state.
FOLLOW_UPS = {
    OrderState.INVENTORY_RESERVED: "payment.requested",
    OrderState.PAYMENT_CONFIRMED: "fulfillment.requested",
    OrderState.SHIPPED: "order.completed",
}


def announcement(order: Order) -> tuple[str, dict] | None:
    """The event (and payload) that tells the other agents the order is in its state."""
    event = ANNOUNCED.get(order.state)
    if event is None:
        return None
    if order.state in TERMINAL_STATES:
        return event, {"order_id": order.pk, "reason": order.reason}
    return event, {"order_id": order.pk}


def _enter(context, order_id: int, event: str, detail: str = "") -> Order:
    """Apply the event to the order, and announce the state it led to."""
    order = apply_transition(order_id, event, agent=NAME, task_id=context.task_id, detail=detail)
    announced = announcement(order)
    if announced:
        context.emit(*announced)
    return order


def advance(context) -> dict:
    """Apply the event that woke us, then take the steps that follow from the new state."""
    order_id = context.payload["order_id"]
    if lock_order(order_id).state in TERMINAL_STATES:
        # An operator or a budget ended the order while this event was on its way (a charge
        # that landed just before the cancel, say). The cancel's compensation covers it.
        return {"ignored": context.event_type}
    detail = context.payload.get("reason", "") or context.payload.get("error", "")
    order = _enter(context, order_id, context.event_type, detail)
    while order.state in FOLLOW_UPS:
        order = _enter(context, order_id, FOLLOW_UPS[order.state])
    return {"state": order.state}


def stop(context) -> dict:
    """The kernel stopped this order's workflow (its budget is spent): end the order.

    The transitions say what a stop means in each state (orders.transitions): before the
    shipment it cancels, and the cancel's compensation follows; past it the order finishes
    as shipped and completed. Only compensating work follows either way."""
    order_id = context.payload.get("order_id")
    if order_id is None:
        return {"ignored": "not an order's workflow"}
    order = lock_order(order_id)
    if order.state in TERMINAL_STATES:
        return {"ignored": order.state}
    while order.state not in TERMINAL_STATES:
        order = _enter(context, order_id, BUDGET_STOP, context.payload.get("reason", ""))
    return {"state": order.state}


def cancel_order(order_id: int, *, actor: str, reason: str = "") -> Order:
    """An operator's or a client's cancel: the order becomes CANCELLED and the usual
    compensation (release the stock, refund a charge, tell the customer) follows.

    Raises orders.errors.IllegalTransition, naming the order and its state, when the order
    has shipped or already ended; Order.DoesNotExist when there is no such order."""
    with transaction.atomic():
        order = apply_transition(order_id, "operator.cancel", actor=actor, detail=reason or f"cancelled by {actor}")
        emit(*announcement(order), workflow_id=order.workflow_id, correlation_id=order.correlation_id)
    return order


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Advances each order through its state machine.",
        operations=(
            Operation("advance", advance, max_attempts=5),
            Operation("stop_for_budget", stop, max_attempts=10, compensation=True),
        ),
        emits=frozenset(
            {
                "order.payment_requested",
                "order.payment_confirmed",
                "order.fulfillment_requested",
                "order.shipped",
                "order.completed",
                "order.payment_failed",
                "order.cancelled",
            }
        ),
        terminal_events=frozenset({"order.completed"}),
        writes=frozenset({"orders.Order", "orders.OrderTransition"}),
        must_not=("call an outside service", "touch stock, payments, shipments or messages"),
    )
)
