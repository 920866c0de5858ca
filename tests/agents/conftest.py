"""Fixtures of the order workflow's tests: a catalogue, and the agents on real workers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.outside import world
from orders.models import Product
from tests.support import AGENT_QUEUES


@pytest.fixture
def catalogue(transactional_db):
    return {
        "pen": Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100),
        "ink": Product.objects.create(sku="INK", name="Ink", price=Decimal("7.00"), stocked=100),
        "last": Product.objects.create(sku="LAST", name="Last one", price=Decimal("30.00"), stocked=1),
    }


@pytest.fixture
def fleet(start_worker, start_beat, redis_client):
    """Agents on real workers, a maintenance worker and beat; the outside world well-behaved.
    Returns the agents' worker."""

    def start(queues=AGENT_QUEUES, env=None, beat=True, concurrency=2):
        for service in world.SERVICES:
            world.configure(service)
        agents = start_worker(queues, concurrency=concurrency, env=env or {})
        start_worker(["orchestration"], name="maintenance", env=env or {})
        if beat:
            start_beat()
        return agents

    return start
