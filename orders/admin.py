"""The order domain's rows in the admin, read-only: the agents own every one of them.

The order itself is registered in agents/admin.py: its page mixes the kernel's trace and
the agents' cancel with compensation. Its inlines (items, audit history) are here.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from adminkit.pages import InputFilter, ReadOnlyAdmin, ReadOnlyInline
from orders.models import (
    CustomerNotification,
    Order,
    OrderItem,
    OrderTransition,
    Payment,
    Product,
    Reservation,
    Shipment,
)
from orders.states import OrderState


class OrderFilter(InputFilter):
    """?order=<id>: the rows of one order (the order page links here)."""

    title = "order id"
    parameter_name = "order"
    placeholder = "order id"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip().lstrip("#")
        if not value:
            return queryset
        return queryset.filter(order_id=int(value)) if value.isdigit() else queryset.none()


def order_link(order: Order) -> str:
    url = reverse("admin:orders_order_change", args=[order.pk])
    return format_html('<a href="{}">order {}</a> <small>{}</small>', url, order.pk, order.state)


class OrderRowAdmin(ReadOnlyAdmin):
    """Rows that belong to an order: the order is fetched with the list, and linked."""

    list_select_related = ("order",)
    ordering = ("-id",)

    @admin.display(description="order", ordering="order_id")
    def order_column(self, row) -> str:
        return order_link(row.order)


# --- Inlines of the order page -------------------------------------------------------


class OrderItemInline(ReadOnlyInline):
    model = OrderItem
    fields = ("product", "quantity", "unit_price")
    readonly_fields = fields
    show_change_link = False


class TransitionInline(ReadOnlyInline):
    """The audit history: every change of state, who or what made it, and why."""

    model = OrderTransition
    fields = ("created_at", "from_state", "to_state", "event", "agent", "task_link", "actor", "detail")
    readonly_fields = fields
    ordering = ("created_at", "id")
    show_change_link = False
    verbose_name = "state change"
    verbose_name_plural = "audit history (state changes)"

    @admin.display(description="task")
    def task_link(self, change: OrderTransition) -> str:
        if not change.task_id:
            return "-"
        url = reverse("admin:orchestration_agenttask_change", args=[change.task_id])
        return format_html('<a href="{}">task {}</a>', url, change.task_id)


# --- The order's rows ------------------------------------------------------------------


@admin.register(Product)
class ProductAdmin(ReadOnlyAdmin):
    list_display = ("sku", "name", "price", "stocked", "reserved", "sold", "available")
    search_fields = ("=sku",)
    ordering = ("sku",)

    @admin.display(description="available")
    def available(self, product: Product) -> int:
        return product.available


@admin.register(Reservation)
class ReservationAdmin(OrderRowAdmin):
    list_display = ("id", "order_column", "product", "quantity", "status", "expires_at", "updated_at")
    list_filter = ("status", OrderFilter)
    list_select_related = ("order", "product")
    fields = ("order", "product", "quantity", "status", "expires_at", "created_at", "updated_at")


@admin.register(Payment)
class PaymentAdmin(OrderRowAdmin):
    list_display = ("id", "order_column", "status", "amount", "charge_reference", "refund_reference", "updated_at")
    list_filter = ("status", OrderFilter)
    search_fields = ("=charge_reference", "=refund_reference")
    fields = (
        "order",
        "status",
        "amount",
        "charge_reference",
        "refund_reference",
        "detail",
        "created_at",
        "updated_at",
    )


@admin.register(Shipment)
class ShipmentAdmin(OrderRowAdmin):
    list_display = ("id", "order_column", "status", "carrier_reference", "created_at")
    list_filter = ("status", OrderFilter)
    search_fields = ("=carrier_reference",)
    fields = ("order", "status", "carrier_reference", "created_at")


@admin.register(CustomerNotification)
class CustomerNotificationAdmin(OrderRowAdmin):
    list_display = ("id", "order_column", "kind", "channel", "provider_message_id", "created_at")
    list_filter = ("kind", OrderFilter)
    search_fields = ("=provider_message_id",)
    fields = ("order", "kind", "channel", "provider_message_id", "created_at")


class ToStateFilter(admin.SimpleListFilter):
    title = "to state"
    parameter_name = "to_state"

    def lookups(self, request, model_admin):
        return OrderState.choices

    def queryset(self, request, queryset):
        return queryset.filter(to_state=self.value()) if self.value() else queryset


@admin.register(OrderTransition)
class OrderTransitionAdmin(OrderRowAdmin):
    """Every order's audit rows together: who (agent or operator) moved which order, and why."""

    list_display = ("id", "order_column", "from_state", "to_state", "event", "agent", "actor", "created_at")
    list_filter = (ToStateFilter, OrderFilter)
    search_fields = ("=actor", "=correlation_id")
    fields = (
        "order",
        "from_state",
        "to_state",
        "event",
        "agent",
        "task_id",
        "actor",
        "correlation_id",
        "detail",
        "created_at",
    )
