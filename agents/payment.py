"""PaymentAgent: charges and refunds customers through the payment gateway."""

from __future__ import annotations

from django.utils import timezone

from agents.outside import world
from orchestration.errors import RetryableError
from orchestration.registry import AgentDefinition, Operation, register
from orders import actions
from orders.states import OrderState, PaymentStatus

NAME = "payment"


def charge(context) -> dict:
    """Charge once. The order row stays locked across the gateway call, so a reservation
    cannot expire unseen between our check and the charge landing."""
    order = actions.lock_order(context.payload["order_id"])
    if order.state != OrderState.PAYMENT_PROCESSING or hasattr(order, "payment"):
        return {"skipped": order.state}  # cancelled before we got here, or already settled
    key = context.outside_key("charge")
    try:
        reference = world.charge(key, order_ref=str(order.pk), amount=order.total, customer=order.customer)
    except world.Declined as refusal:
        actions.record_payment(order, PaymentStatus.DECLINED, detail=str(refusal))
        context.emit("payment.declined", {"order_id": order.pk, "reason": str(refusal)})
        return {"declined": True}
    except (world.ServiceUnavailable, world.ServiceTimeout) as error:
        raise RetryableError(str(error)) from error
    context.add_cost(1)  # a gateway fee, in cost units

    expired_at = actions.reservations_expired_at(order.pk)
    if expired_at is None or expired_at <= timezone.now():
        # The money landed after the hold on the stock ran out: give it back at once.
        # The expiry sweep then cancels the order and releases the stock.
        refund_reference = world.refund(context.outside_key("late-refund"), order_ref=str(order.pk), amount=order.total)
        actions.record_payment(order, PaymentStatus.CHARGED, charge_reference=reference)
        actions.record_refund(order.pk, refund_reference, detail="charge landed after the reservation expired")
        context.emit("payment.refunded", {"order_id": order.pk, "reason": "late charge"})
        return {"refunded_late": True}

    actions.record_payment(order, PaymentStatus.CHARGED, charge_reference=reference)
    context.emit("payment.charged", {"order_id": order.pk})
    return {"charged": reference}


def refund(context) -> dict:
    order_id = context.payload["order_id"]
    actions.lock_order(order_id)
    payment = actions.charged_payment(order_id)
    if payment is None:
        return {"refunded": False}
    try:
        reference = world.refund(context.outside_key("refund"), order_ref=str(order_id), amount=payment.amount)
    except (world.ServiceUnavailable, world.ServiceTimeout) as error:
        raise RetryableError(str(error)) from error
    actions.record_refund(order_id, reference, detail=context.payload.get("reason", ""))
    context.emit("payment.refunded", {"order_id": order_id})
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
        must_not=("change an order's state", "charge without the task's idempotency key"),
    )
)
