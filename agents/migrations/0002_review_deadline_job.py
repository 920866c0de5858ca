"""Install the review deadline job in django-celery-beat's tables."""

from django.db import migrations

from orchestration.schedules import install_periodic_jobs

JOBS = [("agents.expire_reviews", 5, 5, "orchestration")]


def install(apps, schema_editor):
    install_periodic_jobs(JOBS, apps=apps)


def uninstall(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=JOBS[0][0]).delete()


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_reservation_expiry_job")]
    operations = [migrations.RunPython(install, uninstall)]
