"""FulfillmentAgent: creates shipments for paid orders with the carrier."""

from __future__ import annotations

from agents.outside import world
from orchestration.errors import RetryableError
from orchestration.registry import AgentDefinition, Operation, register
from orders import actions
from orders.states import OrderState

NAME = "fulfillment"


def ship(context) -> dict:
    # Locked across the carrier call: nothing cancels the order while a parcel is booked.
    order = actions.lock_order(context.payload["order_id"])
    if order.state != OrderState.FULFILLMENT_PENDING or actions.charged_payment(order.pk) is None:
        return {"skipped": order.state}
    try:
        reference = world.ship(context.outside_key("ship"), order_ref=str(order.pk), customer=order.customer)
    except world.Rejected as refusal:
        context.emit("fulfillment.failed", {"order_id": order.pk, "reason": str(refusal)})
        return {"shipped": False}
    except (world.ServiceUnavailable, world.ServiceTimeout) as error:
        raise RetryableError(str(error)) from error
    actions.record_shipment(order, reference)
    context.emit("fulfillment.shipped", {"order_id": order.pk})
    return {"shipped": reference}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Creates shipments for paid orders with the carrier.",
        operations=(Operation("ship", ship, dead_event="fulfillment.failed", dependency="carrier", max_attempts=5),),
        emits=frozenset({"fulfillment.shipped", "fulfillment.failed"}),
        writes=frozenset({"orders.Shipment"}),
        must_not=("change an order's state", "ship an unpaid order"),
    )
)
