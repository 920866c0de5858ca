"""The simulated outside world: ledgers that deduplicate on the idempotency key they are given,
look-ups by that key (the way a real gateway or carrier lets you retrieve what a key did), and,
for tests and demos, latency and failures on demand.

Failures on demand need SIMULATED_FAILURES on in the calling process; otherwise the world
behaves (a production deployment cannot be steered into failing, whatever a caller writes in
an address or anybody writes in Redis). With it on, behaviour is shared by every process through
Redis (`configure("gateway", ...)`), so a test or a load run can turn failures on for the whole
fleet, and a customer address can ask for a failure by tag, deterministically:
  +decline      the gateway declines the charge
  +flaky        the first call for a key fails transiently (nothing happens)
  +timeout      the first call for a key takes effect, then times out
  +crash        the first call for a key takes effect, then the calling process dies
  +slowpay      the gateway takes SLOWPAY_SECONDS to answer
  +shipfail     the carrier refuses the parcel
  +paytimeout   every charge takes effect, then times out (the charge task dies)
  +shiptimeout  every parcel booking takes effect, then times out (the ship task dies)
Look-ups can fail transiently but never time out: they change nothing.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.outside.models import CarrierParcel, GatewayEntry, ProviderMessage
from orchestration.redis_client import redis_client
from orchestration.work.autonomous import run_committed

SLOWPAY_SECONDS = 3.0
SERVICES = ("gateway", "carrier", "provider")
# The tag that makes every charge (gateway) or parcel booking (carrier) for that customer time
# out after taking effect; refunds and voids carry no customer, so they are spared.
ALWAYS_TIMES_OUT = {"gateway": "paytimeout", "carrier": "shiptimeout"}


class OutsideError(Exception):
    """Base of the outside world's answers that are not a success."""


class ServiceUnavailable(OutsideError):
    """Transient: nothing happened; try again."""


class ServiceTimeout(OutsideError):
    """Transient: the caller gave up waiting, but the effect may have happened."""


class Declined(OutsideError):
    """Permanent: the gateway refuses this charge."""


class Rejected(OutsideError):
    """Permanent: the carrier refuses this parcel."""


class NotFound(OutsideError):
    """Permanent: the service holds nothing under this key."""


@dataclass(frozen=True)
class Behaviour:
    latency_ms: float = 0
    transient_rate: float = 0
    timeout_rate: float = 0
    refusal_rate: float = 0  # declines at the gateway, rejections at the carrier


def failures_on() -> bool:
    return settings.SIMULATED_FAILURES


def configure(service: str, **values: float) -> None:
    """Set a service's behaviour for every process (e.g. configure("gateway", transient_rate=0.1)).
    Only processes with SIMULATED_FAILURES on obey it."""
    allowed = set(Behaviour.__dataclass_fields__)
    unknown = set(values) - allowed
    if service not in SERVICES or unknown:
        raise ValueError(f"unknown service {service!r} or settings {sorted(unknown)}")
    key = f"outside:{service}"
    redis_client().delete(key)
    if values:
        redis_client().hset(key, mapping={name: float(value) for name, value in values.items()})


def behaviour(service: str) -> Behaviour:
    if not failures_on():
        return Behaviour()
    raw = redis_client().hgetall(f"outside:{service}")
    return Behaviour(**{str(name): float(value) for name, value in raw.items()})


def tags(address: str) -> frozenset[str]:
    """The failures an address asks for ("ann+flaky+crash@x" -> {"flaky", "crash"}); none when
    simulated failures are off."""
    if not address or not failures_on():
        return frozenset()
    return frozenset(address.split("@", 1)[0].split("+")[1:])


def _first_call(service: str, key: str) -> bool:
    """True on the first call with this key: tag-driven failures happen once."""
    return redis_client().incr(f"outside:calls:{service}:{key}") == 1


def _enter(service: str, key: str, asked: frozenset[str] = frozenset()) -> Behaviour:
    current = behaviour(service)
    delay = current.latency_ms / 1000
    if "slowpay" in asked and service == "gateway":
        delay += SLOWPAY_SECONDS
    if delay:
        time.sleep(delay)
    if ("flaky" in asked and _first_call(f"{service}:flaky", key)) or random.random() < current.transient_rate:
        raise ServiceUnavailable(f"{service} unavailable (simulated), nothing done for {key}")
    return current


def _leave(service: str, key: str, asked: frozenset[str], current: Behaviour) -> None:
    """After the effect: the answer may still be lost, or the caller may die."""
    if "crash" in asked and _first_call(f"{service}:crash", key):
        os._exit(17)  # the process dies between the outside effect and its commit
    if (
        ("timeout" in asked and _first_call(f"{service}:timeout", key))
        or ALWAYS_TIMES_OUT.get(service) in asked
        or random.random() < current.timeout_rate
    ):
        raise ServiceTimeout(f"{service} timed out (simulated) after taking effect for {key}")


