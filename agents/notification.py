"""NotificationAgent: delivers customer messages through the configured channels."""

from __future__ import annotations

from agents.effects import calling_outside, outside_key
from agents.outside import world
from orchestration.registry import AgentDefinition, Operation, register
from orchestration.work.context import TaskContext
from orders import actions
from orders.transitions import MESSAGE_FOR_EVENT

NAME = "notification"


def send_message(context: TaskContext) -> str:
    """Send the message this event calls for; returns the provider's reference."""
    order_id = context.payload["order_id"]
    recipient = actions.customer_of(order_id)
    kind = MESSAGE_FOR_EVENT[context.event_type]
    # Keyed by (order, kind), not by task: one message per order and event at the provider.
    with context.outside(), calling_outside():
        return world.send_message(outside_key(order_id, kind), order_ref=str(order_id), kind=kind, recipient=recipient)


def notify(context: TaskContext) -> dict:
    kind = MESSAGE_FOR_EVENT[context.event_type]
    actions.record_notification(context.payload["order_id"], kind, context.answer)
    return {"sent": kind}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Delivers customer messages through the configured channels.",
        # Compensation: the customer hears how the order ended even when its budget is spent.
        operations=(
            Operation("notify", notify, call=send_message, dependency="provider", max_attempts=10, compensation=True),
        ),
        writes=frozenset({"orders.CustomerNotification"}),
        must_not=("change an order's state",),
    )
)
