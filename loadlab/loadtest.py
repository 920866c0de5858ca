"""A load test: orders through the six agents on real workers, paced by arrival rate or by
orders in flight, against an outside world with chosen latency and failure rates."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection
from tqdm import tqdm

from agents.invariants import InvariantResult, check_all
from agents.outside import world
from agents.outside.model_server import configure_model
from loadlab import measures, workload
from orchestration.registry import AgentDefinition, registry
from orchestration.schedules import all_periodic_jobs, install_periodic_jobs
from orchestration.testing.fleet import BeatProcess, Fleet, WorkerProcess, database_url

NO_FAILURES = workload.Mix(decline=0, flaky=0, timeout=0, shipfail=0)


@dataclass(frozen=True)
class LoadSpec:
    """What to run: how many orders, how fast, against what outside world, on which workers."""

    orders: int = 1000
    rate: float | None = None  # orders per second (open loop); None: as fast as placement goes
    concurrency: int | None = None  # at most this many orders in flight (closed loop)
    ramp_up: float = 0  # seconds for the rate or concurrency to grow from 0 to its target
    duration: float | None = None  # stop placing after this many seconds
    products: int = 8
    scarce: int = 2
    latency_ms: float = 0
    transient_rate: float = 0.02
    timeout_rate: float = 0
    refusal_rate: float = 0
    mix: workload.Mix = field(default_factory=workload.Mix)
    workers: int = 2
    worker_concurrency: int = 2
    slow_pool: str = ""  # "threads": agents that call the outside world run on a thread pool
    slow_concurrency: int = 50
    # The connections of a thread-pool worker for slow agents (DATABASE_POOL_SIZE): enough for
    # the threads that are between calls, recording a result, at one time.
    slow_connections: int = 20
    dependency_slots: int | None = None  # concurrency guard per outside dependency
    lease_seconds: int | None = None
    screen_above: float | None = None  # orders above this total see the risk model (None: the setting's)
    model_latency_ms: float = 0  # how long the simulated model takes to answer
    timeout: float = 900
    seed: int = 7
    place_first: bool = False  # every order placed before a worker starts: all of them in flight

    def __post_init__(self) -> None:
        if self.orders < 1:
            raise ValueError(f"orders must be at least 1, not {self.orders}")
        if self.rate is not None and self.concurrency is not None:
            raise ValueError("give a rate or a concurrency, not both")
        if self.place_first and (self.rate is not None or self.concurrency is not None):
            raise ValueError("place-first places every order at once: give no rate or concurrency with it")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be above 0 orders/s, not {self.rate}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 order in flight, not {self.concurrency}")
        if self.products < 1 or not 0 <= self.scarce <= self.products:
            raise ValueError(f"products must be at least 1 and scarce between 0 and products ({self.products})")
        for name in ("transient_rate", "timeout_rate", "refusal_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name.replace('_', '-')} must be between 0 and 1, not {getattr(self, name)}")
        if self.slow_pool not in {"", "threads", "prefork"}:
            raise ValueError(f"slow-pool must be 'threads' or 'prefork', not {self.slow_pool!r}")
        if min(self.workers, self.worker_concurrency, self.slow_concurrency, self.slow_connections) < 1:
            raise ValueError("workers, worker-concurrency, slow-concurrency and slow-connections must be at least 1")


@dataclass
class LoadResult:
    run: str
    spec: LoadSpec
    order_ids: list[int]
    seconds: float
    figures: workload.Figures
    timeline: measures.Timeline
    agents: dict[str, measures.Latencies]
    counts: measures.Counts
    invariants: list[InvariantResult]
    quiet: bool
    peak_rss: dict[str, int] = field(default_factory=dict)
    peak_fleet: tuple[int, int] = (0, 0)  # the whole fleet, beat included: (RSS, PSS) bytes
    peak_in_flight: int = 0
    peak_outside_calls: int = 0
    models: measures.ModelFigures = field(default_factory=measures.ModelFigures)

    @property
    def placed(self) -> int:
        return len(self.order_ids)

    @property
    def success_rate(self) -> float:
        return self.figures.by_state.get("COMPLETED", 0) / self.placed if self.placed else 0.0


def worker_environment(spec: LoadSpec) -> dict[str, str]:
    # The workers obey the failure rates and the customers' failure tags the run asks for.
    # DEBUG off, as in production: with it on, Django keeps every query of a worker in memory.
    env = {
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SIMULATED_FAILURES": "true",
        "DEBUG": "false",
    }
    if spec.lease_seconds:
        env["AGENT_TASK_DEFAULT_LEASE_SECONDS"] = str(spec.lease_seconds)
    if spec.screen_above is not None:
        env["RISK_SCREEN_ABOVE"] = str(spec.screen_above)
    if spec.dependency_slots:
        limits = {**settings.GUARD_LIMITS}
        limits["concurrency"] = {
            **limits.get("concurrency", {}),
            **{f"dependency:{service}": spec.dependency_slots for service in world.SERVICES},
        }
        env["GUARD_LIMITS"] = json.dumps(limits)
    return env


def outside_callers() -> list[AgentDefinition]:
    """The agents that call the outside world (a dependency, a model): their calls take time, not CPU."""
    names = {
        definition.name
        for definition, operation in registry.all_operations()
        if operation.dependency or operation.call is not None
    }
    return [registry.agents[name] for name in sorted(names)]


def slow_queues() -> list[str]:
    return sorted({definition.queue for definition in outside_callers()})


def slow_worker_environment(spec: LoadSpec) -> dict[str, str]:
    """A thread-pool worker's threads share a small connection pool: a thread waiting on an
    outside call has given its connection back, so connections follow work, not calls in flight.
    A thread claims one task at a time and keeps one follow-up: slow calls then wait in other
    threads at the same time, not one after the other in this one, and no claim waits behind
    a call (its lease would need a heartbeat, and 500 threads' worth of those a connection each)."""
    if spec.slow_pool != "threads":
        return {}
    return {
        "DATABASE_POOL_SIZE": str(min(spec.slow_concurrency, spec.slow_connections)),
        "AGENT_TASK_CLAIM_BATCH": "1",
        "AGENT_TASK_EAGER_FOLLOW_UPS": "1",
    }


def agent_workers(spec: LoadSpec, worker: Callable[..., WorkerProcess]) -> list[WorkerProcess]:
    """One machine's agent workers, each made by ``worker(queues, **options)``: prefork workers,
    and a thread-pool worker for the slow agents when asked."""
    fast = registry.queues()
    processes = []
    if spec.slow_pool:
        fast = [queue for queue in fast if queue not in slow_queues()]
        processes.append(
            worker(
                slow_queues(),
                concurrency=spec.slow_concurrency,
                pool=spec.slow_pool,
                name="slow-agents",
                env=slow_worker_environment(spec),
            )
        )
    processes += [worker(fast, concurrency=spec.worker_concurrency, name=f"agents{i}") for i in range(spec.workers)]
    return processes


def build_fleet(spec: LoadSpec, log_dir: Path | None = None, extra: list | None = None) -> Fleet:
    """The agent workers, one maintenance worker for the sweeps, and the one beat."""
    env = worker_environment(spec)

    def worker(queues: list[str], **options) -> WorkerProcess:
        return WorkerProcess(queues, env={**env, **options.pop("env", {})}, log_dir=log_dir, **options)

    processes: list = agent_workers(spec, worker)
    processes.append(worker(["orchestration"], concurrency=1, name="maintenance"))
    processes.append(BeatProcess(env=env, log_dir=log_dir))
    return Fleet(processes + (extra or []))


def configure_world(spec: LoadSpec) -> None:
    for service in world.SERVICES:
        world.configure(
            service,
            latency_ms=spec.latency_ms,
            transient_rate=spec.transient_rate,
            timeout_rate=spec.timeout_rate,
            refusal_rate=spec.refusal_rate if service != "provider" else 0,
        )
    configure_model(latency_ms=spec.model_latency_ms, unavailable_rate=spec.transient_rate)


class Pacer:
    """Decides when the next order may be placed: by arrival rate, or by orders in flight."""

    def __init__(self, spec: LoadSpec, progress: Progress):
        self.spec = spec
        self.progress = progress
        self.started = time.monotonic()

    def ramp(self, elapsed: float) -> float:
        return 1.0 if self.spec.ramp_up <= 0 else min(1.0, elapsed / self.spec.ramp_up)

    def due(self, elapsed: float) -> float:
        """How many orders should have arrived by now at the target rate, ramped linearly."""
        rate, ramp_up = self.spec.rate or 0, self.spec.ramp_up
        if ramp_up <= 0 or elapsed >= ramp_up:
            return rate * (elapsed - ramp_up / 2 if ramp_up > 0 else elapsed)
        return rate * elapsed * elapsed / (2 * ramp_up)

    def __call__(self, index: int) -> bool:
        while True:
            elapsed = time.monotonic() - self.started
            self.progress.refresh()
            if self.spec.duration is not None and elapsed > self.spec.duration:
                return False
            if self.spec.rate is not None:
                if index < max(1.0, self.due(elapsed)):
                    return True
            elif self.spec.concurrency is not None:
                allowed = max(1, round(self.spec.concurrency * self.ramp(elapsed)))
                if self.progress.in_flight() < allowed:
                    return True
            else:
                return True
            time.sleep(0.01)


class Progress:
    """The live bar: orders finished out of those to place, with placed and in flight."""

    def __init__(self, total: int, order_ids: list[int], fleet: Fleet, enabled: bool = True, watch_memory: bool = True):
        self.bar = tqdm(total=total, desc="finished", unit="order", disable=not enabled, dynamic_ncols=True)
        self.order_ids = order_ids
        self.fleet = fleet
        self.watch_memory = watch_memory
        self.finished = 0
        self.checked_at = 0.0
        self.peak_in_flight = 0
        self.peak_rss: dict[str, int] = {}
        self.peak_fleet = (0, 0)  # the whole fleet's (RSS, PSS) bytes when its PSS peaked
        self.lock = threading.Lock()

    def refresh(self, force: bool = False) -> int:
        if not force and time.monotonic() - self.checked_at < 0.5:
            return self.finished
        self.checked_at = time.monotonic()
        self.finished = workload.through_restarts(lambda: workload.terminal_count(self.order_ids))
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight())
        if self.watch_memory:
            self.look_at_memory()
        self.bar.set_postfix(placed=len(self.order_ids), in_flight=self.in_flight(), refresh=False)
        self.bar.update(self.finished - self.bar.n)
        return self.finished

    def look_at_memory(self) -> None:
        # PSS walks every process's page tables (smaps_rollup): in the kernel, but on this
        # process's clock, and on the cores the fleet is measured on.
        memory = self.fleet.memory()
        for worker in self.fleet.workers():
            self.peak_rss[worker.name] = max(self.peak_rss.get(worker.name, 0), memory[worker][0])
        fleet = (sum(rss for rss, _pss in memory.values()), sum(pss for _rss, pss in memory.values()))
        self.peak_fleet = max(self.peak_fleet, fleet, key=lambda both: both[1])

    def in_flight(self) -> int:
        return len(self.order_ids) - self.finished

    def close(self) -> None:
        self.bar.close()


