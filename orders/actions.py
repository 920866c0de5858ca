"""Every change of the order domain's rows. Callers own the transaction; each function
that needs one opens an atomic block, so it also works on its own."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.db.transaction import TransactionManagementError
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
    RiskAssessment,
    Shipment,
)
from orders.screening import review_deadline
from orders.states import (
    TERMINAL_STATES,
    UNPAID_STATES,
    OrderState,
    PaymentStatus,
    ReservationStatus,
    ShipmentStatus,
)
from orders.transitions import PLACED, transitions_from

ORDERS = Order._meta.db_table
ITEMS = OrderItem._meta.db_table
TRANSITIONS = OrderTransition._meta.db_table
PRODUCTS = Product._meta.db_table
RESERVATIONS = Reservation._meta.db_table
PAYMENTS = Payment._meta.db_table
SHIPMENTS = Shipment._meta.db_table
NOTIFICATIONS = CustomerNotification._meta.db_table


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
    now = timezone.now()
    order = Order(
        customer=customer,
        state=OrderState.CREATED,
        total=sum((products[line.sku].price * line.quantity for line in lines), Decimal(0)),
        idempotency_key=idempotency_key,
        fingerprint=digest,
        workflow_id=workflow_id,
        correlation_id=correlation_id,
        created_at=now,
        updated_at=now,
    )
    # One statement: the order, its lines and its first audit row; nothing when the key is
    # taken (a repeat, answered with the order already made under it).
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            f"""WITH placed AS (
                INSERT INTO {ORDERS} (customer, state, total, currency, idempotency_key, fingerprint, workflow_id,
                    correlation_id, reason, created_at, updated_at)
                VALUES (%(customer)s, %(state)s, %(total)s, %(currency)s, %(key)s, %(fingerprint)s, %(workflow)s,
                    %(correlation)s, '', %(now)s, %(now)s)
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING id
            ),
            lines AS (
                INSERT INTO {ITEMS} (order_id, product_id, quantity, unit_price)
                SELECT placed.id, x.product, x.quantity, x.price
                FROM placed, json_to_recordset(%(lines)s::json) AS x(product bigint, quantity int, price numeric)
            ),
            audited AS (
                INSERT INTO {TRANSITIONS} (order_id, from_state, to_state, event, agent, task_id, correlation_id,
                    actor, detail, created_at)
                SELECT placed.id, '', %(state)s, %(event)s, '', NULL, %(correlation)s, '', '', %(now)s FROM placed
            )
            SELECT id FROM placed""",
            {
                "customer": customer,
                "state": OrderState.CREATED,
                "total": order.total,
                "currency": order.currency,
                "key": idempotency_key,
                "fingerprint": digest,
                "workflow": workflow_id,
                "correlation": correlation_id,
                "now": now,
                # The lines as one JSON document (psycopg adapts Python lists slowly); prices as
                # strings, so no decimal goes through a float.
                "lines": json.dumps(
                    [
                        {
                            "product": products[line.sku].pk,
                            "quantity": line.quantity,
                            "price": str(products[line.sku].price),
                        }
                        for line in lines
                    ]
                ),
                "event": PLACED,
            },
        )
        row = cursor.fetchone()
    if row is None:
        existing = Order.objects.get(idempotency_key=idempotency_key)
        if existing.fingerprint != digest:
            raise IdempotencyKeyReused(
                f"idempotency key {idempotency_key!r} was used for order {existing.pk} with a different body"
            )
        return existing, False
    order.pk = row[0]
    return order, True


# --- Reading one order on an agent's path ----------------------------------------------
# Every step reads its order once or twice. Built by the ORM, such a read cost about half a
# millisecond of Python (a million of them a day is minutes of CPU, and each sits on the
# order's path); written once here it costs a fifth of that, and gives the same model.

ORDER_FIELDS = [field.attname for field in Order._meta.concrete_fields]


def _read_order(
    order_id: int, fields: list[str] = ORDER_FIELDS, *, extra: dict[str, str] | None = None, lock: bool = False
) -> Order:
    """The order's ``fields`` (the others deferred, as with only()), and each ``extra``
    expression of the row ``o`` as an attribute. Order.DoesNotExist when there is none."""
    # Model.from_db takes the values in the model's field order, whatever order ``fields`` has.
    columns = [name for name in ORDER_FIELDS if name == "id" or name in fields]
    expressions = list((extra or {}).values())
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join([f'o.{name}' for name in columns] + expressions)} FROM {ORDERS} o WHERE o.id = %s"
            + (" FOR UPDATE" if lock else ""),
            [order_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Order.DoesNotExist(f"order {order_id} does not exist")
    order = Order.from_db(connection.alias, columns, row[: len(columns)])
    for name, value in zip(extra or {}, row[len(columns) :], strict=True):
        setattr(order, name, value)
    return order


def lock_order(order_id: int, held: dict | None = None) -> Order:
    """Lock the order row for the rest of the transaction (the one place orders are locked).

    ``held`` is the transaction's own record of the rows it locked (TaskContext.held, shared
    with the steps run inline after the handler): an order locked once is not asked for again."""
    if held is not None and ("order", order_id) in held:
        return held[("order", order_id)]
    if connection.get_autocommit():
        # The lock would end with the statement (select_for_update() refused this too).
        raise TransactionManagementError(f"locking order {order_id} needs a transaction")
    order = _read_order(order_id, lock=True)
    if held is not None:
        held[("order", order_id)] = order
    return order


def customer_of(order_id: int) -> str:
    """Whom the order's messages go to."""
    return _read_order(order_id, ["customer"]).customer


