"""The worker processes that claim tasks, read-only, alive or gone."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from adminkit.pages import (
    ReadOnlyAdmin,
)
from orchestration.conf import kernel_settings
from orchestration.models import (
    Worker,
)

# --- Workers -------------------------------------------------------------------------------


class LivenessFilter(admin.SimpleListFilter):
    title = "liveness"
    parameter_name = "liveness"

    def lookups(self, request, model_admin):
        return [("alive", "alive"), ("gone", "gone (silent, not stopped)"), ("stopped", "stopped")]

    def queryset(self, request, queryset):
        seen_since = timezone.now() - timedelta(seconds=kernel_settings().worker_gone_after_seconds)
        if self.value() == "alive":
            return queryset.filter(stopped_at__isnull=True, last_seen_at__gte=seen_since)
        if self.value() == "gone":
            return queryset.filter(stopped_at__isnull=True, last_seen_at__lt=seen_since)
        if self.value() == "stopped":
            return queryset.filter(stopped_at__isnull=False)
        return queryset


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ("name", "alive", "queues", "started_at", "last_seen_at", "stopped_at", "claimed")
    list_filter = (LivenessFilter,)
    ordering = ("-last_seen_at",)
    search_fields = ("=name", "=hostname")

    @admin.display(boolean=True, description="alive")
    def alive(self, worker: Worker) -> bool:
        return worker.is_alive()

    @admin.display(description="tasks it holds")
    def claimed(self, worker: Worker) -> str:
        query = urlencode({"claimed_by": worker.name})
        url = reverse("admin:orchestration_agenttask_changelist")
        return format_html('<a href="{}?{}">claimed tasks</a>', url, query)