def run_load(
    spec: LoadSpec,
    *,
    run: str | None = None,
    progress: bool = True,
    log_dir: Path | None = None,
    during: Callable[[Fleet, Progress], Callable[[bool], None]] | None = None,
    out: Callable[[str], None] = print,
    fleet: Fleet | None = None,
    watch_memory: bool = True,
) -> LoadResult:
    """Run the load test end to end and measure it; ``during`` starts extra trouble (chaos)
    once the fleet is up and returns how to stop it (told whether the run completed).
    ``fleet`` replaces the one built from the spec (workers on other hosts); without
    ``watch_memory`` the fleet's peak memory is not sampled (and reported as 0)."""
    run = run or time.strftime("load%Y%m%d%H%M%S")
    leftover = workload.unfinished_tasks().count()
    if leftover:
        out(
            f"{run}: {leftover:,} unfinished tasks of earlier runs are in this database; the fleet "
            "works through them too, and this run's figures include that work (an empty database "
            "measures this run alone)"
        )
    install_periodic_jobs(all_periodic_jobs())
    configure_world(spec)
    catalogue = workload.seed_catalogue(run, products=spec.products, scarce=spec.scarce)
    fleet = fleet or build_fleet(spec, log_dir)
    order_ids: list[int] = []
    placing_started = time.monotonic()
    if spec.place_first:
        workload.place_orders(run, spec.orders, catalogue, mix=spec.mix, seed=spec.seed, sink=order_ids)
        out(
            f"{run}: placed {len(order_ids)} orders in {time.monotonic() - placing_started:.1f} s before any worker ran"
        )
    fleet.start()
    out(
        f"{run}: {spec.orders} orders over {len(catalogue)} products ({spec.scarce} scarce); "
        f"{len(fleet.workers()) - 1} agent workers and 1 maintenance worker, 1 beat; "
        f"outside latency {spec.latency_ms:g} ms"
    )
    bar = Progress(spec.orders, order_ids, fleet, enabled=progress, watch_memory=watch_memory)
    if spec.place_first:
        # Placed before any worker ran, none could end: all were in flight at once, whatever
        # finished before the first look at the progress.
        bar.peak_in_flight = len(order_ids)
    stop_trouble = during(fleet, bar) if during else None
    started, started_at = time.monotonic(), time.time()
    try:
        if not spec.place_first:
            workload.place_orders(
                run,
                spec.orders,
                catalogue,
                mix=spec.mix,
                seed=spec.seed,
                on_placed=lambda _i: None,
                before_each=Pacer(spec, bar),
                sink=order_ids,
            )
        bar.bar.total = len(order_ids)
        while bar.refresh() < len(order_ids) and time.monotonic() - started < spec.timeout:
            waiting = workload.through_restarts(lambda: len(workload.waiting_for_review(order_ids)))
            if bar.in_flight() <= waiting:
                # Only orders waiting for an operator are left: approve them, as one would.
                workload.through_restarts(lambda: workload.settle_reviews(order_ids, operator="loadtest"))
            time.sleep(0.2)
        polled = time.monotonic() - started
        finished = bar.refresh(force=True) == len(order_ids)
        if stop_trouble:
            stop_trouble(True)
            stop_trouble = None
        quiet = workload.through_restarts(lambda: workload.wait_until_quiet(timeout=180))
        seconds = run_seconds(order_ids, started_at, polled) if finished and quiet else polled
    finally:
        if stop_trouble:
            stop_trouble(False)
        bar.close()
        fleet.stop()
        connection.close()
    return measure(run, spec, order_ids, seconds, quiet, bar)


def run_seconds(order_ids: list[int], started_at: float, polled: float) -> float:
    """From the first placement to the end of the last order's last task, read from the rows:
    the loop above sees the end only at its next look (every half second), and the tasks that
    trail an order's last state change (its notifications) are the run's work too."""
    last = workload.last_task_finished(order_ids)
    return last - started_at if last else polled


def measure(run: str, spec: LoadSpec, order_ids: list[int], seconds: float, quiet: bool, bar: Progress) -> LoadResult:
    correlation_ids = measures.correlation_ids(order_ids)
    return LoadResult(
        run=run,
        spec=spec,
        order_ids=order_ids,
        seconds=seconds,
        figures=workload.figures(order_ids, seconds),
        timeline=measures.timeline(order_ids),
        agents=measures.claim_to_complete(correlation_ids),
        counts=measures.counts(correlation_ids),
        invariants=check_all(),
        quiet=quiet,
        peak_rss=bar.peak_rss,
        peak_fleet=bar.peak_fleet,
        peak_in_flight=bar.peak_in_flight,
        peak_outside_calls=measures.peak_overlap(correlation_ids, [agent.name for agent in outside_callers()]),
        models=measures.model_usage(order_ids),
    )
