"""Chaos: a load test while workers are SIGKILLed and Redis and PostgreSQL restart; nothing lost or doubled."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from loadlab import chaos, report
from loadlab.options import add_load_arguments, report_path, spec_from


class Command(BaseCommand):
    help = (
        "Run a load test while SIGKILLing worker processes at an interval and restarting the local Redis and "
        "PostgreSQL once each; report orders accepted, completed, failed, lost and duplicated effects."
    )

    def add_arguments(self, parser):
        add_load_arguments(parser, orders=5000)
        # Some charges and bookings die after taking effect, so the compensations are under fire too.
        parser.set_defaults(pay_timeouts=0.01, ship_timeouts=0.01)
        parser.add_argument("--kill-every", type=float, default=10.0, help="seconds between two SIGKILLs")
        parser.add_argument("--restart-redis-at", type=float, default=0.25, help="share of orders finished")
        parser.add_argument("--restart-postgres-at", type=float, default=0.5, help="share of orders finished")

    def handle(self, *args, **options):
        # A killed worker's claims come back when their lease runs out: keep it short by default.
        spec = spec_from(options, lease_seconds=options["lease_seconds"] or 15)
        if options["kill_every"] <= 0:
            raise CommandError(f"kill-every must be above 0 seconds, not {options['kill_every']}")
        for name in ("restart_redis_at", "restart_postgres_at"):
            if not 0 <= options[name] <= 1:
                raise CommandError(f"{name.replace('_', '-')} must be between 0 and 1, not {options[name]}")
        plan = chaos.ChaosPlan(
            kill_every=options["kill_every"],
            restart_redis_at=options["restart_redis_at"],
            restart_postgres_at=options["restart_postgres_at"],
        )
        run = time.strftime("chaos%Y%m%d%H%M%S")
        result, outcome = chaos.run_chaos(spec, plan, run=run, out=self.stdout.write)
        for line in report.summary_lines(result) + outcome.lines():
            self.stdout.write(line)
        path = report.write_html(result, report_path(options, run), title="Chaos run", extra_lines=outcome.lines())
        self.stdout.write(f"\nHTML report: {path}")
        if not outcome.passed:
            raise CommandError("orders were lost, effects duplicated or an invariant broken; see above")
