"""Scale-out on one machine: the order workload on 1, 2 and 3 worker hosts of the same size, each
host a network namespace on the same PostgreSQL and Redis (orchestration.testing.hosts); then a
host cut off mid-run for longer than the lease, and healed."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from loadlab import measures
from loadlab.chaos import ChaosReport, chaos_report
from loadlab.loadtest import (
    LoadResult,
    LoadSpec,
    Progress,
    agent_workers,
    database_url,
    run_load,
    worker_environment,
)
from orchestration.models import AttemptStatus, TaskAttempt, Worker
from orchestration.observability import figures
from orchestration.testing.fleet import Fleet
from orchestration.testing.hosts import Cluster
from orchestration.testing.netns import Host

LINKS = ("postgres", "redis", "metrics")


@dataclass(frozen=True)
class PartitionPlan:
    host: int = 2  # which worker host is cut off
    links: tuple[str, ...] = LINKS  # what it is cut off from: all of them, or postgres or redis only
    at: float = 0.3  # the share of the orders finished when the cut comes
    seconds: float = 30  # how long it lasts: longer than the lease

    def describe(self) -> str:
        cut_from = "everything" if set(self.links) == set(LINKS) else " and ".join(self.links)
        return f"host-{self.host} cut off from {cut_from} at {100 * self.at:.0f}% of the orders for {self.seconds:g} s"


@dataclass
class HostsRun:
    """One run on a number of hosts: the load figures, and what the hosts did."""

    hosts: int
    result: LoadResult
    attempts_by_host: dict[str, int]  # from the spans in the database, since the run began
    scraped_by_host: dict[str, float]  # agent_task_attempts_total from each host's exporter
    live_workers: list[Worker] = field(default_factory=list)  # as the admin showed them mid-run
    partition: PartitionPlan | None = None
    outcome: ChaosReport | None = None
    cut_off_attempts: dict[str, int] = field(default_factory=dict)  # the cut host's interrupted spans, by status
    cut_at: datetime | None = None
    healed_at: datetime | None = None

    @property
    def per_second(self) -> float:
        return self.result.figures.throughput


def host_of(worker: str) -> str:
    """The host in a worker name ("host-2:1234")."""
    return worker.rpartition(":")[0] or worker


def attempts_by_host(since: datetime) -> dict[str, int]:
    """Attempts started since ``since``, by the host of the worker that made each (all the work
    the hosts did, an earlier run's leftovers too, as their exporters count it)."""
    spans = TaskAttempt.objects.filter(started_at__gte=since)
    counted: Counter[str] = Counter()
    for worker, count in spans.values("worker").annotate(n=Count("pk")).values_list("worker", "n"):
        counted[host_of(worker)] += count
    return dict(sorted(counted.items()))


def scraped_attempts(cluster: Cluster, host: Host) -> float:
    """The attempts the host's workers counted, as Prometheus reads them from its exporter."""
    total = 0.0
    for family in text_string_to_metric_families(cluster.scrape(host)):
        if family.name == "agent_task_attempts":
            total += sum(sample.value for sample in family.samples if sample.name == "agent_task_attempts_total")
    return total


def cluster_fleet(cluster: Cluster, hosts: list[Host], spec: LoadSpec) -> Fleet:
    """The same agent workers on every worker host; the maintenance worker and the one beat on
    the control host, which is never cut off, so the sweeps go on whatever host is lost."""
    processes: list = []
    for host in hosts:
        processes += agent_workers(spec, functools.partial(cluster.worker, host))
    processes.append(cluster.worker(cluster.control, ["orchestration"], concurrency=1, name="maintenance"))
    processes.append(cluster.beat())
    return Fleet(processes)


class Observer:
    """During a run: notes the live workers once half the orders are done (what the admin's
    workers page and dashboard show then), and carries out the partition plan if there is one."""

    def __init__(self, cluster: Cluster, progress: Progress, total: int, plan: PartitionPlan | None):
        self.cluster = cluster
        self.progress = progress
        self.total = total
        self.plan = plan
        self.live_workers: list[Worker] = []
        self.happenings: list[str] = []
        self.cut_at: datetime | None = None
        self.healed_at: datetime | None = None
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self.run, name="cluster-observer", daemon=True)

    def note(self, what: str) -> None:
        self.happenings.append(f"{time.monotonic() - self.started:6.1f}s  {what}")

    def reached(self, share: float) -> bool:
        return self.progress.finished >= share * self.total

    @property
    def host(self) -> Host:
        assert self.plan is not None
        return self.cluster.hosts[self.plan.host - 1]

    def run(self) -> None:
        try:
            while not self.stopping.wait(0.25):
                if not self.live_workers and self.reached(0.5):
                    self.live_workers = figures.live_workers()
                if self.plan is None or self.healed_at is not None:
                    continue
                if self.cut_at is None and self.reached(self.plan.at) and self.host_is_busy():
                    self.cluster.cut(self.host, self.plan.links)
                    self.cut_at = timezone.now()
                    self.note(f"cut {self.plan.describe()}")
                elif self.cut_at is not None and timezone.now() - self.cut_at >= timedelta(seconds=self.plan.seconds):
                    self.heal()
        except Exception as error:  # the report says what went wrong; the run goes on
            self.note(f"observer failed: {type(error).__name__}: {error}")
        finally:
            self.heal()

    def host_is_busy(self) -> bool:
        """The host is running attempts: a cut now leaves claims behind it."""
        running = TaskAttempt.objects.filter(status=AttemptStatus.RUNNING)
        return running.filter(worker__startswith=f"{self.host.name}:").exists()

    def heal(self) -> None:
        if self.cut_at is None or self.healed_at is not None:
            return
        self.cluster.heal(self.host, self.plan.links)
        self.healed_at = timezone.now()
        self.note(f"healed {self.host.name} after {(self.healed_at - self.cut_at).total_seconds():.1f} s")

    def stop(self, completed: bool) -> None:
        """Stop observing. When the run completed, a cut under way first lasts its full time, and
        the healed host gets time to come back."""
        if completed and self.cut_at is not None:
            while self.healed_at is None and self.thread.is_alive():
                time.sleep(0.25)
        self.stopping.set()
        self.thread.join()
        if self.plan is None or not completed:
            return
        if self.cut_at is None:
            self.note("the run finished before the cut came: use more orders or an earlier --cut-at")
        else:
            self.wait_for_return(timeout=max(60.0, 3 * self.plan.seconds))

    def wait_for_return(self, timeout: float) -> None:
        """Until the healed host's workers write their heartbeat rows again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if Worker.objects.filter(hostname=self.host.name, last_seen_at__gt=self.healed_at).exists():
                self.note(f"{self.host.name}'s workers are back: their heartbeat rows are fresh again")
                return
            time.sleep(0.5)
        self.note(f"{self.host.name}'s workers wrote no heartbeat within {timeout:.0f} s of the heal")

    def interrupted_attempts(self, result: LoadResult) -> dict[str, int]:
        """The cut host's attempts that were running when the cut came, by how they ended."""
        if self.cut_at is None:
            return {}
        spans = TaskAttempt.objects.filter(
            correlation_id__in=measures.correlation_ids(result.order_ids),
            worker__startswith=f"{self.host.name}:",
            started_at__lte=self.cut_at,
        ).exclude(finished_at__lt=self.cut_at)
        return dict(spans.values("status").annotate(n=Count("pk")).values_list("status", "n"))


