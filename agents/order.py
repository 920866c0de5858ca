"""OrderAgent, the coordinator: it alone moves orders through their state machine.

Its steps run inline: inside the transaction of the agent whose event it hears, recorded as
a task and an attempt of their own (Operation.inline), so a hop between agents costs a row,
not a message and a claim.
"""

from __future__ import annotations

from orchestration.registry import AgentDefinition, Operation, register
from orchestration.work.context import TaskContext
from orders.actions import StateChanges, lock_order
from orders.models import Order
from orders.states import TERMINAL_STATES
from orders.transitions import ANNOUNCED, BUDGET_STOP, FOLLOW_UPS

NAME = "order"


def announcement(order: Order) -> tuple[str, dict] | None:
    """The event (and payload) that tells the other agents the order is in its state."""
    event = ANNOUNCED.get(order.state)
    if event is None:
        return None
    if order.state in TERMINAL_STATES:
        return event, {"order_id": order.pk, "reason": order.reason}
    return event, {"order_id": order.pk}


def _enter(context: TaskContext, changes: StateChanges, event: str, detail: str = "") -> Order:
    """Apply the event to the order, and announce the state it led to."""
    order = changes.apply(event, agent=NAME, task_id=context.task_id, detail=detail)
    announced = announcement(order)
    if announced:
        context.emit(*announced)
    return order


def advance(context: TaskContext) -> dict:
    """Apply the event that woke us, then take the steps that follow from the new state."""
    order = lock_order(context.payload["order_id"], context.held)
    if order.state in TERMINAL_STATES:
        # An operator or a budget ended the order while this event was on its way (a charge
        # that landed just before the cancel, say). The cancel's compensation covers it.
        return {"ignored": context.event_type}
    detail = context.payload.get("reason", "") or context.payload.get("error", "")
    changes = StateChanges(order)
    order = _enter(context, changes, context.event_type, detail)
    while order.state in FOLLOW_UPS:
        order = _enter(context, changes, FOLLOW_UPS[order.state])
    changes.save()
    return {"state": order.state}


def stop_for_budget(context: TaskContext) -> dict:
    """The kernel stopped this order's workflow (its budget is spent): end the order.

    The transitions say what a stop means in each state (orders.transitions): before the
    shipment it cancels, and the cancel's compensation follows; past it the order finishes
    as shipped and completed. Only compensating work follows either way."""
    order_id = context.payload.get("order_id")
    if order_id is None:
        return {"ignored": "not an order's workflow"}
    order = lock_order(order_id, context.held)
    if order.state in TERMINAL_STATES:
        return {"ignored": order.state}
    changes = StateChanges(order)
    while order.state not in TERMINAL_STATES:
        order = _enter(context, changes, BUDGET_STOP, context.payload.get("reason", ""))
    changes.save()
    return {"state": order.state}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Advances each order through its state machine.",
        operations=(
            Operation("advance", advance, max_attempts=5, inline=True),
            Operation("stop_for_budget", stop_for_budget, max_attempts=10, compensation=True),
        ),
        emits=frozenset(
            {
                "order.screening_requested",
                "order.review_requested",
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
