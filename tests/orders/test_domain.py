"""The order domain in-process against real PostgreSQL: placement, the state machine,
stock under concurrency, and the invariant checker catching each broken invariant."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from agents.entrypoints import place_order
from agents.invariants import check_all
from agents.outside.models import CarrierParcel, GatewayEntry, ProviderMessage
from orchestration.models import AgentTask, TaskStatus
from orders import actions
from orders.errors import IdempotencyKeyReused, IllegalTransition, InvalidOrder, OutOfStock
from orders.models import Order, OrderTransition, Product, Reservation, Shipment
from orders.states import TERMINAL_STATES, OrderState, PaymentStatus
from orders.transitions import BUDGET_STOP

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pen(transactional_db):
    return Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=10)


def test_placing_an_order_is_idempotent_on_its_key(pen):
    first, created = place_order("a@example.com", [("PEN", 2)], idempotency_key="k1")
    again, created_again = place_order("a@example.com", [("PEN", 2)], idempotency_key="k1")

    assert created and not created_again and first.pk == again.pk
    assert Order.objects.count() == 1
    assert AgentTask.objects.filter(operation="reserve_stock").count() == 1  # one workflow, not two


def test_a_key_reused_with_a_different_body_is_refused(pen):
    place_order("a@example.com", [("PEN", 2)], idempotency_key="k1")

    with pytest.raises(IdempotencyKeyReused, match="k1"):
        place_order("a@example.com", [("PEN", 3)], idempotency_key="k1")


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([("NOPE", 1)], "items[0].sku"),
        ([("PEN", 0)], "items[0].quantity"),
        ([("PEN", 1000)], "items[0].quantity"),
        ([], "items"),
    ],
)
def test_bad_lines_are_refused_naming_the_field(pen, items, field):
    with pytest.raises(InvalidOrder) as refusal:
        place_order("a@example.com", items, idempotency_key="bad")

    assert refusal.value.field == field
    assert not Order.objects.exists()


def test_an_illegal_transition_names_the_order_its_state_and_the_event(pen):
    order, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key="k")

    with pytest.raises(IllegalTransition) as refusal:
        actions.apply_transition(order.pk, "fulfillment.shipped")

    assert str(refusal.value) == f"order {order.pk} in state CREATED cannot take event 'fulfillment.shipped'"
    assert Order.objects.get(pk=order.pk).state == OrderState.CREATED
    assert OrderTransition.objects.filter(order=order).count() == 1  # only the placement


def test_a_transition_writes_the_state_and_its_audit_row(pen):
    order, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key="k")

    actions.apply_transition(order.pk, "inventory.reserved", agent="order", task_id=42)

    row = OrderTransition.objects.filter(order=order).latest("pk")
    assert (row.from_state, row.to_state, row.event, row.agent, row.task_id) == (
        "CREATED",
        "INVENTORY_RESERVED",
        "inventory.reserved",
        "order",
        42,
    )
    assert row.correlation_id == order.correlation_id


def test_a_budget_stop_cancels_an_order_before_its_shipment_and_completes_it_after(pen):
    unshipped, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key="stop-before")
    shipped, _ = place_order("b@example.com", [("PEN", 1)], idempotency_key="stop-after")
    for order in (unshipped, shipped):
        for event in ("inventory.reserved", "payment.requested", "payment.charged", "fulfillment.requested"):
            actions.apply_transition(order.pk, event)
    Shipment.objects.create(order=shipped, carrier_reference="parcel-1")

    reached = {}
    for order in (unshipped, shipped):
        reached[order.pk] = []
        # What the OrderAgent's stop does: apply the stop until the order has ended.
        while Order.objects.get(pk=order.pk).state not in TERMINAL_STATES:
            moved = actions.apply_transition(order.pk, BUDGET_STOP, detail="budget exceeded: step budget spent")
            reached[order.pk].append(moved.state)

    assert reached == {unshipped.pk: ["CANCELLED"], shipped.pk: ["SHIPPED", "COMPLETED"]}
    assert Order.objects.get(pk=unshipped.pk).reason == "budget exceeded: step budget spent"
    finished = Order.objects.get(pk=shipped.pk)
    assert finished.reason == "stopped by budget after shipment: budget exceeded: step budget spent"
    assert violated(6) == []  # every row a declared transition


def test_eight_orders_racing_for_the_last_unit_exactly_one_gets_it(pen):
    Product.objects.filter(pk=pen.pk).update(stocked=1)
    orders = [place_order(f"c{i}@example.com", [("PEN", 1)], idempotency_key=f"race{i}")[0] for i in range(8)]
    barrier = threading.Barrier(8)
    outcomes = []

    def reserve(order):
        barrier.wait()
        try:
            actions.reserve_stock(order.pk)
            outcomes.append("reserved")
        except OutOfStock:
            outcomes.append("out of stock")
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["out of stock"] * 7 + ["reserved"]
    pen.refresh_from_db()
    assert pen.reserved == 1 and pen.available == 0


# --- check_invariants catches each invariant broken on purpose -----------------------


def completed_order(pen, key="done") -> Order:
    order, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key=key)
    for event in [
        "inventory.reserved",
        "payment.requested",
        "payment.charged",
        "fulfillment.requested",
        "fulfillment.shipped",
        "order.completed",
    ]:
        actions.apply_transition(order.pk, event)
    actions.reserve_stock(order.pk)
    actions.commit_stock(order.pk)
    GatewayEntry.objects.create(
        idempotency_key=f"{key}-charge", order_ref=str(order.pk), kind="charge", amount=order.total, reference=f"{key}c"
    )
    CarrierParcel.objects.create(idempotency_key=f"{key}-ship", order_ref=str(order.pk), reference=f"{key}p")
    for kind in ("confirmed", "shipped"):
        ProviderMessage.objects.create(
            idempotency_key=f"{key}-{kind}", order_ref=str(order.pk), kind=kind, recipient="a", reference=f"{key}{kind}"
        )
    AgentTask.objects.all().delete()  # the workflow's tasks are not the point here
    return Order.objects.get(pk=order.pk)


def violated(number: int) -> list[str]:
    return next(result for result in check_all() if result.number == number).violations


def test_a_consistent_history_passes_every_invariant(pen):
    completed_order(pen)

    assert [result.violations for result in check_all()] == [[]] * 7
    call_command("check_invariants")  # exits 0


def test_invariant_1_catches_an_order_left_unfinished(pen):
    order, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key="open")
    AgentTask.objects.all().delete()

    assert violated(1) == [f"order {order.pk} is still CREATED"]
    with pytest.raises(SystemExit):
        call_command("check_invariants")


def test_invariant_2_catches_stock_counters_that_disagree_with_reservations(pen):
    completed_order(pen)
    Product.objects.filter(pk=pen.pk).update(reserved=3)

    assert "disagree" in violated(2)[0]


def test_invariant_3_catches_a_second_charge(pen):
    order = completed_order(pen)
    GatewayEntry.objects.create(
        idempotency_key="again", order_ref=str(order.pk), kind="charge", amount=order.total, reference="dup"
    )

    assert f"order {order.pk} was charged 2 times" in violated(3)


def test_invariant_4_catches_a_shipment_for_an_unpaid_order(pen):
    order, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key="unpaid")
    CarrierParcel.objects.create(idempotency_key="x", order_ref=str(order.pk), reference="p1")

    assert violated(4) == [f"order {order.pk} was shipped while CREATED and unpaid"]


def test_invariant_4_accepts_a_parcel_voided_for_a_cancelled_order(pen):
    order, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key="voided")
    actions.apply_transition(order.pk, "operator.cancel")
    CarrierParcel.objects.create(
        idempotency_key="x", order_ref=str(order.pk), reference="p1", status=CarrierParcel.Status.VOIDED
    )

    assert violated(4) == []


def test_invariant_4_catches_a_completed_order_whose_parcel_was_voided(pen):
    order = completed_order(pen)
    CarrierParcel.objects.filter(order_ref=str(order.pk)).update(status=CarrierParcel.Status.VOIDED)

    assert violated(4) == [f"order {order.pk} is COMPLETED but its parcel was voided at the carrier"]


def test_invariant_5_catches_a_duplicate_customer_message(pen):
    order = completed_order(pen)
    ProviderMessage.objects.create(
        idempotency_key="dup", order_ref=str(order.pk), kind="shipped", recipient="a", reference="m2"
    )

    assert violated(5) == [f"order {order.pk} has 2 'shipped' messages, not 1"]


def test_invariant_6_catches_an_illegal_audit_row(pen):
    order, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key="jump")
    OrderTransition.objects.create(
        order=order, from_state="CREATED", to_state="COMPLETED", event="magic", correlation_id="c"
    )

    assert violated(6) == [f"order {order.pk}: illegal CREATED -> COMPLETED on magic"]


def test_invariant_7_catches_a_task_claimed_past_its_lease(pen):
    order, _ = place_order("a@example.com", [("PEN", 1)], idempotency_key="stuck")
    task = AgentTask.objects.get(operation="reserve_stock")
    AgentTask.objects.filter(pk=task.pk).update(
        status=TaskStatus.CLAIMED, lease_expires_at=timezone.now() - timedelta(minutes=1)
    )

    assert f"task {task.pk} (inventory.reserve_stock) is claimed past its lease" in violated(7)
    assert Reservation.objects.count() == 0 and order.pk


def test_an_agents_reads_of_an_order_give_the_orders_own_values(pen):
    """The steps' one-statement reads (lock_order, order_to_charge, order_to_ship, customer_of)
    return what the ORM would: every field in its place, the flags right, a missing order named."""
    placed, _ = place_order("ann@example.com", [("PEN", 3)], idempotency_key="read")
    stored = Order.objects.get(pk=placed.pk)

    with transaction.atomic():
        locked = actions.lock_order(placed.pk)
        assert {field: getattr(locked, field) for field in actions.ORDER_FIELDS} == {
            field: getattr(stored, field) for field in actions.ORDER_FIELDS
        }
    to_charge = actions.order_to_charge(placed.pk)
    assert (to_charge.state, to_charge.total, to_charge.customer, to_charge.paid) == (
        OrderState.CREATED,
        Decimal("7.50"),
        "ann@example.com",
        False,
    )
    assert actions.customer_of(placed.pk) == "ann@example.com"
    assert actions.order_to_ship(placed.pk).charged is False
    actions.record_payment(stored, PaymentStatus.CHARGED, charge_reference="ch_1")
    assert actions.order_to_charge(placed.pk).paid is True
    assert actions.order_to_ship(placed.pk).charged is True

    with pytest.raises(Order.DoesNotExist, match="order 999999 does not exist"):
        actions.order_to_ship(999999)
    with pytest.raises(TransactionManagementError, match=f"locking order {placed.pk} needs a transaction"):
        actions.lock_order(placed.pk)  # outside one, the lock would end with its statement
