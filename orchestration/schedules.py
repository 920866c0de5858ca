"""The periodic jobs, as data, and how they are installed in django-celery-beat's tables.

A migration installs them (and `manage.py install_schedules` re-installs them);
after that they are editable in the admin like any other beat entry.
"""

from __future__ import annotations

from django.apps import apps as global_apps
from django.conf import settings
from django.utils import timezone

# (task name, every N seconds, expires after N seconds, queue)
PERIODIC_JOBS: list[tuple[str, int, int, str]] = [
    ("orchestration.reclaim_expired_leases", 5, 5, "orchestration"),
    ("orchestration.republish_lost_messages", 2, 2, "orchestration"),
    ("orchestration.expire_overdue_tasks", 10, 10, "orchestration"),
    ("orchestration.prune_finished_tasks", 3600, 600, "orchestration"),
]


def all_periodic_jobs() -> list[tuple[str, int, int, str]]:
    """The kernel's jobs and those the project adds in settings.EXTRA_PERIODIC_JOBS."""
    return [*PERIODIC_JOBS, *getattr(settings, "EXTRA_PERIODIC_JOBS", [])]


def install_periodic_jobs(jobs=None, apps=global_apps) -> int:
    """Create or update the beat entries; ``apps`` may be a migration's historical registry."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    jobs = PERIODIC_JOBS if jobs is None else jobs
    for task, every, expires, queue in jobs:
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=task,
            defaults={
                "task": task,
                "interval": schedule,
                "queue": queue,
                "expire_seconds": expires,
                "enabled": True,
                "description": "installed by the project; safe to edit",
            },
        )
    # Tells a running beat that the schedule changed.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
    return len(jobs)