class StateChanges:
    """Moves along the state machine for one locked order, kept in memory and written at
    once by save(): the audit rows and the order in one statement."""

    # The order's columns a transition may change, in the statement's order.
    CHANGED = ("state", "updated_at", "finished_at", "reason")

    def __init__(self, order: Order):
        self.order = order
        self.rows: list[dict] = []  # audit rows, by column
        self.fields: set[str] = set()

    def apply(
        self, event: str, *, agent: str = "", task_id: int | None = None, actor: str = "", detail: str = ""
    ) -> Order:
        """Take the first declared transition for the order's state and this event whose guard
        lets it through, or refuse naming the order, its state and the event."""
        order = self.order
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
        self.rows.append(
            {
                "from_state": order.state,
                "to_state": transition.target,
                "event": event,
                "agent": agent,
                "task_id": task_id,
                "correlation_id": order.correlation_id,
                "actor": actor,
                "detail": detail[:500],
                "created_at": now.isoformat(),
            }
        )
        order.state = transition.target
        order.updated_at = now
        self.fields |= {"state", "updated_at"}
        if transition.target in TERMINAL_STATES:
            order.finished_at = now
            order.reason = detail[:500] or event
            self.fields |= {"finished_at", "reason"}
        return order

    def save(self) -> Order:
        """The audit rows and the order's changed columns, in one statement. The rows go as one
        JSON document: psycopg adapts Python lists in pure Python, slower than the statement."""
        if not self.rows:
            return self.order
        changed = [name for name in self.CHANGED if name in self.fields]
        with connection.cursor() as cursor:
            cursor.execute(
                f"""WITH audited AS (
                    INSERT INTO {TRANSITIONS} (order_id, from_state, to_state, event, agent, task_id, correlation_id,
                        actor, detail, created_at)
                    SELECT %(order)s, x.* FROM json_to_recordset(%(rows)s::json) AS x(from_state text, to_state text,
                        event text, agent text, task_id bigint, correlation_id text, actor text, detail text,
                        created_at timestamptz)
                )
                UPDATE {ORDERS} SET {", ".join(f"{name} = %({name})s" for name in changed)} WHERE id = %(order)s""",
                {
                    "order": self.order.pk,
                    "rows": json.dumps(self.rows),
                    **{name: getattr(self.order, name) for name in changed},
                },
            )
        self.rows, self.fields = [], set()
        return self.order


