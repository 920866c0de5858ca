"""The order workflow end to end, through real worker processes: every path of the
state machine, each compensation, and the races DESIGN.md names."""

from __future__ import annotations

import re
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction

from agents import invariants
from agents.entrypoints import cancel_order, place_order
from agents.outside import world
from agents.outside.models import CarrierParcel, GatewayEntry, ProviderMessage
from orchestration.models import AgentTask, TaskAttempt, TaskStatus
from orders.errors import IllegalTransition
from orders.models import Order, OrderTransition, Payment, Product
from orders.states import OrderState, PaymentStatus, ReservationStatus
from tests.support import finish, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def path(order: Order) -> list[str]:
    return list(OrderTransition.objects.filter(order=order).order_by("pk").values_list("to_state", flat=True))


def gateway_net(order: Order) -> Decimal:
    return sum(GatewayEntry.objects.filter(order_ref=str(order.pk)).values_list("amount", flat=True), Decimal(0))


def messages(order: Order) -> list[str]:
    return sorted(ProviderMessage.objects.filter(order_ref=str(order.pk)).values_list("kind", flat=True))


def test_a_good_order_is_reserved_paid_shipped_and_completed(fleet, catalogue):
    fleet()

    order, _ = place_order("ann@example.com", [("PEN", 2), ("INK", 1)], idempotency_key="happy")
    order = finish(order)

    assert order.state == OrderState.COMPLETED
    assert path(order) == [
        "CREATED",
        "INVENTORY_RESERVED",
        "PAYMENT_PROCESSING",
        "PAYMENT_CONFIRMED",
        "FULFILLMENT_PENDING",
        "SHIPPED",
        "COMPLETED",
    ]
    assert gateway_net(order) == Decimal("12.00") == order.total
    assert CarrierParcel.objects.filter(order_ref=str(order.pk)).count() == 1
    wait_until(lambda: len(messages(order)) == 2, what="confirmed and shipped messages")
    assert messages(order) == ["confirmed", "shipped"]
    wait_until(lambda: Product.objects.get(sku="PEN").sold == 2, what="stock committed")
    assert Product.objects.get(sku="PEN").reserved == 0


def test_an_idle_worker_runs_a_whole_order_from_one_wake_up(fleet, catalogue):
    agents = fleet()

    order, _ = place_order("ann@example.com", [("PEN", 1)], idempotency_key="eager")
    order = finish(order)
    wait_until(lambda: len(messages(order)) == 2, what="confirmed and shipped messages")
    assert order.state == OrderState.COMPLETED

    # Each completion's new tasks were claimed by the process that committed it, not announced:
    # placing the order sent the only wake-up, and one process ran every step.
    received = re.findall(r"Task orchestration\.wake\[[0-9a-f-]+\] received", agents.log())
    assert len(received) == 1, agents.log()
    attempts = TaskAttempt.objects.filter(correlation_id=order.correlation_id)
    assert attempts.count() == AgentTask.objects.filter(workflow_id=order.workflow_id).count() == 9
    assert attempts.values("worker").distinct().count() == 1


def test_with_eager_follow_ups_off_every_step_is_announced(fleet, catalogue):
    agents = fleet(env={"AGENT_TASK_EAGER_FOLLOW_UPS": "0"})

    order, _ = place_order("ann@example.com", [("PEN", 1)], idempotency_key="announced")
    order = finish(order)
    wait_until(lambda: len(messages(order)) == 2, what="confirmed and shipped messages")

    # A wake-up for the reservation, the charge, the shipment and the last message; the one
    # for the charge's three tasks (two queues) may be served by a drain already running.
    received = re.findall(r"Task orchestration\.wake\[[0-9a-f-]+\] received", agents.log())
    assert 4 <= len(received) <= 6, agents.log()


def test_a_declined_payment_releases_the_reservation(fleet, catalogue):
    fleet()

    order, _ = place_order("bob+decline@example.com", [("PEN", 3)], idempotency_key="declined")
    order = finish(order)

    assert order.state == OrderState.PAYMENT_FAILED
    assert "declined" in order.reason
    assert gateway_net(order) == 0
    wait_until(lambda: order.reservations.get().status == ReservationStatus.RELEASED, what="release")
    assert Product.objects.get(sku="PEN").reserved == 0
    wait_until(lambda: messages(order) == ["failed"], what="failed message")


