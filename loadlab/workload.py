"""A workload of orders for the demo and the load test: a catalogue, customers whose
addresses ask the simulated world for failures, and the figures at the end."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection
from django.db.models import Count, Max, Q
from django.utils import timezone

from agents.entrypoints import decide_review, place_order
from orchestration.limits.backpressure import Overloaded
from orchestration.models import AgentTask, TaskStatus
from orders.errors import IllegalTransition
from orders.models import Order, Product
from orders.states import TERMINAL_STATES, OrderState

T = TypeVar("T")


@dataclass(frozen=True)
class Mix:
    """What share of customers ask for a failure by tag (see agents.outside.world); each field is
    named after its tag. The world obeys tags only in workers with SIMULATED_FAILURES on."""

    decline: float = 0.05
    flaky: float = 0.05
    timeout: float = 0.02
    shipfail: float = 0.02
    paytimeout: float = 0  # the charge dies after taking the money: the workflow must refund it
    shiptimeout: float = 0  # the booking dies after the carrier took it: the workflow must void it
    fraud: float = 0  # the simulated model rejects the order, if the screening rule picks it
    suspect: float = 0  # the simulated model sends the order to an operator, if the rule picks it

    def __post_init__(self) -> None:
        shares = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, share in shares.items():
            if not 0 <= share <= 1:
                raise ValueError(f"the share of +{name} customers must be between 0 and 1, not {share}")
        if sum(shares.values()) > 1:
            raise ValueError(f"the shares of customers asking for failures add up to more than 1: {shares}")


def seed_catalogue(run: str, products: int = 8, scarce: int = 2, stock: int = 10_000, scarce_stock: int = 300):
    """Products for this run; the first ``scarce`` ones run out during the run."""
    catalogue = []
    for index in range(products):
        product, _ = Product.objects.get_or_create(
            sku=f"{run}-SKU{index:02d}",
            defaults={
                "name": f"Demo product {index}",
                "price": Decimal(5 + 3 * index).quantize(Decimal("0.01")),
                "stocked": scarce_stock if index < scarce else stock,
            },
        )
        catalogue.append(product)
    return catalogue


def customer_for(index: int, mix: Mix, rng: random.Random) -> str:
    roll = rng.random()
    tag = ""
    for name in Mix.__dataclass_fields__:
        share = getattr(mix, name)
        if roll < share:
            tag = f"+{name}"
            break
        roll -= share
    return f"customer{index}{tag}@example.com"


def place_orders(
    run: str,
    count: int,
    catalogue,
    mix: Mix = Mix(),
    seed: int = 7,
    on_placed: Callable[[int], None] | None = None,
    before_each: Callable[[int], bool] | None = None,
    sink: list[int] | None = None,
) -> list[int]:
    """Place ``count`` orders; ``before_each(index)`` may pace them, or stop early by returning False.
    Their ids go to ``sink`` as they are placed, for whoever watches them meanwhile."""
    order_ids = sink if sink is not None else []
    for index, customer, items in order_stream(count, catalogue, mix, seed):
        if before_each is not None and not before_each(index):
            break
        order = place_patiently(customer, items, idempotency_key=f"{run}-order-{index}")
        order_ids.append(order.pk)
        if on_placed:
            on_placed(index)
    return order_ids


def order_stream(count: int, catalogue, mix: Mix, seed: int) -> Iterator[tuple[int, str, list[tuple[str, int]]]]:
    """The same orders for the same seed: (index, customer, [(sku, quantity), ...])."""
    rng = random.Random(seed)
    for index in range(count):
        lines = rng.sample(catalogue, k=rng.randint(1, 3))
        items = [(product.sku, rng.randint(1, 3)) for product in sorted(lines, key=lambda p: p.pk)]
        yield index, customer_for(index, mix, rng), items


def place_patiently(customer: str, items: list[tuple[str, int]], *, idempotency_key: str, give_up_after: float = 300):
    """Place one order the way a well-behaved client does: wait out backpressure (a 503 with
    Retry-After), and resend with the same key when the database is briefly unreachable."""
    deadline = time.monotonic() + give_up_after
    while True:
        try:
            order, _ = place_order(customer, items, idempotency_key=idempotency_key)
            return order
        except Overloaded as busy:
            pause = min(busy.retry_after, 1.0)
        except (OperationalError, InterfaceError):
            connection.close()  # the server restarted: the next query opens a fresh connection
            pause = 0.5
        if time.monotonic() > deadline:
            raise TimeoutError(f"order {idempotency_key} could not be placed within {give_up_after:.0f}s")
        time.sleep(pause)


def through_restarts(function: Callable[[], T], give_up_after: float = 120) -> T:
    """Call ``function``; while the database restarts, reconnect and call again."""
    deadline = time.monotonic() + give_up_after
    while True:
        try:
            return function()
        except (OperationalError, InterfaceError):
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def terminal_count(order_ids: list[int]) -> int:
    return Order.objects.filter(pk__in=order_ids, state__in=TERMINAL_STATES).count()


def last_task_finished(order_ids: list[int]) -> float | None:
    """When the last task of these orders' workflows finished (seconds since the epoch, the
    clock ``time.time()`` reads): a run's end, read from the rows rather than from a poll."""
    orders = Order.objects.filter(pk__in=order_ids).values("workflow_id")
    last = AgentTask.objects.filter(workflow_id__in=orders).aggregate(last=Max("finished_at"))["last"]
    return last.timestamp() if last else None


def waiting_for_review(order_ids: list[int]) -> list[int]:
    return list(
        Order.objects.filter(pk__in=order_ids, state=OrderState.AWAITING_REVIEW)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def settle_reviews(order_ids: list[int], *, operator: str, reject_every: int = 0) -> tuple[list[int], list[int]]:
    """Play the operator: decide every order of these waiting for review, rejecting every
    ``reject_every``-th one (0: none) and approving the others. Returns (approved, rejected)."""
    approved: list[int] = []
    rejected: list[int] = []
    for index, order_id in enumerate(waiting_for_review(order_ids), start=1):
        reject = bool(reject_every) and index % reject_every == 0
        try:
            decide_review(
                order_id,
                approve=not reject,
                actor=operator,
                note=f"{'rejected' if reject else 'approved'} by the {operator} run",
            )
        except IllegalTransition:
            continue  # its deadline (or a cancel) came first
        (rejected if reject else approved).append(order_id)
    return approved, rejected


def unfinished_tasks(horizon_seconds: float = 600):
    """Tasks claimed, or pending and due within the horizon: work a fleet will take up (tasks
    deferred by a guard or backing off are still work, not quiet)."""
    horizon = timezone.now() + timedelta(seconds=horizon_seconds)
    return AgentTask.objects.filter(Q(status=TaskStatus.CLAIMED) | Q(status=TaskStatus.PENDING, run_after__lte=horizon))


def wait_until_quiet(timeout: float) -> bool:
    """Wait until no task is unfinished (unfinished_tasks); False if the timeout came first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not unfinished_tasks().exists():
            return True
        time.sleep(0.5)
    return False


@dataclass
class Figures:
    orders: int
    by_state: dict[str, int]
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.orders / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (1-99) of the values, 0 when there are none."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def figures(order_ids: list[int], seconds: float) -> Figures:
    orders = Order.objects.filter(pk__in=order_ids)
    by_state = dict(orders.values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    latencies = sorted(
        (finished - created).total_seconds()
        for created, finished in orders.filter(finished_at__isnull=False).values_list("created_at", "finished_at")
    )
    return Figures(len(order_ids), by_state, seconds, latencies)
