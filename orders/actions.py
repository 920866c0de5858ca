"""Every change of the order domain's rows. Callers own the transaction; each function
that needs one opens an atomic block, so it also works on its own."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from orders.errors import IdempotencyKeyReused, IllegalTransition, InvalidOrder, OutOfStock
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
from orders.states import (
    TERMINAL_STATES,
    UNPAID_STATES,
    OrderState,
    PaymentStatus,
    ReservationStatus,
    ShipmentStatus,
)
from orders.transitions import PLACED, transitions_from


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


def order_limits() -> tuple[int, int]:
    return settings.ORDER_MAX_LINES, settings.ORDER_MAX_QUANTITY


def validate_lines(lines: list[Line]) -> dict[str, Product]:
    """Check the lines against the catalogue; the error names the offending field."""
    max_lines, max_quantity = order_limits()
    if not lines:
        raise InvalidOrder("items", "an order needs at least one line")
    if len(lines) > max_lines:
        raise InvalidOrder("items", f"at most {max_lines} lines per order, not {len(lines)}")
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if not isinstance(line.quantity, int) or isinstance(line.quantity, bool) or line.quantity < 1:
            raise InvalidOrder(f"items[{index}].quantity", f"must be a positive whole number, not {line.quantity!r}")
        if line.quantity > max_quantity:
            raise InvalidOrder(f"items[{index}].quantity", f"at most {max_quantity} units per line")
        if line.sku in seen:
            raise InvalidOrder(f"items[{index}].sku", f"{line.sku!r} appears twice; merge the lines")
        seen.add(line.sku)
    products = Product.objects.in_bulk([line.sku for line in lines], field_name="sku")
    for index, line in enumerate(lines):
        if line.sku not in products:
            raise InvalidOrder(f"items[{index}].sku", f"unknown SKU {line.sku!r}")
    return products


def fingerprint(customer: str, lines: list[Line]) -> str:
    canonical = json.dumps([customer, sorted((line.sku, line.quantity) for line in lines)])
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_order(
    customer: str, lines: list[Line], *, idempotency_key: str, workflow_id: str, correlation_id: str
) -> tuple[Order, bool]:
    """Accept an order (state CREATED) or return the one already made under this key."""
    if not customer or len(customer) > 254:
        raise InvalidOrder("customer", "required, at most 254 characters")
    if not idempotency_key or len(idempotency_key) > 255:
        raise InvalidOrder("idempotency_key", "required, at most 255 characters")
    products = validate_lines(lines)
    digest = fingerprint(customer, lines)
    with transaction.atomic():
        order, created = Order.objects.get_or_create(
            idempotency_key=idempotency_key,
            defaults={
                "customer": customer,
                "fingerprint": digest,
                "workflow_id": workflow_id,
                "correlation_id": correlation_id,
                "total": sum((products[line.sku].price * line.quantity for line in lines), Decimal(0)),
            },
        )
        if not created:
            if order.fingerprint != digest:
                raise IdempotencyKeyReused(
                    f"idempotency key {idempotency_key!r} was used for order {order.pk} with a different body"
                )
            return order, False
        OrderItem.objects.bulk_create(
            OrderItem(
                order=order,
                product=products[line.sku],
                quantity=line.quantity,
                unit_price=products[line.sku].price,
            )
            for line in lines
        )
        OrderTransition.objects.create(
            order=order,
            from_state="",
            to_state=OrderState.CREATED,
            event=PLACED,
            correlation_id=correlation_id,
        )
    return order, True


def lock_order(order_id: int) -> Order:
    """Lock the order row for the rest of the transaction (the one place orders are locked)."""
    return Order.objects.select_for_update().get(pk=order_id)


def apply_transition(
    order_id: int,
    event: str,
    *,
    agent: str = "",
    task_id: int | None = None,
    actor: str = "",
    detail: str = "",
) -> Order:
    """Move the order along the state machine, with its audit row, or refuse naming why.

    The first declared transition for the order's state and the event whose guard lets it
    through is taken."""
    with transaction.atomic():
        order = lock_order(order_id)
        transition, refusal = None, ""
        for candidate in transitions_from(order.state, event):
            refusal = (candidate.guard(order) if candidate.guard else None) or ""
            if not refusal:
                transition = candidate
                break
        if transition is None:
            raise IllegalTransition(order.pk, order.state, event, refusal)
        if transition.note:
            detail = f"{transition.note}: {detail}" if detail else transition.note
        now = timezone.now()
        OrderTransition.objects.create(
            order=order,
            from_state=order.state,
            to_state=transition.target,
            event=event,
            agent=agent,
            task_id=task_id,
            correlation_id=order.correlation_id,
            actor=actor,
            detail=detail[:500],
        )
        order.state = transition.target
        order.updated_at = now
        fields = ["state", "updated_at"]
        if transition.target in TERMINAL_STATES:
            order.finished_at = now
            order.reason = detail[:500] or event
            fields += ["finished_at", "reason"]
        order.save(update_fields=fields)
        return order


# --- Stock --------------------------------------------------------------------


def reservation_ttl() -> timedelta:
    return timedelta(seconds=settings.RESERVATION_TTL_SECONDS)


def reserve_stock(order_id: int) -> list[Reservation]:
    """Hold every line's stock, all or nothing; raises OutOfStock naming the product.

    Each product is decremented by a conditional UPDATE that cannot go below zero, and
    products are touched in primary-key order so two orders cannot deadlock.
    """
    with transaction.atomic():
        # The order lock orders this against a cancel: an order that left CREATED
        # (cancelled while its reservation was on the way) gets no new hold.
        order = lock_order(order_id)
        existing = list(Reservation.objects.filter(order_id=order_id))
        if existing or order.state != OrderState.CREATED:
            return existing
        items = OrderItem.objects.filter(order_id=order_id).select_related("product").order_by("product_id")
        now = timezone.now()
        reservations = []
        for item in items:
            held = Product.objects.filter(
                pk=item.product_id, stocked__gte=F("reserved") + F("sold") + item.quantity
            ).update(reserved=F("reserved") + item.quantity)
            if held != 1:
                raise OutOfStock(item.product.sku, item.quantity)  # rolls back the lines held so far
            reservations.append(
                Reservation(
                    order_id=order_id,
                    product_id=item.product_id,
                    quantity=item.quantity,
                    expires_at=now + reservation_ttl(),
                )
            )
        return Reservation.objects.bulk_create(reservations)


def _settle(order_id: int, from_statuses: list[str], to_status: str) -> int:
    """Move this order's reservations between statuses, adjusting the product counters."""
    counters = {
        (ReservationStatus.ACTIVE, ReservationStatus.COMMITTED): {"reserved": -1, "sold": +1},
        (ReservationStatus.ACTIVE, ReservationStatus.RELEASED): {"reserved": -1},
        (ReservationStatus.ACTIVE, ReservationStatus.EXPIRED): {"reserved": -1},
        (ReservationStatus.COMMITTED, ReservationStatus.RELEASED): {"sold": -1},
    }
    with transaction.atomic():
        rows = list(
            Reservation.objects.select_for_update()
            .filter(order_id=order_id, status__in=from_statuses)
            .order_by("product_id")
        )
        now = timezone.now()
        for reservation in rows:
            changes = counters[(reservation.status, to_status)]
            Product.objects.filter(pk=reservation.product_id).update(
                **{field: F(field) + sign * reservation.quantity for field, sign in changes.items()}
            )
            reservation.status = to_status
            reservation.updated_at = now
            reservation.save(update_fields=["status", "updated_at"])
        return len(rows)