def test_an_order_without_stock_is_cancelled(fleet, catalogue):
    fleet()

    order, _ = place_order("cy@example.com", [("PEN", 1), ("LAST", 2)], idempotency_key="short")
    order = finish(order)

    assert order.state == OrderState.CANCELLED and "LAST" in order.reason
    assert path(order) == ["CREATED", "CANCELLED"]
    assert Product.objects.get(sku="PEN").reserved == 0  # all or nothing: the pen was not held either
    wait_until(lambda: messages(order) == ["cancelled"], what="cancelled message")


def test_a_failed_shipment_refunds_and_cancels(fleet, catalogue):
    fleet()

    order, _ = place_order("dee+shipfail@example.com", [("INK", 2)], idempotency_key="shipfail")
    order = finish(order)

    assert order.state == OrderState.CANCELLED
    assert path(order)[-2:] == ["FULFILLMENT_PENDING", "CANCELLED"]
    wait_until(lambda: gateway_net(order) == 0, what="refund")
    assert GatewayEntry.objects.filter(order_ref=str(order.pk), kind="charge").count() == 1
    assert not CarrierParcel.objects.filter(order_ref=str(order.pk)).exists()
    wait_until(lambda: Product.objects.get(sku="INK").sold == 0, what="stock back on the shelf")
    wait_until(lambda: messages(order) == ["cancelled", "confirmed"], what="messages")


def test_transient_failures_and_a_timeout_after_the_charge_still_charge_once(fleet, catalogue):
    fleet()

    flaky, _ = place_order("eve+flaky@example.com", [("PEN", 1)], idempotency_key="flaky")
    late, _ = place_order("fay+timeout@example.com", [("PEN", 1)], idempotency_key="timeout")

    for order in (finish(flaky), finish(late)):
        assert order.state == OrderState.COMPLETED
        assert GatewayEntry.objects.filter(order_ref=str(order.pk), kind="charge").count() == 1
    assert AgentTask.objects.get(correlation_id=late.correlation_id, operation="charge").attempts == 2


def test_a_gateway_that_keeps_failing_ends_in_payment_failed_with_stock_released(fleet, catalogue):
    fleet()
    world.configure("gateway", transient_rate=1.0)

    order, _ = place_order("gus@example.com", [("INK", 1)], idempotency_key="outage")
    order = finish(order, timeout=60)

    assert order.state == OrderState.PAYMENT_FAILED
    charge = AgentTask.objects.get(correlation_id=order.correlation_id, operation="charge")
    assert charge.status == TaskStatus.DEAD and charge.attempts == charge.max_attempts
    assert "unavailable" in order.reason
    wait_until(lambda: Product.objects.get(sku="INK").reserved == 0, what="release")


def money_and_parcels_add_up() -> bool:
    """DESIGN.md invariants 3 and 4: the gateway nets what completed orders cost, and no parcel
    is left booked for an order that did not ship."""
    money = invariants.one_charge_and_the_right_net_amount()
    return money.holds and invariants.one_shipment_only_for_paid_orders().holds


def test_a_charge_that_times_out_after_taking_the_money_on_every_attempt_is_refunded(fleet, catalogue):
    fleet()
    world.configure("gateway", timeout_rate=1.0)  # every call takes effect, then its answer is lost

    order, _ = place_order("max@example.com", [("INK", 2)], idempotency_key="charge-lost")
    order = finish(order, timeout=60)

    assert order.state == OrderState.PAYMENT_FAILED and "timed out" in order.reason
    charge = AgentTask.objects.get(correlation_id=order.correlation_id, operation="charge")
    assert charge.status == TaskStatus.DEAD
    wait_until(money_and_parcels_add_up, timeout=60, what="the charge the gateway kept to be refunded")
    assert gateway_net(order) == 0
    assert GatewayEntry.objects.filter(order_ref=str(order.pk), kind="charge").count() == 1
    wait_until(lambda: Payment.objects.filter(order=order, status=PaymentStatus.REFUNDED).exists(), what="our record")
    wait_until(lambda: messages(order) == ["failed"], what="the customer told")
    wait_until(lambda: Product.objects.get(sku="INK").reserved == 0, what="release")


def test_a_parcel_booked_before_the_carrier_timed_out_is_voided_and_the_order_refunded(fleet, catalogue):
    fleet()
    world.configure("carrier", timeout_rate=1.0)

    order, _ = place_order("nia@example.com", [("PEN", 1)], idempotency_key="parcel-lost")
    order = finish(order, timeout=60)

    assert order.state == OrderState.CANCELLED and "timed out" in order.reason
    wait_until(money_and_parcels_add_up, timeout=60, what="the parcel voided and the charge refunded")
    parcel = CarrierParcel.objects.get(order_ref=str(order.pk))
    assert parcel.status == CarrierParcel.Status.VOIDED
    assert gateway_net(order) == 0
    wait_until(lambda: messages(order) == ["cancelled", "confirmed"], what="the customer told")
    wait_until(lambda: Product.objects.get(sku="PEN").sold == 0, what="stock back on the shelf")