def _reference(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _record_once(model, key: str, defaults: dict, refusal: OutsideError | None = None):
    """The service's ledger entry for this key: the one already there (a repeat is answered
    as the first call was), or a new one, unless refused. Its ledger is not the caller's
    database: no caller's transaction sees or holds it (run_committed), and a first call is
    one statement that commits on its own."""

    def record():
        if refusal is None and (created := _insert_unless_there(model, key, defaults)) is not None:
            return created
        # Refused, or two first calls at once: one row won, and this answers with it.
        return model.objects.filter(idempotency_key=key).first()

    entry = run_committed(record)
    if entry is None and refusal is not None:
        raise refusal
    return entry


def _insert_unless_there(model, key: str, defaults: dict):
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id: the new entry, or None when the key was
    there already (Django's bulk_create cannot return the id of an insert that may be skipped)."""
    entry = model(idempotency_key=key, **defaults)
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    values = [field.get_db_prep_save(field.pre_save(entry, add=True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} ({', '.join(field.column for field in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            values,
        )
        row = cursor.fetchone()
    if row is None:
        return None
    entry.pk = row[0]
    entry._state.adding, entry._state.db = False, connection.alias
    return entry


def _look_up(service: str, entries, key: str):
    """A read of the service's record under this key: it may fail transiently, changes nothing."""
    _enter(service, key)
    return run_committed(lambda: entries.filter(idempotency_key=key).first())


# --- The payment gateway ----------------------------------------------------------


def charge(key: str, *, order_ref: str, amount: Decimal, customer: str) -> str:
    """Charge once per key; a repeated key returns the first charge's reference."""
    asked = tags(customer)
    current = _enter("gateway", key, asked)
    declined = "decline" in asked or random.random() < current.refusal_rate
    entry = _record_once(
        GatewayEntry,
        key,
        {"order_ref": order_ref, "kind": "charge", "amount": amount, "reference": _reference("ch")},
        refusal=Declined(f"card declined for {order_ref}") if declined else None,
    )
    _leave("gateway", key, asked, current)
    return entry.reference


def refund(key: str, *, order_ref: str, amount: Decimal) -> str:
    current = _enter("gateway", key)
    entry = _record_once(
        GatewayEntry, key, {"order_ref": order_ref, "kind": "refund", "amount": -amount, "reference": _reference("re")}
    )
    _leave("gateway", key, frozenset(), current)
    return entry.reference


def find_charge(key: str) -> GatewayEntry | None:
    """The charge made under this key, if the gateway made one."""
    return _look_up("gateway", GatewayEntry.objects.filter(kind=GatewayEntry.Kind.CHARGE), key)


def find_refund(key: str) -> GatewayEntry | None:
    """The refund made under this key, if the gateway made one."""
    return _look_up("gateway", GatewayEntry.objects.filter(kind=GatewayEntry.Kind.REFUND), key)


# --- The carrier -------------------------------------------------------------------


def ship(key: str, *, order_ref: str, customer: str) -> str:
    asked = tags(customer)
    current = _enter("carrier", key, asked)
    rejected = "shipfail" in asked or random.random() < current.refusal_rate
    parcel = _record_once(
        CarrierParcel,
        key,
        {"order_ref": order_ref, "reference": _reference("pcl")},
        refusal=Rejected(f"carrier refused the parcel for {order_ref}") if rejected else None,
    )
    _leave("carrier", key, asked, current)
    return parcel.reference


def find_parcel(key: str) -> CarrierParcel | None:
    """The parcel booked under this key (booked or voided), if the carrier booked one."""
    return _look_up("carrier", CarrierParcel.objects.all(), key)


def void_parcel(key: str) -> str:
    """Void the parcel booked under this key; voiding it again is a no-op. Raises NotFound
    when nothing was booked under the key."""
    current = _enter("carrier", key)
    parcel = run_committed(lambda: CarrierParcel.objects.filter(idempotency_key=key).first())
    if parcel is None:
        raise NotFound(f"the carrier has no parcel booked under {key}")
    run_committed(_mark_voided, parcel.pk)
    _leave("carrier", key, frozenset(), current)
    return parcel.reference


def _mark_voided(parcel_id: int) -> None:
    CarrierParcel.objects.filter(pk=parcel_id, status=CarrierParcel.Status.BOOKED).update(
        status=CarrierParcel.Status.VOIDED, voided_at=timezone.now()
    )


# --- The message provider ----------------------------------------------------------


def send_message(key: str, *, order_ref: str, kind: str, recipient: str) -> str:
    asked = tags(recipient)
    current = _enter("provider", key, asked)
    message = _record_once(
        ProviderMessage,
        key,
        {"order_ref": order_ref, "kind": kind, "recipient": recipient, "reference": _reference("msg")},
    )
    _leave("provider", key, asked, current)
    return message.reference