def commit_stock(order_id: int) -> int:
    """Paid: the held units become sold."""
    return _settle(order_id, [ReservationStatus.ACTIVE], ReservationStatus.COMMITTED)


def release_stock(order_id: int) -> int:
    """Cancelled or failed: held or sold units go back on the shelf."""
    return _settle(order_id, [ReservationStatus.ACTIVE, ReservationStatus.COMMITTED], ReservationStatus.RELEASED)


def expire_reservations(order_id: int) -> bool:
    """Give back an unpaid order's expired hold. False when payment already landed or
    the order moved on; the order row lock orders this against a charge in flight."""
    with transaction.atomic():
        order = lock_order(order_id)
        paid = Payment.objects.filter(order_id=order_id, status=PaymentStatus.CHARGED).exists()
        due = Reservation.objects.filter(
            order_id=order_id, status=ReservationStatus.ACTIVE, expires_at__lte=timezone.now()
        ).exists()
        if order.state not in UNPAID_STATES or paid or not due:
            return False
        return _settle(order_id, [ReservationStatus.ACTIVE], ReservationStatus.EXPIRED) > 0


def orders_with_expired_reservations(limit: int = 500) -> list[int]:
    return list(
        Reservation.objects.filter(status=ReservationStatus.ACTIVE, expires_at__lte=timezone.now())
        .order_by("expires_at")
        .values_list("order_id", flat=True)
        .distinct()[:limit]
    )


