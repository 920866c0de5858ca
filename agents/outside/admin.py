"""The simulated outside world's ledgers, read-only: what the gateway, the carrier and the
message provider recorded, and what the simulated model billed, to set against our own rows."""

from django.contrib import admin

from adminkit.pages import ReadOnlyAdmin
from agents.outside.models import CarrierParcel, GatewayEntry, ModelCall, ProviderMessage


@admin.register(GatewayEntry)
class GatewayEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "order_ref", "amount", "reference", "idempotency_key", "created_at")
    list_filter = ("kind",)
    search_fields = ("=order_ref", "=reference", "=idempotency_key")
    ordering = ("-id",)


@admin.register(CarrierParcel)
class CarrierParcelAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "order_ref", "reference", "idempotency_key", "created_at", "voided_at")
    list_filter = ("status",)
    search_fields = ("=order_ref", "=reference", "=idempotency_key")
    ordering = ("-id",)


@admin.register(ProviderMessage)
class ProviderMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "order_ref", "recipient", "reference", "created_at")
    search_fields = ("=order_ref", "=reference", "=idempotency_key")
    ordering = ("-id",)


@admin.register(ModelCall)
class ModelCallAdmin(ReadOnlyAdmin):
    list_display = ("id", "model", "order_ref", "prompt_tokens", "completion_tokens", "replays", "created_at")
    list_filter = ("model",)
    search_fields = ("=order_ref", "=idempotency_key")
    ordering = ("-id",)
