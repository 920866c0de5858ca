"""Load test: orders through the six agents at a chosen pace, then the figures and an HTML report."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from loadlab import loadtest, report
from loadlab.options import add_load_arguments, report_path, spec_from

SCREEN_ABOVE = 120.0


class Command(BaseCommand):
    help = "Load test: place orders at a chosen pace on real workers; print the figures and write an HTML report."

    def add_arguments(self, parser):
        add_load_arguments(parser)
        # A load run shows what the models cost: orders above 120 (about one in fifteen of the
        # workload's) are screened, unless told otherwise.
        parser.set_defaults(screen_above=SCREEN_ABOVE)

    def handle(self, *args, **options):
        spec = spec_from(options)
        run = time.strftime("load%Y%m%d%H%M%S")
        result = loadtest.run_load(spec, run=run, out=self.stdout.write)
        for line in report.summary_lines(result):
            self.stdout.write(line)
        path = report.write_html(result, report_path(options, run))
        self.stdout.write(f"\nHTML report: {path}")
        if not all(invariant.holds for invariant in result.invariants):
            raise CommandError("an invariant does not hold; see above")