def reservations_expired_at(order_id: int):
    """The earliest expiry of the order's active holds (None when none is active)."""
    return (
        Reservation.objects.filter(order_id=order_id, status=ReservationStatus.ACTIVE)
        .order_by("expires_at")
        .values_list("expires_at", flat=True)
        .first()
    )


# --- Payments, shipments, messages ---------------------------------------------------


def record_payment(order: Order, status: str, *, charge_reference: str = "", detail: str = "") -> Payment:
    now = timezone.now()
    payment, _ = Payment.objects.update_or_create(
        order=order,
        defaults={
            "status": status,
            "amount": order.total,
            "charge_reference": charge_reference,
            "detail": detail[:500],
            "updated_at": now,
        },
    )
    return payment


def record_refund(order: Order, *, charge_reference: str, refund_reference: str, detail: str = "") -> bool:
    """Our record of a refund the gateway made: the payment becomes REFUNDED, or is written
    as REFUNDED when the charge timed out before we recorded it. True when it changed."""
    now = timezone.now()
    changed = (
        Payment.objects.filter(order=order)
        .exclude(status=PaymentStatus.REFUNDED)
        .update(status=PaymentStatus.REFUNDED, refund_reference=refund_reference, detail=detail[:500], updated_at=now)
    )
    if changed:
        return True
    _, created = Payment.objects.get_or_create(
        order=order,
        defaults={
            "status": PaymentStatus.REFUNDED,
            "amount": order.total,
            "charge_reference": charge_reference,
            "refund_reference": refund_reference,
            "detail": detail[:500],
            "updated_at": now,
        },
    )
    return created


def charged_payment(order_id: int) -> Payment | None:
    return Payment.objects.filter(order_id=order_id, status=PaymentStatus.CHARGED).first()


def record_shipment(order: Order, carrier_reference: str) -> Shipment:
    shipment, _ = Shipment.objects.get_or_create(order=order, defaults={"carrier_reference": carrier_reference})
    return shipment


def record_returned_shipment(order: Order, carrier_reference: str) -> bool:
    """Our record of a parcel the carrier voided for an order cancelled before it shipped
    (written here when the booking timed out before we recorded it). True when it changed."""
    changed = (
        Shipment.objects.filter(order=order)
        .exclude(status=ShipmentStatus.RETURNED)
        .update(status=ShipmentStatus.RETURNED)
    )
    if changed:
        return True
    _, created = Shipment.objects.get_or_create(
        order=order, defaults={"carrier_reference": carrier_reference, "status": ShipmentStatus.RETURNED}
    )
    return created


def reached_state(order_id: int, state: str) -> bool:
    """Whether the order was ever in this state, by its audit trail (written with each change)."""
    return OrderTransition.objects.filter(order_id=order_id, to_state=state).exists()


def record_notification(order_id: int, kind: str, provider_message_id: str, channel: str = "email"):
    notification, _ = CustomerNotification.objects.get_or_create(
        order_id=order_id,
        kind=kind,
        defaults={"provider_message_id": provider_message_id, "channel": channel},
    )
    return notification