def run_on_hosts(
    cluster: Cluster,
    count: int,
    spec: LoadSpec,
    *,
    run: str,
    plan: PartitionPlan | None = None,
    progress: bool = True,
    out: Callable[[str], None] = print,
) -> HostsRun:
    """One load run on ``count`` worker hosts (added as needed), with a partition if planned."""
    hosts = cluster.add_hosts(count)
    for host in [cluster.control, *hosts]:  # the control host's exporter counts the sweeps' reclaims
        if host.name not in cluster.exporters:
            cluster.start_exporter(host)
    scraped_before = {host.name: scraped_attempts(cluster, host) for host in hosts}
    observers: list[Observer] = []
    began = timezone.now()

    def observe(_fleet: Fleet, bar: Progress) -> Callable[[bool], None]:
        observers.append(Observer(cluster, bar, spec.orders, plan))
        observers[0].thread.start()
        return observers[0].stop

    result = run_load(
        spec, run=run, fleet=cluster_fleet(cluster, hosts, spec), during=observe, progress=progress, out=out
    )
    observer = observers[0]
    hosts_run = HostsRun(
        hosts=count,
        result=result,
        attempts_by_host=attempts_by_host(began),
        scraped_by_host={host.name: scraped_attempts(cluster, host) - scraped_before[host.name] for host in hosts},
        live_workers=observer.live_workers,
        partition=plan,
    )
    if plan is not None:
        hosts_run.outcome = chaos_report(result, observer.happenings)
        hosts_run.cut_off_attempts = observer.interrupted_attempts(result)
        hosts_run.cut_at, hosts_run.healed_at = observer.cut_at, observer.healed_at
    return hosts_run


