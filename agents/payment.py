"""PaymentAgent: charges and refunds customers through the payment gateway.

Each operation has two halves: its `call` asks the gateway, with no transaction open and no
row locked while it waits, and its handler records the answer in a short fenced transaction.
So a cancel or an expiry may land while a charge is in flight; the handler then sees the order
as it is now, and the state machine's rule applies: money that lands after the order ended (or
after its hold on the stock ran out) is given back (`payment.charged_late`, heard by refund).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from agents.effects import Effect, calling_outside, outside_key
from agents.outside import world
from orchestration.registry import AgentDefinition, Operation, register
from orchestration.work.context import TaskContext
from orders import actions
from orders.models import Order
from orders.states import OrderState, PaymentStatus

NAME = "payment"
# An order that ended in one of these keeps no money: whatever the gateway took goes back.
ENDED_UNPAID = frozenset({OrderState.CANCELLED, OrderState.PAYMENT_FAILED})
CHARGED_LATE = "payment.charged_late"


@dataclass(frozen=True)
class GatewayAnswer:
    """What the gateway said (or why it was not asked)."""

    reference: str = ""  # the charge or refund it made
    declined: str = ""  # why it refused the charge
    skipped: str = ""  # why nothing was asked
    charge_reference: str = ""  # for a refund: the charge it gave back


def ask_for_charge(context: TaskContext) -> GatewayAnswer:
    """Charge the order's total once, under the order's charge key."""
    order = actions.order_to_charge(context.payload["order_id"])
    if order.state != OrderState.PAYMENT_PROCESSING or order.paid:
        return GatewayAnswer(skipped=order.state)  # cancelled before we got here, or already settled
    try:
        with context.outside(), calling_outside():
            reference = world.charge(
                outside_key(order.pk, Effect.CHARGE),
                order_ref=str(order.pk),
                amount=order.total,
                customer=order.customer,
            )
    except world.Declined as refusal:
        return GatewayAnswer(declined=str(refusal))
    return GatewayAnswer(reference=reference)


def charge(context: TaskContext) -> dict:
    """Record what the gateway answered, against the order as it is now."""
    answer: GatewayAnswer = context.answer
    if answer.skipped:
        return {"skipped": answer.skipped}
    order = actions.lock_order(context.payload["order_id"], context.held)
    if answer.declined:
        if order.state == OrderState.PAYMENT_PROCESSING:
            actions.record_payment(order, PaymentStatus.DECLINED, detail=answer.declined)
            context.emit("payment.declined", {"order_id": order.pk, "reason": answer.declined})
        return {"declined": True}
    context.add_cost(1)  # a gateway fee, in cost units
    expires_at = actions.reservations_expired_at(order.pk)
    on_time = order.state == OrderState.PAYMENT_PROCESSING and expires_at is not None and expires_at > timezone.now()
    actions.record_payment(order, PaymentStatus.CHARGED, charge_reference=answer.reference)
    if not on_time:
        # The money landed after the order ended, or after its hold on the stock ran out (the
        # expiry then cancels it): it goes back.
        context.emit(CHARGED_LATE, {"order_id": order.pk, "reason": f"charge landed with the order {order.state}"})
        return {"charged_late": answer.reference}
    context.emit("payment.charged", {"order_id": order.pk})
    return {"charged": answer.reference}


def ask_for_refund(context: TaskContext) -> GatewayAnswer:
    """Give back whatever the gateway took, asking it by the charge's key rather than trusting
    our Payment row: a charge whose answer was lost (it timed out, its task died) took the
    money without our row ever being written. Safe to run twice, and when nothing was taken."""
    order = Order.objects.only("state").get(pk=context.payload["order_id"])
    if order.state not in ENDED_UNPAID and context.event_type != CHARGED_LATE:
        return GatewayAnswer(skipped=order.state)
    if not actions.reached_state(order.pk, OrderState.PAYMENT_PROCESSING):
        return GatewayAnswer(skipped="no charge was ever asked for")
    refund_key = outside_key(order.pk, Effect.REFUND)
    with context.outside(), calling_outside():
        taken = world.find_charge(outside_key(order.pk, Effect.CHARGE))
        if taken is None:
            return GatewayAnswer(skipped="the gateway took nothing")
        # Asked first, so a refund whose own answer was lost is not sent again to time out again.
        given_back = world.find_refund(refund_key)
        reference = (
            given_back.reference
            if given_back
            else world.refund(refund_key, order_ref=str(order.pk), amount=taken.amount)
        )
    return GatewayAnswer(reference=reference, charge_reference=taken.reference)


def refund(context: TaskContext) -> dict:
    answer: GatewayAnswer = context.answer
    if answer.skipped:
        return {"refunded": False, "skipped": answer.skipped}
    order = actions.lock_order(context.payload["order_id"], context.held)
    reason = context.payload.get("reason", "")
    if actions.record_refund(
        order, charge_reference=answer.charge_reference, refund_reference=answer.reference, detail=reason
    ):
        context.emit("payment.refunded", {"order_id": order.pk})
    return {"refunded": answer.reference}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Moves customers' money through the payment gateway.",
        operations=(
            Operation(
                "charge",
                charge,
                call=ask_for_charge,
                dead_event="payment.failed",
                dependency="gateway",
                max_attempts=5,
            ),
            Operation("refund", refund, call=ask_for_refund, dependency="gateway", max_attempts=20, compensation=True),
        ),
        emits=frozenset({"payment.charged", "payment.declined", "payment.failed", "payment.refunded", CHARGED_LATE}),
        terminal_events=frozenset({"payment.refunded"}),
        writes=frozenset({"orders.Payment"}),
        must_not=("change an order's state", "charge without the order's idempotency key"),
    )
)
