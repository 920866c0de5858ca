"""The order domain's rows. Nothing here knows about Celery or the kernel."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from orders.states import (
    NotificationKind,
    OrderState,
    PaymentStatus,
    ReservationStatus,
    RiskSource,
    RiskVerdict,
    ShipmentStatus,
)


class Product(models.Model):
    """A product and its stock: available = stocked - reserved - sold, never below zero."""

    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    stocked = models.PositiveIntegerField(default=0, help_text="Units ever received.")
    reserved = models.PositiveIntegerField(default=0, help_text="Units held for unpaid orders.")
    sold = models.PositiveIntegerField(default=0, help_text="Units paid for.")

    class Meta:
        constraints = [
            # The database itself refuses overselling, whatever the code does.
            models.CheckConstraint(
                condition=Q(reserved__gte=0) & Q(sold__gte=0) & Q(stocked__gte=F("reserved") + F("sold")),
                name="product_stock_never_oversold",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} ({self.available} available)"

    @property
    def available(self) -> int:
        return self.stocked - self.reserved - self.sold


class Order(models.Model):
    customer = models.CharField(max_length=254)
    state = models.CharField(max_length=32, choices=OrderState.choices, default=OrderState.CREATED)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    idempotency_key = models.CharField(max_length=255, unique=True)
    fingerprint = models.CharField(max_length=64, help_text="Hash of what was asked, to spot a reused key.")
    # The order's own workflow (budget, stop, trace), minted when it was placed; jobs that
    # start work for the order later (the reservation expiry) join it through this column.
    workflow_id = models.CharField(max_length=64)
    # The caller's request id, or the workflow id: links logs and traces; orders may share one.
    correlation_id = models.CharField(max_length=64, db_index=True)
    reason = models.CharField(max_length=500, blank=True, help_text="Why it ended the way it did.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["state", "updated_at"], name="order_state_updated"),
            models.Index(fields=["customer"], name="order_customer"),  # the admin's search by address
            models.Index(fields=["workflow_id"], name="order_workflow"),
        ]

    def __str__(self) -> str:
        return f"order {self.pk} [{self.state}]"


class OrderAwaitingReview(Order):
    """The orders an operator must approve or reject: the admin's review list."""

    class Meta:
        proxy = True
        verbose_name = "order waiting for review"
        verbose_name_plural = "orders waiting for review"


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id}"


class Reservation(models.Model):
    # No index of its own: one_reservation_per_line, which starts with the order, serves its lookups.
    order = models.ForeignKey(Order, on_delete=models.CASCADE, db_index=False, related_name="reservations")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="reservations")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=ReservationStatus.choices, default=ReservationStatus.ACTIVE)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order", "product"], name="one_reservation_per_line")]
        indexes = [
            models.Index(fields=["expires_at"], name="reservation_active", condition=Q(status=ReservationStatus.ACTIVE))
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id} for order {self.order_id} [{self.status}]"


class Payment(models.Model):
    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="payment")
    status = models.CharField(max_length=16, choices=PaymentStatus.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    charge_reference = models.CharField(max_length=100, blank=True)
    refund_reference = models.CharField(max_length=100, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # The admin's exact searches; most payments have no refund, so that one is partial.
        indexes = [
            models.Index(fields=["charge_reference"], name="payment_charge_reference"),
            models.Index(
                fields=["refund_reference"], name="payment_refund_reference", condition=~Q(refund_reference="")
            ),
        ]

    def __str__(self) -> str:
        return f"payment for order {self.order_id} [{self.status}]"


class Shipment(models.Model):
    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="shipment")
    status = models.CharField(max_length=16, choices=ShipmentStatus.choices, default=ShipmentStatus.CREATED)
    carrier_reference = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["carrier_reference"], name="shipment_carrier_reference")]

    def __str__(self) -> str:
        return f"shipment {self.carrier_reference} for order {self.order_id}"


class CustomerNotification(models.Model):
    # No index of its own: one_message_per_order_event, which starts with the order, serves its lookups.
    order = models.ForeignKey(Order, on_delete=models.CASCADE, db_index=False, related_name="notifications")
    kind = models.CharField(max_length=16, choices=NotificationKind.choices)
    channel = models.CharField(max_length=32, default="email")
    provider_message_id = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order", "kind"], name="one_message_per_order_event")]
        indexes = [models.Index(fields=["provider_message_id"], name="notification_provider_id")]

    def __str__(self) -> str:
        return f"{self.kind} message for order {self.order_id}"


class OrderTransition(models.Model):
    """The audit trail: one row per change of an order's state."""

    # No index of its own: transition_order_time, which starts with the order, serves its lookups.
    order = models.ForeignKey(Order, on_delete=models.CASCADE, db_index=False, related_name="transitions")
    from_state = models.CharField(max_length=32, blank=True)
    to_state = models.CharField(max_length=32)
    event = models.CharField(max_length=100)
    agent = models.CharField(max_length=64, blank=True)
    task_id = models.BigIntegerField(null=True, blank=True)
    correlation_id = models.CharField(max_length=64, db_index=True)
    actor = models.CharField(max_length=150, blank=True, help_text="The operator, for manual actions.")
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["order", "created_at"], name="transition_order_time"),
            # Only operators' actions have an actor: the admin's search by operator.
            models.Index(fields=["actor"], name="transition_actor", condition=~Q(actor="")),
        ]

    def __str__(self) -> str:
        return f"order {self.order_id}: {self.from_state or '-'} -> {self.to_state} on {self.event}"


class RiskAssessment(models.Model):
    """The risk-review agent's verdict on one order: who decided (a model or the rule), why, and
    every ask that led there, the ones not acted on included."""

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="risk")
    verdict = models.CharField(max_length=8, choices=RiskVerdict.choices)
    reasons = models.JSONField(default=list)
    decided_by = models.CharField(max_length=8, choices=RiskSource.choices)
    model = models.CharField(max_length=100, blank=True, help_text="The model that decided; empty for the rule.")
    chain = models.JSONField(default=list, help_text="Each ask: the model, its outcome and why.")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.verdict} for order {self.order_id} by {self.model or self.decided_by}"
