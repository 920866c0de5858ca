"""FulfillmentAgent: books each paid order's parcel with the carrier, or calls it off.

As with payments, each operation asks the carrier in its `call`, with no transaction open,
and records the answer against the order as it is then: a booking that lands after the order
was cancelled is called off (`fulfillment.booked_late`, heard by void_parcel).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.effects import Effect, calling_outside, outside_key
from agents.outside import world
from orchestration.registry import AgentDefinition, Operation, register
from orchestration.work.context import TaskContext
from orders import actions
from orders.models import Order
from orders.states import OrderState

NAME = "fulfillment"
BOOKED_LATE = "fulfillment.booked_late"


@dataclass(frozen=True)
class CarrierAnswer:
    reference: str = ""  # the parcel it booked (or voided)
    rejected: str = ""  # why it refused the parcel
    skipped: str = ""  # why nothing was asked


def ask_for_parcel(context: TaskContext) -> CarrierAnswer:
    order = actions.order_to_ship(context.payload["order_id"])
    if order.state != OrderState.FULFILLMENT_PENDING or not order.charged:
        return CarrierAnswer(skipped=order.state)
    try:
        with context.outside(), calling_outside():
            reference = world.ship(
                outside_key(order.pk, Effect.PARCEL), order_ref=str(order.pk), customer=order.customer
            )
    except world.Rejected as refusal:
        return CarrierAnswer(rejected=str(refusal))
    return CarrierAnswer(reference=reference)


def ship(context: TaskContext) -> dict:
    answer: CarrierAnswer = context.answer
    if answer.skipped:
        return {"skipped": answer.skipped}
    order = actions.lock_order(context.payload["order_id"], context.held)
    if answer.rejected:
        if order.state == OrderState.FULFILLMENT_PENDING:
            context.emit("fulfillment.failed", {"order_id": order.pk, "reason": answer.rejected})
        return {"shipped": False}
    if order.state != OrderState.FULFILLMENT_PENDING:
        # Cancelled while the carrier was booking: the parcel is called off.
        context.emit(BOOKED_LATE, {"order_id": order.pk})
        return {"booked_late": answer.reference}
    actions.record_shipment(order, answer.reference)
    context.emit("fulfillment.shipped", {"order_id": order.pk})
    return {"shipped": answer.reference}


def ask_to_void(context: TaskContext) -> CarrierAnswer:
    """Call off the parcel the carrier booked for an order cancelled before it shipped. The
    carrier is asked by the booking's key, not our Shipment row: a booking whose answer was lost
    (it timed out, its task died) left no row of ours. Safe to run twice, and when nothing was
    booked."""
    order = Order.objects.only("state").get(pk=context.payload["order_id"])
    if order.state != OrderState.CANCELLED or not actions.reached_state(order.pk, OrderState.FULFILLMENT_PENDING):
        return CarrierAnswer(skipped=order.state)  # shipped orders keep their parcel; earlier ones had none
    key = outside_key(order.pk, Effect.PARCEL)
    with context.outside(), calling_outside():
        parcel = world.find_parcel(key)
        if parcel is None:
            return CarrierAnswer(skipped="the carrier booked nothing")
        if parcel.status != parcel.Status.VOIDED:
            world.void_parcel(key)
    return CarrierAnswer(reference=parcel.reference)


def void_parcel(context: TaskContext) -> dict:
    answer: CarrierAnswer = context.answer
    if answer.skipped:
        return {"voided": False, "skipped": answer.skipped}
    order = actions.lock_order(context.payload["order_id"], context.held)
    if actions.record_returned_shipment(order, answer.reference):
        context.emit("fulfillment.voided", {"order_id": order.pk})
    return {"voided": answer.reference}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Books each paid order's parcel with the carrier, or calls it off.",
        operations=(
            Operation(
                "ship", ship, call=ask_for_parcel, dead_event="fulfillment.failed", dependency="carrier", max_attempts=5
            ),
            Operation(
                "void_parcel",
                void_parcel,
                call=ask_to_void,
                dependency="carrier",
                max_attempts=20,
                compensation=True,
            ),
        ),
        emits=frozenset({"fulfillment.shipped", "fulfillment.failed", "fulfillment.voided", BOOKED_LATE}),
        terminal_events=frozenset({"fulfillment.voided"}),
        writes=frozenset({"orders.Shipment"}),
        must_not=("change an order's state", "ship an unpaid order"),
    )
)
