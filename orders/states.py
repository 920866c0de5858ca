"""The order's states, one line each on what they mean."""

from django.db import models


class OrderState(models.TextChoices):
    CREATED = "CREATED"  # accepted; stock not yet reserved
    INVENTORY_RESERVED = "INVENTORY_RESERVED"  # every line's stock is held for this order
    SCREENING = "SCREENING"  # the risk-review agent is judging it before payment (a model, or its rule)
    AWAITING_REVIEW = "AWAITING_REVIEW"  # an operator must approve or reject it before its review deadline
    PAYMENT_PROCESSING = "PAYMENT_PROCESSING"  # the customer is being charged
    PAYMENT_CONFIRMED = "PAYMENT_CONFIRMED"  # the gateway took the money
    FULFILLMENT_PENDING = "FULFILLMENT_PENDING"  # waiting for the carrier to take the parcel
    SHIPPED = "SHIPPED"  # the carrier has the parcel
    COMPLETED = "COMPLETED"  # nothing left to do (terminal)
    CANCELLED = "CANCELLED"  # stopped; stock released and any payment refunded (terminal)
    PAYMENT_FAILED = "PAYMENT_FAILED"  # the charge was declined or could not be made (terminal)


TERMINAL_STATES = frozenset({OrderState.COMPLETED, OrderState.CANCELLED, OrderState.PAYMENT_FAILED})
UNPAID_STATES = frozenset(
    {
        OrderState.CREATED,
        OrderState.INVENTORY_RESERVED,
        OrderState.SCREENING,
        OrderState.AWAITING_REVIEW,
        OrderState.PAYMENT_PROCESSING,
    }
)


class ReservationStatus(models.TextChoices):
    ACTIVE = "active"  # stock held, counted in Product.reserved
    COMMITTED = "committed"  # paid for: moved from reserved to sold
    RELEASED = "released"  # given back (cancelled or failed order)
    EXPIRED = "expired"  # given back because payment did not come in time


class PaymentStatus(models.TextChoices):
    CHARGED = "charged"  # the gateway holds the money
    DECLINED = "declined"  # the gateway refused the charge
    REFUNDED = "refunded"  # charged, then given back


class ShipmentStatus(models.TextChoices):
    CREATED = "created"  # the carrier accepted the parcel
    RETURNED = "returned"  # the order was cancelled after the carrier booked it; the booking was voided


class NotificationKind(models.TextChoices):
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RiskVerdict(models.TextChoices):
    APPROVE = "approve"  # go on to payment
    REVIEW = "review"  # an operator decides
    REJECT = "reject"  # cancel, with the reasons


class RiskSource(models.TextChoices):
    PRIMARY = "primary"  # the model named by MODEL_NAME
    FALLBACK = "fallback"  # the model named by MODEL_FALLBACK_NAME
    RULE = "rule"  # no model could decide: the deterministic rule did