def apply_transition(
    order_id: int,
    event: str,
    *,
    agent: str = "",
    task_id: int | None = None,
    actor: str = "",
    detail: str = "",
) -> Order:
    """Move the order along the state machine, with its audit row, or refuse naming why."""
    with transaction.atomic():
        changes = StateChanges(lock_order(order_id))
        changes.apply(event, agent=agent, task_id=task_id, actor=actor, detail=detail)
        return changes.save()


# --- Stock --------------------------------------------------------------------


def reservation_ttl() -> timedelta:
    return timedelta(seconds=settings.RESERVATION_TTL_SECONDS)


def reserve_stock(order_id: int, held: dict | None = None) -> int:
    """Hold every line's stock, all or nothing; returns the lines held (0 when the order no
    longer waits for stock), or raises OutOfStock naming the product.

    The products are locked in primary-key order (so two orders cannot deadlock), checked, and
    then held with the reservations written in one statement. A shortage is found before
    anything is held, so it leaves nothing to undo: the caller's transaction goes on (it
    records the shortage) without a savepoint.
    """
    shortage: OutOfStock | None = None
    reserved = 0
    with transaction.atomic(savepoint=False):
        # The order lock orders this against a cancel: an order that left CREATED
        # (cancelled while its reservation was on the way) gets no new hold.
        order = lock_order(order_id, held)
        if order.state != OrderState.CREATED:
            return 0
        with connection.cursor() as cursor:
            cursor.execute(
                f"""SELECT i.product_id, i.quantity, p.sku, p.stocked - p.reserved - p.sold
                FROM {ITEMS} i JOIN {PRODUCTS} p ON p.id = i.product_id
                WHERE i.order_id = %s ORDER BY p.id FOR NO KEY UPDATE OF p""",
                [order_id],
            )
            lines = cursor.fetchall()
            short = [(sku, quantity) for _product, quantity, sku, available in lines if available < quantity]
            if short:
                shortage = OutOfStock(*short[0])
            else:
                now = timezone.now()
                cursor.execute(
                    # The lines again, from the table: the same rows (an order's lines never
                    # change), and unlike arrays of them sent along they leave the statement's
                    # plan the same for every order, so PostgreSQL plans it once per connection.
                    f"""WITH wanted AS (SELECT product_id, quantity FROM {ITEMS} WHERE order_id = %(order)s),
                    held AS (
                        UPDATE {PRODUCTS} p SET reserved = p.reserved + w.quantity FROM wanted w
                        WHERE p.id = w.product_id
                    )
                    INSERT INTO {RESERVATIONS} (order_id, product_id, quantity, status, expires_at, created_at,
                        updated_at)
                    SELECT %(order)s, product_id, quantity, %(active)s, %(expires)s, %(now)s, %(now)s FROM wanted""",
                    {
                        "order": order_id,
                        "active": ReservationStatus.ACTIVE,
                        "expires": now + reservation_ttl(),
                        "now": now,
                    },
                )
                reserved = len(lines)
    if shortage is not None:
        raise shortage  # raised outside the atomic block, which would otherwise doom the caller's
    return reserved


# How each move of a reservation changes its product's counters: units held, units sold.
COUNTERS = {
    (ReservationStatus.ACTIVE, ReservationStatus.COMMITTED): (-1, +1),
    (ReservationStatus.ACTIVE, ReservationStatus.RELEASED): (-1, 0),
    (ReservationStatus.ACTIVE, ReservationStatus.EXPIRED): (-1, 0),
    (ReservationStatus.COMMITTED, ReservationStatus.RELEASED): (0, -1),
}