def test_a_cancel_while_a_timed_out_charge_waits_to_retry_refunds_what_the_gateway_took(fleet, catalogue):
    fleet()
    world.configure("gateway", timeout_rate=1.0)
    order, _ = place_order("oli@example.com", [("PEN", 2)], idempotency_key="cancel-after-timeout")
    wait_until(
        lambda: GatewayEntry.objects.filter(order_ref=str(order.pk), kind="charge").exists(),
        what="the gateway to take the money",
    )

    cancel_order(order.pk, actor="alice", reason="customer phoned")  # the charge task is backing off
    order = finish(order)

    assert order.state == OrderState.CANCELLED
    wait_until(money_and_parcels_add_up, timeout=60, what="the charge to be refunded")
    assert gateway_net(order) == 0
    wait_until(lambda: messages(order) == ["cancelled"], what="the customer told")


def test_two_orders_racing_for_the_last_unit_one_wins(fleet, catalogue):
    fleet()

    first, _ = place_order("hal@example.com", [("LAST", 1)], idempotency_key="race-1")
    second, _ = place_order("ivy@example.com", [("LAST", 1)], idempotency_key="race-2")

    states = sorted([finish(first).state, finish(second).state])
    assert states == [OrderState.CANCELLED, OrderState.COMPLETED]
    last = Product.objects.get(sku="LAST")
    wait_until(lambda: Product.objects.get(sku="LAST").sold == 1, what="sale committed")
    last.refresh_from_db()
    assert last.reserved == 0 and last.sold == 1


def test_a_reservation_expiring_while_payment_is_in_flight_is_refunded_not_shipped(fleet, catalogue):
    # Reservations last 2 s; this customer's gateway answers after 3 s.
    fleet(env={"RESERVATION_TTL_SECONDS": "2"})

    order, _ = place_order("jay+slowpay@example.com", [("PEN", 1)], idempotency_key="slowpay")
    order = finish(order, timeout=60)
    # The expiry cancels the order while the charge is still out; the money lands after, and
    # is given back (payment.charged_late): wait for that, not only for the cancel.
    wait_until(
        lambda: Payment.objects.filter(order=order, status=PaymentStatus.REFUNDED).exists(),
        timeout=60,
        what="the late charge refunded",
    )

    assert order.state == OrderState.CANCELLED
    assert "expired" in order.reason
    assert GatewayEntry.objects.filter(order_ref=str(order.pk), kind="charge").count() == 1
    assert gateway_net(order) == 0
    assert not CarrierParcel.objects.filter(order_ref=str(order.pk)).exists()
    assert Product.objects.get(sku="PEN").reserved == 0


def test_an_unpaid_order_whose_reservation_expires_is_cancelled_and_never_charged(fleet, catalogue, start_worker):
    # No payment worker at first: the hold runs out before anyone can charge.
    fleet(queues=["agent.order", "agent.inventory", "agent.notification"], env={"RESERVATION_TTL_SECONDS": "1"})

    order, _ = place_order("kim@example.com", [("PEN", 1)], idempotency_key="expired")
    order = finish(order, timeout=30)
    start_worker(["agent.payment"])

    assert order.state == OrderState.CANCELLED and path(order)[-1] == "CANCELLED"
    charge = AgentTask.objects.get(correlation_id=order.correlation_id, operation="charge")
    wait_until(lambda: AgentTask.objects.get(pk=charge.pk).status == TaskStatus.SUCCEEDED, what="charge skipped")
    assert AgentTask.objects.get(pk=charge.pk).result == {"skipped": "CANCELLED"}
    assert gateway_net(order) == 0 and not GatewayEntry.objects.filter(order_ref=str(order.pk)).exists()


def test_a_payment_worker_that_dies_after_the_gateway_charged_leads_to_one_charge(fleet, catalogue):
    # The gateway kills the calling process right after charging, before the commit.
    fleet(env={"AGENT_TASK_DEFAULT_LEASE_SECONDS": "5"})

    order, _ = place_order("lee+crash@example.com", [("INK", 1)], idempotency_key="crash")
    order = finish(order, timeout=60)

    assert order.state == OrderState.COMPLETED
    assert GatewayEntry.objects.filter(order_ref=str(order.pk), kind="charge").count() == 1
    assert gateway_net(order) == order.total
    charge = AgentTask.objects.get(correlation_id=order.correlation_id, operation="charge")
    assert charge.attempts == 2 and charge.reclaims == 1


