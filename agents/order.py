"""OrderAgent, the coordinator: it alone moves orders through their state machine."""

from __future__ import annotations

from django.db import transaction

from orchestration.events import emit
from orchestration.registry import AgentDefinition, Operation, register
from orders.actions import apply_transition, lock_order
from orders.models import Order
from orders.states import TERMINAL_STATES, OrderState

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


def advance(context) -> dict:
    """Apply the event that woke us, then take the steps that follow from the new state."""
    order_id = context.payload["order_id"]
    detail = context.payload.get("reason", "") or context.payload.get("error", "")

    def move(event: str, why: str = ""):
        return apply_transition(order_id, event, agent=NAME, task_id=context.task_id, detail=why)

    if lock_order(order_id).state in TERMINAL_STATES:
        # An operator or a budget ended the order while this event was on its way (a charge
        # that landed just before the cancel, say). The cancel's compensation covers it.
        return {"ignored": context.event_type}
    order = move(context.event_type, detail)
    if order.state == OrderState.INVENTORY_RESERVED:
        order = move("payment.requested")
        context.emit("order.payment_requested", {"order_id": order_id})
    elif order.state == OrderState.PAYMENT_CONFIRMED:
        context.emit("order.payment_confirmed", {"order_id": order_id})
        order = move("fulfillment.requested")
        context.emit("order.fulfillment_requested", {"order_id": order_id})
    elif order.state == OrderState.SHIPPED:
        context.emit("order.shipped", {"order_id": order_id})
        order = move("order.completed")
        context.emit("order.completed", {"order_id": order_id})
    elif order.state == OrderState.PAYMENT_FAILED:
        context.emit("order.payment_failed", {"order_id": order_id, "reason": order.reason})
    elif order.state == OrderState.CANCELLED:
        context.emit("order.cancelled", {"order_id": order_id, "reason": order.reason})
    return {"state": order.state}


def stop(context) -> dict:
    """The kernel stopped this order's workflow (budget spent): cancel it and compensate."""
    order_id = context.payload.get("order_id")
    if order_id is None:
        return {"ignored": "not an order's workflow"}
    order = Order.objects.only("state").get(pk=order_id)
    if order.state in TERMINAL_STATES or order.state == OrderState.SHIPPED:
        return {"ignored": order.state}
    order = apply_transition(
        order_id, "budget.exceeded", agent=NAME, task_id=context.task_id, detail=context.payload.get("reason", "")
    )
    context.emit("order.cancelled", {"order_id": order_id, "reason": order.reason})
    return {"state": order.state}


def cancel_order(order_id: int, *, actor: str, reason: str = "") -> Order:
    """An operator's or a client's cancel: the order becomes CANCELLED and the usual
    compensation (release the stock, refund a charge, tell the customer) follows.

    Raises orders.errors.IllegalTransition, naming the order and its state, when the order
    has shipped or already ended; Order.DoesNotExist when there is no such order."""
    with transaction.atomic():
        order = apply_transition(order_id, "operator.cancel", actor=actor, detail=reason or f"cancelled by {actor}")
        emit("order.cancelled", {"order_id": order.pk, "reason": order.reason}, correlation_id=order.correlation_id)
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