def _settle(order_id: int, from_statuses: list[str], to_status: str) -> int:
    """Move this order's reservations between statuses, adjusting the product counters, in one
    statement: the rows are locked in product order (so two settles of orders sharing products
    cannot deadlock), then moved and counted.

    The moved rows' quantities and statuses are the locked rows' (``locked``), not a read of the
    statement's snapshot: a row locked after waiting for another transaction is the version that
    transaction left. The statuses are written into the SQL (they are this module's constants)
    so that PostgreSQL plans the prepared statement once per connection; as parameters (an
    array, or values a partial plan depends on) it would plan it afresh on every run."""
    held_delta = {source: COUNTERS[(source, to_status)][0] for source in from_statuses}
    sold_delta = {source: COUNTERS[(source, to_status)][1] for source in from_statuses}
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            f"""WITH locked AS (
                SELECT r.id, r.product_id, r.quantity, r.status FROM {RESERVATIONS} r
                JOIN {PRODUCTS} p ON p.id = r.product_id
                WHERE r.order_id = %(order)s AND r.status IN ({_statuses(from_statuses)})
                ORDER BY p.id FOR NO KEY UPDATE OF r, p
            ),
            moved AS (
                UPDATE {RESERVATIONS} r SET status = %(to)s, updated_at = %(now)s FROM locked WHERE r.id = locked.id
                RETURNING locked.product_id, locked.quantity, locked.status AS was
            ),
            counted AS (
                UPDATE {PRODUCTS} p SET
                    reserved = p.reserved + m.held, sold = p.sold + m.sold
                FROM (
                    SELECT product_id,
                        sum(quantity * (CASE was {_cases(held_delta)} ELSE 0 END)) AS held,
                        sum(quantity * (CASE was {_cases(sold_delta)} ELSE 0 END)) AS sold
                    FROM moved GROUP BY product_id
                ) m
                WHERE p.id = m.product_id
            )
            SELECT count(*) FROM moved""",
            {"order": order_id, "to": to_status, "now": timezone.now()},
        )
        return cursor.fetchone()[0]


def _statuses(statuses: list[str]) -> str:
    assert set(statuses) <= set(ReservationStatus.values), statuses  # constants, never input
    return ", ".join(f"'{status}'" for status in statuses)


def _cases(deltas: dict[str, int]) -> str:
    return " ".join(f"WHEN '{status}' THEN {delta}" for status, delta in deltas.items())


def commit_stock(order_id: int) -> int:
    """Paid: the held units become sold."""
    return _settle(order_id, [ReservationStatus.ACTIVE], ReservationStatus.COMMITTED)


def release_stock(order_id: int) -> int:
    """Cancelled or failed: held or sold units go back on the shelf."""
    return _settle(order_id, [ReservationStatus.ACTIVE, ReservationStatus.COMMITTED], ReservationStatus.RELEASED)


def expire_reservations(order_id: int, held: dict | None = None) -> bool:
    """Give back an unpaid order's expired hold. False when the order moved on (paid in time,
    or ended); the order row lock orders this against a charge being recorded. A charge that
    lands after this is given back (the PaymentAgent's rule for money that lands late)."""
    with transaction.atomic(savepoint=False):
        order = lock_order(order_id, held)
        due = Reservation.objects.filter(
            order_id=order_id, status=ReservationStatus.ACTIVE, expires_at__lte=timezone.now()
        ).exists()
        if order.state not in UNPAID_STATES or not due:
            return False
        return _settle(order_id, [ReservationStatus.ACTIVE], ReservationStatus.EXPIRED) > 0


def hold_for_review(order_id: int, held: dict | None = None) -> int:
    """Keep an order's stock held while it waits for an operator: until its review deadline plus
    a whole hold, so the review ends (by a decision or its deadline) before the hold can run out,
    and a payment after an approval has a hold's time. Returns the holds extended. The order row
    lock orders this against the reservation expiry."""
    with transaction.atomic(savepoint=False):
        order = lock_order(order_id, held)
        if order.state != OrderState.AWAITING_REVIEW:
            return 0
        until = review_deadline(order) + reservation_ttl()
        return Reservation.objects.filter(
            order_id=order_id, status=ReservationStatus.ACTIVE, expires_at__lt=until
        ).update(expires_at=until, updated_at=timezone.now())


def orders_with_expired_reservations(limit: int = 500) -> list[int]:
    return list(
        Reservation.objects.filter(status=ReservationStatus.ACTIVE, expires_at__lte=timezone.now())
        .order_by("expires_at")
        .values_list("order_id", flat=True)
        .distinct()[:limit]
    )