def test_an_operator_cancel_while_the_charge_is_in_flight_refunds_and_releases(fleet, catalogue):
    # This customer's gateway takes 3 s, so the cancel arrives while the charge is under way.
    fleet()
    order, _ = place_order("ola+slowpay@example.com", [("PEN", 2)], idempotency_key="cancel-in-flight")
    wait_until(lambda: Order.objects.get(pk=order.pk).state == OrderState.PAYMENT_PROCESSING, what="payment to start")

    cancel_order(order.pk, actor="alice", reason="customer phoned")
    order = finish(order)

    assert order.state == OrderState.CANCELLED and order.reason == "customer phoned"
    assert OrderTransition.objects.filter(order=order).latest("pk").actor == "alice"
    # The charge that was out when the cancel won lands (or not) and is settled first.
    charge = AgentTask.objects.get(correlation_id=order.correlation_id, operation="charge")
    wait_until(lambda: AgentTask.objects.get(pk=charge.pk).status == TaskStatus.SUCCEEDED, what="the charge settled")
    wait_until(lambda: gateway_net(order) == 0 and Product.objects.get(sku="PEN").reserved == 0, what="compensation")
    assert GatewayEntry.objects.filter(order_ref=str(order.pk), kind="charge").count() <= 1
    assert Product.objects.get(sku="PEN").sold == 0
    assert not CarrierParcel.objects.filter(order_ref=str(order.pk)).exists()
    wait_until(lambda: messages(order) == ["cancelled"], what="cancelled message")
    assert not AgentTask.objects.filter(correlation_id=order.correlation_id, status=TaskStatus.DEAD).exists()


def test_an_order_cancelled_before_its_stock_was_held_never_holds_any(fleet, catalogue, start_worker):
    fleet(queues=["agent.order", "agent.payment", "agent.notification"])
    order, _ = place_order("pia@example.com", [("PEN", 5)], idempotency_key="cancel-early")

    cancel_order(order.pk, actor="bob")
    start_worker(["agent.inventory"])

    reserve = AgentTask.objects.get(correlation_id=order.correlation_id, operation="reserve_stock")
    wait_until(lambda: AgentTask.objects.get(pk=reserve.pk).status == TaskStatus.SUCCEEDED, what="reserve to run")
    assert Order.objects.get(pk=order.pk).state == OrderState.CANCELLED
    assert not order.reservations.exists()
    assert Product.objects.get(sku="PEN").reserved == 0


def test_a_shipped_order_cannot_be_cancelled(fleet, catalogue):
    fleet()
    order, _ = place_order("quinn@example.com", [("INK", 1)], idempotency_key="cancel-late")
    order = finish(order)

    with pytest.raises(IllegalTransition) as refusal:
        cancel_order(order.pk, actor="carol")

    assert f"order {order.pk} in state COMPLETED" in str(refusal.value)
    assert Order.objects.get(pk=order.pk).state == OrderState.COMPLETED
    assert gateway_net(order) == order.total


def test_a_reservation_that_fails_for_good_cancels_the_order_instead_of_leaving_it_created(fleet, catalogue):
    # Given an order whose reservation may try once, and a product row another transaction
    # keeps locked past the workers' lock timeout
    order, _ = place_order("ann@example.com", [("PEN", 1)], idempotency_key="locked-out")
    reserve = AgentTask.objects.get(workflow_id=order.workflow_id, operation="reserve_stock")
    AgentTask.objects.filter(pk=reserve.pk).update(max_attempts=1)
    locked, release = threading.Event(), threading.Event()

    def hold_the_product() -> None:
        with transaction.atomic():
            Product.objects.select_for_update().get(sku="PEN")
            locked.set()
            release.wait(60)
        connection.close()

    holder = threading.Thread(target=hold_the_product)
    holder.start()
    try:
        assert locked.wait(10)
        # When the reservation times out on the lock and has no attempt left
        fleet(env={"DATABASE_LOCK_TIMEOUT_SECONDS": "1"})
        wait_until(lambda: AgentTask.objects.get(pk=reserve.pk).status == TaskStatus.DEAD, what="reservation dead")
    finally:
        release.set()
        holder.join()

    # Then the order ends cancelled, with nothing held and the customer told
    order = finish(order)
    assert order.state == OrderState.CANCELLED
    assert path(order) == ["CREATED", "CANCELLED"]
    assert "LockNotAvailable" in order.reason or "lock timeout" in order.reason.lower()
    wait_until(lambda: messages(order) == ["cancelled"], what="the customer told")
    assert Product.objects.get(sku="PEN").reserved == 0
    assert gateway_net(order) == 0
