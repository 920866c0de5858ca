"""NotificationAgent: delivers customer messages through the configured channels."""

from __future__ import annotations

from agents.effects import outside_key
from agents.outside import world
from orchestration.errors import RetryableError
from orchestration.registry import AgentDefinition, Operation, register
from orders import actions
from orders.models import Order
from orders.states import NotificationKind

NAME = "notification"

KIND_BY_EVENT = {
    "order.payment_confirmed": NotificationKind.CONFIRMED,
    "order.shipped": NotificationKind.SHIPPED,
    "order.payment_failed": NotificationKind.FAILED,
    "order.cancelled": NotificationKind.CANCELLED,
}


def notify(context) -> dict:
    order = Order.objects.only("customer").get(pk=context.payload["order_id"])
    kind = KIND_BY_EVENT[context.event_type]
    # Keyed by (order, kind), not by task: one message per order and event at the provider.
    key = outside_key(order.pk, kind)
    try:
        reference = world.send_message(key, order_ref=str(order.pk), kind=kind, recipient=order.customer)
    except (world.ServiceUnavailable, world.ServiceTimeout) as error:
        raise RetryableError(str(error)) from error
    actions.record_notification(order.pk, kind, reference)
    return {"sent": kind}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Delivers customer messages through the configured channels.",
        # Compensation: the customer hears how the order ended even when its budget is spent.
        operations=(Operation("notify", notify, dependency="provider", max_attempts=10, compensation=True),),
        writes=frozenset({"orders.CustomerNotification"}),
        must_not=("change an order's state",),
    )
)