def reservations_expired_at(order_id: int):
    """The earliest expiry of the order's active holds (None when none is active)."""
    with connection.cursor() as cursor:
        cursor.execute(
            # The status in the SQL, where the planner sees it (see _settle).
            f"SELECT min(expires_at) FROM {RESERVATIONS} WHERE order_id = %s AND status = '{ReservationStatus.ACTIVE}'",
            [order_id],
        )
        return cursor.fetchone()[0]


# --- Payments, shipments, messages ---------------------------------------------------


def record_payment(order: Order, status: str, *, charge_reference: str = "", detail: str = "") -> None:
    """Our record of the gateway's answer, in one statement; a refund already recorded is never
    overwritten (its charge may be recorded after it, when the charge's answer came back late)."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {PAYMENTS} AS p (order_id, status, amount, charge_reference, refund_reference, detail,
                created_at, updated_at)
            VALUES (%(order)s, %(status)s, %(amount)s, %(reference)s, '', %(detail)s, %(now)s, %(now)s)
            ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, amount = excluded.amount,
                charge_reference = excluded.charge_reference, detail = excluded.detail, updated_at = excluded.updated_at
            WHERE p.status <> %(refunded)s""",
            {
                "order": order.pk,
                "status": status,
                "amount": order.total,
                "reference": charge_reference,
                "detail": detail[:500],
                "now": now,
                "refunded": PaymentStatus.REFUNDED,
            },
        )


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


def order_to_charge(order_id: int) -> Order:
    """The order as a charge needs it, with ``paid``: whether any payment is recorded yet."""
    paid = f"EXISTS (SELECT FROM {PAYMENTS} p WHERE p.order_id = o.id)"
    return _read_order(order_id, ["state", "total", "customer"], extra={"paid": paid})


def order_to_ship(order_id: int) -> Order:
    """The order as a shipment needs it, with ``charged``: whether its payment is charged."""
    charged = f"EXISTS (SELECT FROM {PAYMENTS} p WHERE p.order_id = o.id AND p.status = '{PaymentStatus.CHARGED}')"
    return _read_order(order_id, ["state", "customer"], extra={"charged": charged})


def charged_payment(order_id: int) -> Payment | None:
    return Payment.objects.filter(order_id=order_id, status=PaymentStatus.CHARGED).first()


def record_shipment(order: Order, carrier_reference: str) -> None:
    """Our record of the parcel the carrier booked (one per order), in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {SHIPMENTS} (order_id, status, carrier_reference, created_at)
            VALUES (%s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING""",
            [order.pk, ShipmentStatus.CREATED, carrier_reference, timezone.now()],
        )


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


def record_notification(order_id: int, kind: str, provider_message_id: str, channel: str = "email") -> None:
    """Our record of a message the provider sent (one per order and kind), in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {NOTIFICATIONS} (order_id, kind, channel, provider_message_id, created_at)
            VALUES (%s, %s, %s, %s, %s) ON CONFLICT (order_id, kind) DO NOTHING""",
            [order_id, kind, channel, provider_message_id, timezone.now()],
        )


# --- Risk review -----------------------------------------------------------------------


def record_risk_assessment(
    order: Order, *, verdict: str, reasons: list[str], decided_by: str, model: str, chain: list[dict]
) -> None:
    """The risk-review agent's verdict on the order (one per order: a repeat keeps the first)."""
    RiskAssessment.objects.bulk_create(
        [
            RiskAssessment(
                order=order, verdict=verdict, reasons=reasons, decided_by=decided_by, model=model, chain=chain
            )
        ],
        ignore_conflicts=True,
    )


def order_to_screen(order_id: int) -> tuple[Order, list[OrderItem], dict[str, dict]]:
    """What a risk review looks at: the order, its lines with their products, and the customer's
    other orders counted and summed by state (three reads, no lock)."""
    order = Order.objects.get(pk=order_id)
    items = list(OrderItem.objects.filter(order_id=order_id).select_related("product").order_by("id"))
    history = {
        row["state"]: {"orders": row["orders"], "total": row["total"]}
        for row in Order.objects.filter(customer=order.customer)
        .exclude(pk=order_id)
        .values("state")
        .annotate(orders=Count("pk"), total=Sum("total"))
    }
    return order, items, history
