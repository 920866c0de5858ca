"""Helpers shared by the tests of every app (fixtures live in tests/conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from django.conf import settings
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from orchestration.testing.fleet import database_url
from orders.models import Order
from orders.states import TERMINAL_STATES

# The password of the operators the admin tests create (and the browser tests type).
OPERATOR_PASSWORD = "a-long-operator-pass-123"
# Every agent queue of the order workflow, for a worker that runs them all.
AGENT_QUEUES = [
    "agent.order",
    "agent.inventory",
    "agent.risk",
    "agent.payment",
    "agent.fulfillment",
    "agent.notification",
]


def wait_until(condition: Callable[[], object], timeout: float = 30, interval: float = 0.1, what: str = ""):
    """Poll until ``condition()`` is truthy and return it; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")


def child_environment() -> dict[str, str]:
    """What a worker process needs to see the test database and the test settings."""
    return {
        "DATABASE_URL": database_url(),  # the test database, password and all
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }


def finish(order: Order, timeout: float = 45) -> Order:
    wait_until(
        lambda: Order.objects.get(pk=order.pk).state in TERMINAL_STATES,
        timeout=timeout,
        what=f"order {order.pk} to finish",
    )
    return Order.objects.get(pk=order.pk)


def scrape(client, **request) -> dict[tuple[str, tuple], float]:
    """What Prometheus reads from /metrics, sending the scrape token as it would."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}", **request)
    assert response.status_code == 200, response.content[:500]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def run_in_threads(count: int, target) -> list:
    """Start ``count`` threads at once (behind a barrier); return their results."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def body(index: int) -> None:
        barrier.wait()
        try:
            results[index] = target(index)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
