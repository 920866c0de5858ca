from django.core.management.base import BaseCommand

from orchestration.schedules import all_periodic_jobs, install_periodic_jobs


class Command(BaseCommand):
    help = "Install (or re-install) every periodic job in django-celery-beat's tables."

    def handle(self, *args, **options):
        count = install_periodic_jobs(all_periodic_jobs())
        self.stdout.write(f"installed {count} periodic jobs")
