"""The benchmark: the order workflow through the system and as the naive Celery chain, in the
same run, and the kernel's claim+complete latency with a million finished tasks in the table."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from decimal import Decimal

from django.db import DatabaseError, connection, transaction

from loadlab import naive, workload
from loadlab.cpu import CpuMeter, CpuSeconds
from loadlab.loadtest import NO_FAILURES, LoadSpec, configure_world, run_load, worker_environment
from loadlab.measures import Latencies
from orchestration.models import AgentTask, TaskAttempt
from orchestration.redis_client import redis_client
from orchestration.testing.fleet import Fleet, WorkerProcess
from orchestration.work import lifecycle
from orders.models import Order, Product

TABLE = AgentTask._meta.db_table
ORDERS = Order._meta.db_table
BENCH_AGENT = "bench"  # no handler: only the kernel's statements are timed


@dataclass
class Traffic:
    """What the servers did during a phase, per order: SQL statements (pg_stat_statements, None
    when the server does not load it), of them those on the simulated services' ledgers, the
    bytes of write-ahead log PostgreSQL wrote (every row and index entry written, whoever
    wrote it), and Redis commands (INFO commandstats: broker, guards and wake-ups alike)."""

    statements: float | None = None
    outside_statements: float | None = None
    wal_bytes: float = 0.0
    redis_commands: float = 0.0


@dataclass
class Throughput:
    name: str
    orders: int
    seconds: float
    latencies: Latencies
    traffic: Traffic = field(default_factory=Traffic)
    cpu: CpuSeconds = field(default_factory=CpuSeconds)  # milliseconds per order, by process kind
    stolen: float | None = None  # the share of the machine's CPU time the host took (CpuMeter)

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds if self.seconds else 0.0


def combined(phases: list[Throughput]) -> Throughput:
    """Several runs of one kind as one: orders over seconds, every latency, and the per-order
    figures weighted by each run's orders."""
    orders = sum(phase.orders for phase in phases)

    def per_order(values: list[float | None]) -> float | None:
        if any(value is None for value in values):
            return None
        return sum(value * phase.orders for value, phase in zip(values, phases, strict=True)) / max(orders, 1)

    def merged(kind: type, part: Callable[[Throughput], object]):
        return kind(*(per_order([getattr(part(phase), f.name) for phase in phases]) for f in fields(kind)))

    seconds = sum(phase.seconds for phase in phases)
    shares = [(phase.stolen, phase.seconds) for phase in phases if phase.stolen is not None]
    stolen = (
        sum(share * length for share, length in shares) / seconds if seconds and len(shares) == len(phases) else None
    )
    return Throughput(
        phases[0].name,
        orders,
        seconds,
        Latencies(sorted(sample for phase in phases for sample in phase.latencies.samples)),
        merged(Traffic, lambda phase: phase.traffic),
        merged(CpuSeconds, lambda phase: phase.cpu),
        stolen,
    )


# --- What the servers did ----------------------------------------------------------------


def statement_counts() -> tuple[int, int] | None:
    """All statements run against this database so far, and those on the outside world's
    tables; None without pg_stat_statements."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            cursor.execute(
                # The foreign-key checks PostgreSQL runs inside an insert are no round trips.
                """SELECT coalesce(sum(calls), 0), coalesce(sum(calls) FILTER (WHERE query LIKE '%%outside_%%'), 0)
                FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND query NOT LIKE '%%FOR KEY SHARE OF x'"""
            )
            total, outside = cursor.fetchone()
            return int(total), int(outside)
    except DatabaseError:  # not loaded (shared_preload_libraries), or not ours to create
        return None


def wal_position() -> int:
    """Bytes of write-ahead log written since the server's first (the whole server's)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        return cursor.fetchone()[0]


def redis_commands() -> int:
    return sum(int(stats["calls"]) for stats in redis_client().info("commandstats").values())


