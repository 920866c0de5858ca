"""FulfillmentAgent: books each paid order's parcel with the carrier, or calls it off."""

from __future__ import annotations

from agents.effects import Effect, calling_outside, outside_key
from agents.outside import world
from orchestration.registry import AgentDefinition, Operation, register
from orchestration.work.context import TaskContext
from orders import actions
from orders.states import OrderState

NAME = "fulfillment"


def ship(context: TaskContext) -> dict:
    # Locked across the carrier call: nothing cancels the order while a parcel is booked.
    order = actions.lock_order(context.payload["order_id"])
    if order.state != OrderState.FULFILLMENT_PENDING or actions.charged_payment(order.pk) is None:
        return {"skipped": order.state}
    try:
        with calling_outside():
            reference = world.ship(
                outside_key(order.pk, Effect.PARCEL), order_ref=str(order.pk), customer=order.customer
            )
    except world.Rejected as refusal:
        context.emit("fulfillment.failed", {"order_id": order.pk, "reason": str(refusal)})
        return {"shipped": False}
    actions.record_shipment(order, reference)
    context.emit("fulfillment.shipped", {"order_id": order.pk})
    return {"shipped": reference}


def void_parcel(context: TaskContext) -> dict:
    """Call off the parcel the carrier booked for an order cancelled before it shipped. The
    carrier is asked by the booking's key, not our Shipment row: a booking whose answer was lost
    (it timed out, its task died) left no row of ours. Safe to run twice, and when nothing was
    booked."""
    order = actions.lock_order(context.payload["order_id"])  # orders this after a booking in flight
    if order.state != OrderState.CANCELLED or not actions.reached_state(order.pk, OrderState.FULFILLMENT_PENDING):
        return {"voided": False}  # shipped orders keep their parcel; earlier ones never had one
    key = outside_key(order.pk, Effect.PARCEL)
    with calling_outside():
        parcel = world.find_parcel(key)
        if parcel is None:
            return {"voided": False}
        if parcel.status != parcel.Status.VOIDED:
            world.void_parcel(key)
    if actions.record_returned_shipment(order, parcel.reference):
        context.emit("fulfillment.voided", {"order_id": order.pk})
    return {"voided": parcel.reference}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Books each paid order's parcel with the carrier, or calls it off.",
        operations=(
            Operation("ship", ship, dead_event="fulfillment.failed", dependency="carrier", max_attempts=5),
            Operation("void_parcel", void_parcel, dependency="carrier", max_attempts=20, compensation=True),
        ),
        emits=frozenset({"fulfillment.shipped", "fulfillment.failed", "fulfillment.voided"}),
        terminal_events=frozenset({"fulfillment.voided"}),
        writes=frozenset({"orders.Shipment"}),
        must_not=("change an order's state", "ship an unpaid order"),
    )
)
