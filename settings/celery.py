"""The Celery app, found by `celery -A settings`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.config")

# Every task's messages pass the kernel's shape check before Celery builds a request.
app = Celery("settings", task_cls="orchestration.broker.strategy:GuardedTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
