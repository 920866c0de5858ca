"""Install the kernel's periodic jobs in django-celery-beat's tables (DatabaseScheduler).

They stay editable in the admin. Each carries `expire_seconds` near its interval,
so a backlog of missed runs does not pile up behind a stopped worker.
"""

from django.db import migrations
from django.utils import timezone

JOBS = [
    # (task name, every N seconds, expires after N seconds)
    ("orchestration.reclaim_expired_leases", 5, 5),
    ("orchestration.republish_lost_messages", 2, 2),
    ("orchestration.expire_overdue_tasks", 10, 10),
    ("orchestration.prune_finished_tasks", 3600, 600),
]


def install(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    for task, every, expires in JOBS:
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=task,
            defaults={
                "task": task,
                "interval": schedule,
                "queue": "orchestration",
                "expire_seconds": expires,
                "enabled": True,
                "description": "installed by orchestration migration 0002",
            },
        )
    # Tell a running beat that the schedule changed.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def uninstall(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[task for task, _, _ in JOBS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(install, uninstall)]