def open_cluster(spec: LoadSpec, log_dir: Path) -> Cluster:
    """Hosts on this machine for runs of ``spec``, on the servers this process uses."""
    return Cluster(
        database_url=database_url(), redis_url=settings.REDIS_URL, log_dir=log_dir, env=worker_environment(spec)
    )


# --- What the command prints ----------------------------------------------------------


def table_lines(runs: list[HostsRun]) -> list[str]:
    """Orders/s per host count (and against the first row), with each host's share of the attempts:
    from the spans, and (in brackets) as Prometheus scraped it from that host's exporter."""
    base = runs[0].per_second if runs else 0.0
    lines = ["", "hosts  orders  seconds  orders/s  x first  invariants  attempts by host: spans (scraped)"]
    for run in runs:
        holding = sum(invariant.holds for invariant in run.result.invariants)
        shares = ", ".join(
            f"{host} {count} ({run.scraped_by_host[host]:.0f})" if host in run.scraped_by_host else f"{host} {count}"
            for host, count in run.attempts_by_host.items()
        )
        lines.append(
            f"{run.hosts:>5}  {run.result.placed:>6}  {run.result.seconds:>7.1f}  {run.per_second:>8.1f}  "
            f"{run.per_second / base if base else 0:>7.2f}  {holding} of {len(run.result.invariants):<5}  {shares}"
        )
    return lines


def live_worker_lines(runs: list[HostsRun]) -> list[str]:
    lines = ["", "live workers half-way through each run (the rows the admin's workers page and dashboard show):"]
    for run in runs:
        by_host: dict[str, list[Worker]] = {}
        for worker in run.live_workers:
            by_host.setdefault(worker.hostname, []).append(worker)
        described = "; ".join(
            f"{host} {len(workers)} ({', '.join(sorted({worker.queues or '?' for worker in workers}))})"
            for host, workers in sorted(by_host.items())
        )
        lines.append(f"  {run.hosts} host{'s' if run.hosts > 1 else ''}: {described or 'none seen'}")
    return lines


def partition_lines(run: HostsRun) -> list[str]:
    assert run.partition is not None and run.outcome is not None
    lines = ["", f"partition on {run.hosts} hosts: {run.partition.describe()}", *run.outcome.lines()]
    interrupted = ", ".join(f"{count} {status}" for status, count in sorted(run.cut_off_attempts.items()))
    lines.append(f"attempts running on host-{run.partition.host} when it was cut: {interrupted or 'none'}")
    lines.append(
        f"  ({AttemptStatus.RECLAIMED}: the sweep took the task back after its lease; "
        f"{AttemptStatus.FENCED_OUT}: its late completion was refused and rolled back; "
        f"{AttemptStatus.RETRYING}: the host recorded the attempt's failure itself, over a link it kept "
        "or after the heal, before the sweep took the task back)"
    )
    lines.append("attempts by host: " + ", ".join(f"{host} {n}" for host, n in run.attempts_by_host.items()))
    return lines
