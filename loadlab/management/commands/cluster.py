"""Scale-out on this machine: the order workload on 1, 2 and 3 worker hosts, then a host cut off."""

from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from loadlab import cluster
from loadlab.options import add_load_arguments, spec_from
from orchestration.testing.netns import NetworkError, why_unavailable

CUTS = {"all": cluster.LINKS, "postgres": ("postgres",), "redis": ("redis",)}


def host_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise CommandError(f"hosts must be host counts separated by commas, such as 1,2,3, not {text!r}")
    return counts


def partition_plans(text: str, options: dict, hosts: int) -> list[cluster.PartitionPlan]:
    names = [part.strip() for part in text.split(",") if part.strip() and part.strip() != "none"]
    unknown = sorted(set(names) - set(CUTS))
    if unknown:
        raise CommandError(f"partition must be none or some of {', '.join(CUTS)}, not {', '.join(unknown)}")
    if names and hosts < 2:
        raise CommandError("a partition needs at least 2 hosts, so that another one can finish the cut host's work")
    if not 0 < options["cut_at"] < 1:
        raise CommandError(f"cut-at must be a share of the orders between 0 and 1, not {options['cut_at']}")
    return [
        cluster.PartitionPlan(host=2, links=CUTS[name], at=options["cut_at"], seconds=options["cut_seconds"])
        for name in names
    ]


class Command(BaseCommand):
    help = (
        "Run the order workload on 1, 2 and 3 worker hosts (network namespaces of this machine on the same "
        "PostgreSQL and Redis) and print orders/s per host count; then cut host-2 off for longer than the lease "
        "and heal it. Needs root."
    )

    def add_arguments(self, parser):
        add_load_arguments(parser, orders=300)
        parser.set_defaults(workers=1)  # per host: hosts of the same size, one agent worker each
        parser.add_argument("--hosts", default="1,2,3", help="host counts to run, in order (default 1,2,3)")
        parser.add_argument(
            "--partition",
            default="all",
            help="partition runs on the most hosts, comma-separated: all (host-2 cut off from everything), "
            "postgres, redis (cut off from that one only), or none (default all)",
        )
        parser.add_argument("--cut-at", type=float, default=0.3, help="share of the orders finished at the cut")
        parser.add_argument("--cut-seconds", type=float, help="how long the cut lasts (default 3 leases)")

    def handle(self, *args, **options):
        reason = why_unavailable()
        if reason:
            raise CommandError(f"worker hosts on this machine {reason}")
        # Short leases, so a cut host's claims come back within the run; the cut outlasts them.
        spec = spec_from(options, lease_seconds=options["lease_seconds"] or 10)
        options["cut_seconds"] = options["cut_seconds"] or 3 * spec.lease_seconds
        if options["cut_seconds"] <= spec.lease_seconds:
            raise CommandError(f"cut-seconds must outlast the lease ({spec.lease_seconds} s)")
        counts = host_counts(options["hosts"])
        plans = partition_plans(options["partition"], options, max(counts))
        run = time.strftime("cluster%Y%m%d%H%M%S")
        log_dir = Path("artifacts") / run
        write = self.stdout.write
        write(
            f"{run}: {spec.orders} orders a run on {', '.join(map(str, counts))} hosts; each host runs "
            f"{spec.workers} agent worker(s) x {spec.worker_concurrency} processes; outside latency "
            f"{spec.latency_ms:g} ms; lease {spec.lease_seconds} s; logs in {log_dir}/"
        )
        runs: list[cluster.HostsRun] = []
        partitioned: list[cluster.HostsRun] = []
        try:
            with cluster.open_cluster(spec, log_dir) as hosts:
                for count in counts:
                    runs.append(cluster.run_on_hosts(hosts, count, spec, run=f"{run}-{count}h", out=write))
                for index, plan in enumerate(plans):
                    partitioned.append(
                        cluster.run_on_hosts(hosts, max(counts), spec, run=f"{run}-cut{index}", plan=plan, out=write)
                    )
                targets = hosts.write_scrape_targets(log_dir / "scrape-targets.json")
        except NetworkError as error:
            raise CommandError(str(error)) from None
        for line in cluster.table_lines(runs) + cluster.live_worker_lines(runs):
            write(line)
        write(f"\nPrometheus file_sd targets of the hosts' exporters: {targets}")
        for each in partitioned:
            for line in cluster.partition_lines(each):
                write(line)
        broken = [each for each in runs if not all(invariant.holds for invariant in each.result.invariants)]
        if broken or any(not each.outcome.passed for each in partitioned):
            raise CommandError("orders were lost, effects duplicated or an invariant broken; see above")
