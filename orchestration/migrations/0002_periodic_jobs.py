"""Install the kernel's periodic jobs in django-celery-beat's tables (DatabaseScheduler)."""

from django.db import migrations

from orchestration.schedules import PERIODIC_JOBS, install_periodic_jobs


def install(apps, schema_editor):
    install_periodic_jobs(PERIODIC_JOBS, apps=apps)


def uninstall(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[job[0] for job in PERIODIC_JOBS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(install, uninstall)]
