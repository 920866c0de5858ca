"""The simulated services keep their promise of idempotency by key: what the workflow's
compensations and the chaos runs rely on. Real PostgreSQL, calls from several threads at once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction

from agents.outside import world
from agents.outside.models import CarrierParcel, GatewayEntry
from tests.support import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def test_first_calls_with_one_key_at_once_charge_once_and_all_get_that_charge(redis_client):
    answers = run_in_threads(
        6, lambda _index: world.charge("key-1", order_ref="7", amount=Decimal("12.50"), customer="a@x")
    )

    entry = GatewayEntry.objects.get(idempotency_key="key-1")
    assert set(answers) == {entry.reference}
    assert (entry.order_ref, entry.kind, entry.amount) == ("7", "charge", Decimal("12.50"))
    assert world.charge("key-1", order_ref="7", amount=Decimal("12.50"), customer="a@x") == entry.reference


def test_a_call_inside_the_callers_transaction_is_kept_when_the_caller_rolls_back(redis_client):
    # The carrier is not our database: our rollback does not unbook a parcel.
    with pytest.raises(RuntimeError), transaction.atomic():
        reference = world.ship("key-2", order_ref="8", customer="b@x")
        raise RuntimeError("the caller's handler failed after the call")

    assert CarrierParcel.objects.get(idempotency_key="key-2").reference == reference
    assert world.void_parcel("key-2") == reference
    assert CarrierParcel.objects.get(idempotency_key="key-2").status == CarrierParcel.Status.VOIDED