@contextmanager
def traffic_of(orders: Callable[[], int]) -> Iterator[Traffic]:
    """Count the servers' work over the block; per order once it ends (``orders`` says how many)."""
    traffic = Traffic()
    before, wal_before, redis_before = statement_counts(), wal_position(), redis_commands()
    yield traffic
    after, wal_after, redis_after = statement_counts(), wal_position(), redis_commands()
    count = max(orders(), 1)
    if before is not None and after is not None:
        traffic.statements = (after[0] - before[0]) / count
        traffic.outside_statements = (after[1] - before[1]) / count
    traffic.wal_bytes = (wal_after - wal_before) / count
    traffic.redis_commands = (redis_after - redis_before) / count


def bench_spec(orders: int, **overrides) -> LoadSpec:
    """Every order can complete: no failures asked for, no scarce products."""
    defaults = dict(orders=orders, scarce=0, transient_rate=0, mix=NO_FAILURES)
    return LoadSpec(**(defaults | overrides))


def through_the_system(spec: LoadSpec, run: str, out: Callable[[str], None], name: str = "system") -> Throughput:
    """The orders through the system; latency is from placement to the workflow's last task.
    The fleet's memory is not sampled: the bench does not report it, and reading it costs the
    generator CPU on the cores being measured."""
    placed: list[int] = []
    meter = CpuMeter()

    def measured(fleet: Fleet, _progress) -> Callable[[bool], None]:
        meter.started(fleet)

        def ended(_completed: bool) -> None:
            # The notifications that trail an order's last state change are its work too: the
            # chain's figures end with its last task, so these do.
            workload.wait_until_quiet(timeout=spec.timeout)
            meter.ended(fleet)

        return ended

    with traffic_of(lambda: len(placed)) as traffic:
        result = run_load(spec, run=f"{run}-{name}", progress=False, out=out, during=measured, watch_memory=False)
        placed = result.order_ids
    cpu = meter.used.per_order_ms(result.placed)
    latencies = last_task_latencies(result.order_ids)
    return Throughput(name, result.placed, result.seconds, latencies, traffic, cpu, meter.stolen)


def last_task_latencies(order_ids: list[int]) -> Latencies:
    """Per finished order: from its placement to the end of the last task of its workflow."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT extract(epoch FROM max(t.finished_at) - o.created_at)
            FROM {ORDERS} o JOIN {TABLE} t ON t.workflow_id = o.workflow_id
            WHERE o.id = ANY(%s) AND o.finished_at IS NOT NULL
            GROUP BY o.id, o.created_at""",
            [order_ids],
        )
        return Latencies(sorted(float(row[0]) for row in cursor.fetchall()))


def through_the_naive_chain(spec: LoadSpec, run: str, out: Callable[[str], None]) -> Throughput:
    """The same orders, catalogue and outside world, on as many worker processes."""
    run = f"{run}-naive"
    configure_world(spec)
    catalogue = workload.seed_catalogue(run, products=spec.products, scarce=spec.scarce)
    fleet = Fleet(
        [
            WorkerProcess(
                [naive.QUEUE],
                concurrency=spec.worker_concurrency,
                name=f"naive{i}",
                env=worker_environment(spec),
                extra_args=["-I", "loadlab.naive"],
            )
            for i in range(spec.workers)
        ]
    ).start()
    out(f"{run}: {spec.orders} orders as a plain Celery chain on {spec.workers} workers x {spec.worker_concurrency}")
    started_at: dict[str, float] = {}
    meter = CpuMeter()
    try:
        meter.started(fleet)
        with traffic_of(lambda: spec.orders) as traffic:
            started, started_wall = time.monotonic(), time.time()
            for index, customer, items in workload.order_stream(spec.orders, catalogue, NO_FAILURES, spec.seed):
                ref = f"{run}-{index}"
                prices = {product.sku: product.price for product in catalogue}
                total = sum((prices[sku] * quantity for sku, quantity in items), Decimal(0))
                started_at[ref] = time.time()
                naive.send({"run": run, "ref": ref, "customer": customer, "items": items, "total": str(total)})
            key = naive.finished_key(run)
            while redis_client().hlen(key) < spec.orders and time.monotonic() - started < spec.timeout:
                time.sleep(0.2)
            finished = redis_client().hgetall(key)
        meter.ended(fleet)
    finally:
        fleet.stop()
    ended_at = {ref: float(value.split()[0]) for ref, value in finished.items()}
    # From the first order sent to the last one's last task, as the system's is measured (not
    # to the poll above that saw it).
    seconds = max(ended_at.values()) - started_wall if ended_at else time.monotonic() - started
    latencies = sorted(ended_at[ref] - started_at[ref] for ref in ended_at)
    cpu = meter.used.per_order_ms(len(finished))
    return Throughput("naive chain", len(finished), seconds, Latencies(latencies), traffic, cpu, meter.stolen)


