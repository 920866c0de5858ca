"""The outside world's own ledgers: a payment gateway, a carrier, a message provider, and the
calls a chat-completions endpoint billed.

They are written on their own connection, outside the calling agent's transaction,
the way a real service keeps its records whatever happens to the caller.
"""

from django.db import models


class GatewayEntry(models.Model):
    class Kind(models.TextChoices):
        CHARGE = "charge"
        REFUND = "refund"

    idempotency_key = models.CharField(max_length=255, unique=True)
    order_ref = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    reference = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} for {self.order_ref}"


class CarrierParcel(models.Model):
    class Status(models.TextChoices):
        BOOKED = "booked"  # the carrier will pick it up
        VOIDED = "voided"  # the booking was called off before it shipped

    idempotency_key = models.CharField(max_length=255, unique=True)
    order_ref = models.CharField(max_length=64, db_index=True)
    reference = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.BOOKED)
    created_at = models.DateTimeField(auto_now_add=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"parcel {self.reference} for {self.order_ref} [{self.status}]"


class ProviderMessage(models.Model):
    idempotency_key = models.CharField(max_length=255, unique=True)
    order_ref = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=32)
    recipient = models.CharField(max_length=254)
    reference = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} message to {self.recipient}"


class ModelCall(models.Model):
    """One completion the simulated model endpoint made and billed, stored under the request's
    idempotency key: a repeat of the key gets this answer back and is not billed again."""

    idempotency_key = models.CharField(max_length=255, unique=True)
    model = models.CharField(max_length=100)
    order_ref = models.CharField(max_length=64, db_index=True, blank=True, help_text="The order the prompt named.")
    answer = models.TextField(help_text="The completion's text, as sent.")
    prompt_tokens = models.PositiveIntegerField()
    completion_tokens = models.PositiveIntegerField()
    replays = models.PositiveIntegerField(default=0, help_text="Repeats answered from this record, unbilled.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.model} completion for {self.order_ref or 'no order'}"
