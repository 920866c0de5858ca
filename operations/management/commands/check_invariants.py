from django.core.management.base import BaseCommand

from agents.invariants import check_all


class Command(BaseCommand):
    help = "Check DESIGN.md's seven invariants; exit non-zero on any violation. Run it when the system is quiet."

    def add_arguments(self, parser):
        parser.add_argument("--examples", type=int, default=3, help="example violations to print per invariant")

    def handle(self, *args, examples: int, **options):
        results = check_all()
        for result in results:
            mark = "ok  " if result.holds else "FAIL"
            self.stdout.write(f"{mark} {result.number}. {result.name}: {len(result.violations)} violations")
            for violation in result.violations[:examples]:
                self.stdout.write(f"       e.g. {violation}")
        broken = sum(not result.holds for result in results)
        if broken:
            self.stderr.write(f"{broken} of {len(results)} invariants violated")
            raise SystemExit(1)
        self.stdout.write(f"all {len(results)} invariants hold")
