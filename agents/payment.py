"""PaymentAgent: charges and refunds customers through the payment gateway."""

from __future__ import annotations

from django.utils import timezone

from agents.effects import Effect, calling_outside, outside_key
from agents.outside import world
from orchestration.registry import AgentDefinition, Operation, register
from orchestration.work.context import TaskContext
from orders import actions
from orders.states import OrderState, PaymentStatus

NAME = "payment"
# An order that ended in one of these keeps no money: whatever the gateway took goes back.
ENDED_UNPAID = frozenset({OrderState.CANCELLED, OrderState.PAYMENT_FAILED})


def charge(context: TaskContext) -> dict:
    """Charge once. The order row stays locked across the gateway call, so a reservation
    cannot expire unseen between our check and the charge landing."""
    order = actions.lock_order(context.payload["order_id"])
    if order.state != OrderState.PAYMENT_PROCESSING or hasattr(order, "payment"):
        return {"skipped": order.state}  # cancelled before we got here, or already settled
    try:
        with calling_outside():
            reference = world.charge(
                outside_key(order.pk, Effect.CHARGE),
                order_ref=str(order.pk),
                amount=order.total,
                customer=order.customer,
            )
    except world.Declined as refusal:
        actions.record_payment(order, PaymentStatus.DECLINED, detail=str(refusal))
        context.emit("payment.declined", {"order_id": order.pk, "reason": str(refusal)})
        return {"declined": True}
    context.add_cost(1)  # a gateway fee, in cost units

    expired_at = actions.reservations_expired_at(order.pk)
    if expired_at is None or expired_at <= timezone.now():
        # The money landed after the hold on the stock ran out: give it back at once.
        # The expiry sweep then cancels the order and releases the stock.
        with calling_outside():  # on a timeout, the next attempt finds both under their keys
            refund_reference = world.refund(
                outside_key(order.pk, Effect.REFUND), order_ref=str(order.pk), amount=order.total
            )
        actions.record_payment(order, PaymentStatus.CHARGED, charge_reference=reference)
        actions.record_refund(
            order,
            charge_reference=reference,
            refund_reference=refund_reference,
            detail="charge landed after the reservation expired",
        )
        context.emit("payment.refunded", {"order_id": order.pk, "reason": "late charge"})
        return {"refunded_late": True}

    actions.record_payment(order, PaymentStatus.CHARGED, charge_reference=reference)
    context.emit("payment.charged", {"order_id": order.pk})
    return {"charged": reference}


def refund(context: TaskContext) -> dict:
    """Give back whatever the gateway took for an order that ended unpaid. The gateway is asked
    by the charge's key, not our Payment row: a charge whose answer was lost (it timed out, its
    task died) took the money without our row ever being written. Safe to run twice, and when
    nothing was taken."""
    order = actions.lock_order(context.payload["order_id"])  # orders this after a charge in flight
    if order.state not in ENDED_UNPAID:
        return {"skipped": order.state}
    if not actions.reached_state(order.pk, OrderState.PAYMENT_PROCESSING):
        return {"refunded": False}  # no charge was ever asked for
    refund_key = outside_key(order.pk, Effect.REFUND)
    with calling_outside():
        taken = world.find_charge(outside_key(order.pk, Effect.CHARGE))
        if taken is None:
            return {"refunded": False}
        # Asked first, so a refund whose own answer was lost is not sent again to time out again.
        given_back = world.find_refund(refund_key)
        reference = (
            given_back.reference
            if given_back
            else world.refund(refund_key, order_ref=str(order.pk), amount=taken.amount)
        )
    reason = context.payload.get("reason", "")
    if actions.record_refund(order, charge_reference=taken.reference, refund_reference=reference, detail=reason):
        context.emit("payment.refunded", {"order_id": order.pk})
    return {"refunded": reference}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Moves customers' money through the payment gateway.",
        operations=(
            Operation("charge", charge, dead_event="payment.failed", dependency="gateway", max_attempts=5),
            Operation("refund", refund, dependency="gateway", max_attempts=20, compensation=True),
        ),
        emits=frozenset({"payment.charged", "payment.declined", "payment.failed", "payment.refunded"}),
        terminal_events=frozenset({"payment.refunded"}),
        writes=frozenset({"orders.Payment"}),
        must_not=("change an order's state", "charge without the order's idempotency key"),
    )
)
