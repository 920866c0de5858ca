"""DESIGN.md's seven invariants, checked against the database and the outside ledgers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.utils import timezone

from agents.outside.models import CarrierParcel, GatewayEntry, ProviderMessage
from orchestration.models import AgentTask, TaskStatus
from orders.models import Order, OrderTransition, Product, Reservation
from orders.screening import waiting_for_review
from orders.states import TERMINAL_STATES, OrderState, ReservationStatus
from orders.transitions import CUSTOMER_MESSAGES, is_legal


@dataclass
class InvariantResult:
    number: int
    name: str
    violations: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.violations


def check_all() -> list[InvariantResult]:
    return [
        every_order_is_terminal(),
        stock_is_never_oversold(),
        one_charge_and_the_right_net_amount(),
        one_shipment_only_for_paid_orders(),
        one_message_per_order_and_event(),
        audit_trail_is_legal_and_unbroken(),
        no_task_stuck_when_quiet(),
    ]


def every_order_is_terminal() -> InvariantResult:
    """An order waiting for an operator is not done, but is not lost either: until its review
    deadline, after which the deadline job ends it."""
    result = InvariantResult(1, "every accepted order reached a terminal state (or waits for review, in time)")
    unfinished = Order.objects.exclude(state__in=TERMINAL_STATES).exclude(waiting_for_review())
    for order_id, state in unfinished.values_list("pk", "state"):
        result.violations.append(f"order {order_id} is still {state}")
    return result


def stock_is_never_oversold() -> InvariantResult:
    result = InvariantResult(2, "stock never negative; sold + reserved never above stocked")
    active = dict(
        Reservation.objects.filter(status=ReservationStatus.ACTIVE)
        .values("product_id")
        .annotate(total=Sum("quantity"))
        .values_list("product_id", "total")
    )
    committed = dict(
        Reservation.objects.filter(status=ReservationStatus.COMMITTED)
        .values("product_id")
        .annotate(total=Sum("quantity"))
        .values_list("product_id", "total")
    )
    for product in Product.objects.all():
        if product.reserved < 0 or product.sold < 0 or product.reserved + product.sold > product.stocked:
            result.violations.append(
                f"product {product.sku}: stocked {product.stocked}, reserved {product.reserved}, sold {product.sold}"
            )
        if product.reserved != active.get(product.pk, 0) or product.sold != committed.get(product.pk, 0):
            result.violations.append(
                f"product {product.sku}: counters (reserved {product.reserved}, sold {product.sold}) disagree "
                f"with its reservations ({active.get(product.pk, 0)} held, {committed.get(product.pk, 0)} sold)"
            )
    return result


def one_charge_and_the_right_net_amount() -> InvariantResult:
    result = InvariantResult(3, "at most one charge per order at the gateway; net = total if completed, else 0")
    ledger = {
        row["order_ref"]: row
        for row in GatewayEntry.objects.values("order_ref").annotate(
            charges=Count("pk", filter=Q(kind=GatewayEntry.Kind.CHARGE)), net=Sum("amount")
        )
    }
    for order_id, state, total in Order.objects.values_list("pk", "state", "total"):
        row = ledger.pop(str(order_id), {"charges": 0, "net": Decimal(0)})
        if row["charges"] > 1:
            result.violations.append(f"order {order_id} was charged {row['charges']} times")
        if state in TERMINAL_STATES:
            expected = total if state == OrderState.COMPLETED else Decimal(0)
            if row["net"] != expected:
                result.violations.append(f"order {order_id} ({state}) nets {row['net']} at the gateway, not {expected}")
    for order_ref in ledger:
        result.violations.append(f"the gateway holds money for unknown order {order_ref}")
    return result


def one_shipment_only_for_paid_orders() -> InvariantResult:
    """A parcel still booked is a shipment: it belongs to a paid order that shipped. A voided
    one was called off: its order must not have shipped. Either kind counts towards "one"."""
    result = InvariantResult(4, "at most one shipment per order, and only for paid orders")
    states = dict(Order.objects.values_list("pk", "state"))
    shipped = {OrderState.SHIPPED, OrderState.COMPLETED}
    charged = set(GatewayEntry.objects.filter(kind=GatewayEntry.Kind.CHARGE).values_list("order_ref", flat=True))
    for row in CarrierParcel.objects.values("order_ref").annotate(
        parcels=Count("pk"), booked=Count("pk", filter=Q(status=CarrierParcel.Status.BOOKED))
    ):
        order_ref = row["order_ref"]
        if row["parcels"] > 1:
            result.violations.append(f"order {order_ref} has {row['parcels']} parcels at the carrier")
        state = states.get(int(order_ref)) if order_ref.isdigit() else None
        if row["booked"] and (order_ref not in charged or state not in shipped):
            result.violations.append(f"order {order_ref} was shipped while {state or 'unknown'} and unpaid")
        if not row["booked"] and state in shipped:
            result.violations.append(f"order {order_ref} is {state} but its parcel was voided at the carrier")
    return result


def one_message_per_order_and_event() -> InvariantResult:
    result = InvariantResult(5, "exactly one customer message per (order, event) at the provider")
    sent: dict[tuple[str, str], int] = {
        (row["order_ref"], row["kind"]): row["n"]
        for row in ProviderMessage.objects.values("order_ref", "kind").annotate(n=Count("pk"))
    }
    expected: set[tuple[str, str]] = set()
    terminal = set(Order.objects.filter(state__in=TERMINAL_STATES).values_list("pk", flat=True))
    for order_id, to_state in OrderTransition.objects.filter(to_state__in=CUSTOMER_MESSAGES).values_list(
        "order_id", "to_state"
    ):
        if order_id in terminal:
            expected.add((str(order_id), CUSTOMER_MESSAGES[to_state]))
    for key in expected:
        if sent.get(key, 0) != 1:
            result.violations.append(f"order {key[0]} has {sent.get(key, 0)} '{key[1]}' messages, not 1")
    for key, count in sent.items():
        if key not in expected and key[0].isdigit() and int(key[0]) in terminal:
            result.violations.append(f"order {key[0]} got {count} '{key[1]}' messages for an event it never had")
    return result


def audit_trail_is_legal_and_unbroken() -> InvariantResult:
    result = InvariantResult(6, "every audit row is a legal transition; each order's history is unbroken")
    history: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    for order_id, source, target, event in OrderTransition.objects.order_by("order_id", "pk").values_list(
        "order_id", "from_state", "to_state", "event"
    ):
        history[order_id].append((source, target, event))
    for order_id, state in Order.objects.values_list("pk", "state"):
        previous = ""
        for source, target, event in history.get(order_id, []):
            if source != previous:
                result.violations.append(f"order {order_id}: history breaks at {previous or 'start'} -> {source}")
                break
            if not is_legal(source, target, event):
                result.violations.append(f"order {order_id}: illegal {source or 'start'} -> {target} on {event}")
                break
            previous = target
        else:
            if previous != state:
                result.violations.append(f"order {order_id}: history ends at {previous or 'nothing'}, order is {state}")
    return result


def no_task_stuck_when_quiet() -> InvariantResult:
    result = InvariantResult(7, "no task claimed past its lease, none pending and ready")
    now = timezone.now()
    for task_id, agent, operation in AgentTask.objects.filter(
        status=TaskStatus.CLAIMED, lease_expires_at__lt=now
    ).values_list("pk", "agent", "operation")[:1000]:
        result.violations.append(f"task {task_id} ({agent}.{operation}) is claimed past its lease")
    for task_id, agent, operation in AgentTask.objects.filter(
        status=TaskStatus.PENDING, run_after__lte=now
    ).values_list("pk", "agent", "operation")[:1000]:
        result.violations.append(f"task {task_id} ({agent}.{operation}) is pending and ready")
    return result
