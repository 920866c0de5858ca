"""Benchmark: the system against the naive Celery chain, and claim+complete with a full table."""

from __future__ import annotations

import time
from dataclasses import replace

from django.core.management.base import BaseCommand, CommandError

from loadlab import bench
from loadlab.options import add_load_arguments, spec_from


class Command(BaseCommand):
    help = (
        "The same order workflow through the system and as a naive chain of plain Celery tasks, in one run: "
        "orders/s, their ratio and p95 latency; then claim+complete latency with a million finished tasks."
    )

    def add_arguments(self, parser):
        add_load_arguments(parser, orders=500)
        parser.add_argument("--fill", type=int, default=1_000_000, help="finished tasks to put in the table")
        parser.add_argument("--samples", type=int, default=300, help="tasks claimed and completed per measure")
        parser.add_argument(
            "--rounds", type=int, default=2, help="bursts of each kind, alternated (system, chain, chain, system)"
        )
        parser.add_argument("--warm-up", type=int, default=100, help="orders of each kind first, not measured")
        parser.add_argument(
            "--paced-orders", type=int, default=300, help="orders of the paced phase, at half the burst's rate"
        )

    def burst(self, kind: str, spec, tag: str) -> bench.Throughput:
        """One burst through the system or the naive chain (whose ledger rows it removes after)."""
        if kind == "system":
            return bench.through_the_system(spec, tag, self.stdout.write)
        try:
            return bench.through_the_naive_chain(spec, tag, self.stdout.write)
        finally:
            bench.remove_naive_effects(tag)

    def warm_up(self, spec, run: str, orders: int) -> None:
        """A small burst of each, not measured: the first burst on fresh servers pays for their
        cold caches (PostgreSQL's buffers, catalog and plan caches, the tables' first pages),
        and without this the system, which runs first, paid for them alone."""
        if orders:
            for kind in ("system", "chain"):
                self.burst(kind, replace(spec, orders=orders), f"{run}w")

    def side_by_side(self, spec, run: str, rounds: int) -> tuple[list, list]:
        """The system and the chain, ``rounds`` bursts each, in the order system, chain, chain,
        system, ...: a machine that gets busier or quieter at a steady pace through the run
        weighs on both alike, where system-then-chain charged all of it to one of them."""
        measured: dict[str, list[bench.Throughput]] = {"system": [], "chain": []}
        for number in range(rounds):
            for kind in ("system", "chain") if number % 2 == 0 else ("chain", "system"):
                measured[kind].append(self.burst(kind, spec, f"{run}r{number + 1}"))
        return measured["system"], measured["chain"]

    def handle(self, *args, **options):
        counts = ("fill", "paced_orders", "warm_up")
        if any(options[name] < 0 for name in counts) or options["samples"] < 1 or options["rounds"] < 1:
            raise CommandError("fill, paced-orders and warm-up must be 0 or more, samples and rounds at least 1")
        base = spec_from(options)
        spec = bench.bench_spec(
            base.orders,
            **{name: getattr(base, name) for name in ("latency_ms", "workers", "worker_concurrency", "products")},
        )
        run = time.strftime("bench%Y%m%d%H%M%S")
        write = self.stdout.write
        self.warm_up(spec, run, options["warm_up"])
        systems, chains = self.side_by_side(spec, run, options["rounds"])
        system, chain = bench.combined(systems), bench.combined(chains)
        write("")
        write(
            f"workflow, {len(systems)} bursts of {spec.orders} orders each way, outside latency "
            f"{spec.latency_ms:g} ms, {spec.workers} workers x {spec.worker_concurrency} processes each:"
        )
        for measured in (system, chain):
            write(
                f"  {measured.name:<12} {measured.per_second:7.1f} orders/s   p50 {measured.latencies.p(50):6.2f} s   "
                f"p95 {measured.latencies.p(95):6.2f} s   ({measured.orders} orders in {measured.seconds:.1f} s)"
            )
        ratio = system.per_second / chain.per_second if chain.per_second else 0.0
        rounds = ", ".join(
            f"{one.per_second / other.per_second:.2f}" if other.per_second else "-"
            for one, other in zip(systems, chains, strict=True)
        )
        write(f"  ratio        system / naive = {ratio:.2f}   (round by round: {rounds})")
        write("")
        write("per order (all the servers did during each run, sweeps and heartbeats included):")
        for measured in (system, chain):
            write(f"  {measured.name:<12} {describe_traffic(measured.traffic)}")
        write("")
        write("CPU per order, milliseconds (the kernel's accounting of each kind of process):")
        for measured in (system, chain):
            write(f"  {measured.name:<12} {measured.cpu.line()}")
        # With the cores the limit, orders/s follow CPU per order; this ratio moves less when
        # the shared machine gets busier between the two phases than the orders/s one does.
        if system.cpu.total and chain.cpu.total:
            write(f"  by CPU per order, naive / system = {chain.cpu.total / system.cpu.total:.2f}")
        if system.stolen is not None and chain.stolen is not None:
            write(
                f"  taken by the host for other guests (steal): {stolen(system)} of the machine's CPU time "
                f"during the system's bursts, {stolen(chain)} during the chain's"
            )

        if options["paced_orders"]:
            rate = system.per_second / 2
            paced_spec = replace(spec, orders=options["paced_orders"], rate=rate)
            paced = bench.through_the_system(paced_spec, run, write, name="paced")
            write("")
            write(
                f"paced at half the burst's rate ({rate:.1f} orders/s), {paced.orders} orders, "
                "from placement to the workflow's last task:"
            )
            write(
                f"  p50 {1000 * paced.latencies.p(50):7.1f} ms   p95 {1000 * paced.latencies.p(95):7.1f} ms   "
                f"p99 {1000 * paced.latencies.p(99):7.1f} ms   ({describe_traffic(paced.traffic)})"
            )
            if paced.stolen is not None:
                write(f"  taken by the host for other guests (steal): {stolen(paced)} of the machine's CPU time")

        tag = bench.new_tag()
        before_rows = bench.table_rows()
        empty = bench.claim_and_complete(options["samples"], f"{tag}-before")
        filled_in = bench.fill_finished_tasks(options["fill"], tag)
        try:
            full = bench.claim_and_complete(options["samples"], f"{tag}-full")
            full_rows = bench.table_rows()
        finally:
            bench.remove_filled_tasks(tag)
        write("")
        write(
            f"claim + complete, {options['samples']} fresh tasks each (inserted {options['fill']:,} "
            f"finished tasks in {filled_in:.1f} s):"
        )
        for label, rows, latencies in (("before", before_rows, empty), ("full", full_rows, full)):
            write(
                f"  {label:<6} {rows:>9,} rows   p50 {1000 * latencies.p(50):6.2f} ms   "
                f"p95 {1000 * latencies.p(95):6.2f} ms   p99 {1000 * latencies.p(99):6.2f} ms"
            )


def stolen(measured: bench.Throughput) -> str:
    return f"{100 * (measured.stolen or 0):.1f}%"


def describe_traffic(traffic: bench.Traffic) -> str:
    if traffic.statements is None:
        sql = "SQL statements not counted (no pg_stat_statements)"
    else:
        sql = (
            f"{traffic.statements - traffic.outside_statements:5.1f} SQL statements "
            f"(+{traffic.outside_statements:.1f} by the simulated services)"
        )
    return f"{sql}, {traffic.wal_bytes / 1024:5.1f} KiB of WAL, {traffic.redis_commands:5.1f} Redis commands"
