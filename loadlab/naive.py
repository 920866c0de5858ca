"""The prototype that breaks in production: the order workflow as a plain chain of Celery tasks.

reserve -> charge (and confirm) -> ship -> notify, each passing the order along in the message.
No task rows, no claims, no state machine, no ledger idempotency: a fresh key on every call, so
a redelivered message charges twice. It writes the same effects (stock, gateway, carrier, provider) through
the same simulated outside world, so `manage.py bench` measures only what the system adds.
Its worker loads this module with `celery worker -I loadlab.naive`.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

from celery import chain, shared_task, signature
from django.db.models import F

from agents.outside import world
from orchestration.redis_client import redis_client
from orders.models import Product

QUEUE = "naive"


def finished_key(run: str) -> str:
    return f"naive:{run}:finished"


@shared_task(name="naive.reserve", ignore_result=True)
def reserve(order: dict) -> dict | None:
    for sku, quantity in order["items"]:
        # One conditional update per line; a later line running out leaves earlier ones sold.
        sold = Product.objects.filter(sku=sku, stocked__gte=F("reserved") + F("sold") + quantity).update(
            sold=F("sold") + quantity
        )
        if not sold:
            return finish(order, "out of stock")
    return order


@shared_task(name="naive.charge", ignore_result=True)
def charge(order: dict | None) -> dict | None:
    if order is None or order.get("outcome"):
        return order
    try:
        world.charge(
            uuid.uuid4().hex, order_ref=order["ref"], amount=Decimal(order["total"]), customer=order["customer"]
        )
    except world.Declined:
        return finish(order, "declined")
    # The customer hears that the order is confirmed, as the system's workflow tells them.
    world.send_message(uuid.uuid4().hex, order_ref=order["ref"], kind="confirmed", recipient=order["customer"])
    return order


@shared_task(name="naive.ship", ignore_result=True)
def ship(order: dict | None) -> dict | None:
    if order is None or order.get("outcome"):
        return order
    world.ship(uuid.uuid4().hex, order_ref=order["ref"], customer=order["customer"])
    return order


@shared_task(name="naive.notify", ignore_result=True)
def notify(order: dict | None) -> None:
    if order is None or order.get("outcome"):
        return
    world.send_message(uuid.uuid4().hex, order_ref=order["ref"], kind="shipped", recipient=order["customer"])
    finish(order, "completed")


def finish(order: dict, outcome: str) -> dict:
    redis_client().hset(finished_key(order["run"]), order["ref"], f"{time.time()} {outcome}")
    return {**order, "outcome": outcome}


def send(order: dict) -> None:
    """Start one order's chain; each step's return value is the next one's argument."""
    steps = ["naive.reserve", "naive.charge", "naive.ship", "naive.notify"]
    first, *rest = steps
    chain(
        signature(first, args=(order,), queue=QUEUE),
        *(signature(name, queue=QUEUE) for name in rest),
    ).apply_async()