def remove_naive_effects(run: str) -> None:
    """The chain leaves ledger rows for orders the system never knew; drop them so the
    invariant check of later runs on this database is not about the benchmark."""
    from agents.outside.models import CarrierParcel, GatewayEntry, ProviderMessage

    prefix = f"{run}-naive"
    for model in (GatewayEntry, CarrierParcel, ProviderMessage):
        model.objects.filter(order_ref__startswith=prefix).delete()
    Product.objects.filter(sku__startswith=prefix).delete()
    redis_client().delete(naive.finished_key(prefix))


# --- claim + complete with a full table ------------------------------------------------


def claim_and_complete(samples: int, tag: str) -> Latencies:
    """Time one claim and one fenced completion, each in its transaction, for fresh tasks."""
    tasks = AgentTask.objects.bulk_create(
        AgentTask(
            agent=BENCH_AGENT,
            operation="noop",
            idempotency_key=f"bench:{tag}:{index}",
            correlation_id=f"bench-{tag}",
        )
        for index in range(samples)
    )
    timings = []
    for task in tasks:
        began = time.perf_counter()
        claim = lifecycle.claim(task.pk, worker="bench", lease_seconds=60)
        assert claim is not None, f"bench task {task.pk} could not be claimed"
        with transaction.atomic():
            lifecycle.complete(task.pk, claim.fence)
        timings.append(time.perf_counter() - began)
    TaskAttempt.objects.filter(correlation_id=f"bench-{tag}").delete()
    AgentTask.objects.filter(correlation_id=f"bench-{tag}").delete()
    return Latencies(sorted(timings))


def fill_finished_tasks(rows: int, tag: str) -> float:
    """Insert ``rows`` succeeded tasks in one statement; returns the seconds it took."""
    began = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        # A million rows in one statement outlast the statement timeout every session has.
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute(
            f"""
            INSERT INTO {TABLE} (agent, operation, event_type, payload, payload_version, status, priority,
                attempts, max_attempts, reclaims, run_after, idempotency_key, workflow_id, correlation_id,
                claimed_by, fence, last_error, cost, created_at, updated_at, finished_at, result)
            SELECT 'bench-fill', 'noop', '', '{{}}'::jsonb, 1, 'succeeded', 0, 1, 5, 0, now(),
                'bench-fill:' || %(tag)s || ':' || n, 'bench-fill-' || %(tag)s || ':' || n, 'bench-fill-' || %(tag)s,
                'bench', 1, '', 0, now(), now(), now(), 'null'::jsonb
            FROM generate_series(1, %(rows)s) AS n
            """,
            {"tag": tag, "rows": rows},
        )
        cursor.execute(f"ANALYZE {TABLE}")
    return time.monotonic() - began


def remove_filled_tasks(tag: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute(f"DELETE FROM {TABLE} WHERE correlation_id = %s", [f"bench-fill-{tag}"])
        cursor.execute(f"ANALYZE {TABLE}")


def table_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {TABLE}")
        return cursor.fetchone()[0]


def new_tag() -> str:
    return uuid.uuid4().hex[:8]
