"""Broker messages the workers refused (poison), read-only: what arrived, on which queue, why."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.utils.html import format_html

from adminkit.pages import (
    ReadOnlyAdmin,
    preformatted,
)
from orchestration.models import (
    RejectedMessage,
)
from orchestration.observability.tracing import first_line
from orchestration.registry import registry

# --- Refused broker messages ----------------------------------------------------------------


class QueueFilter(admin.SimpleListFilter):
    """The agents' queues and the kernel's, from the registry: no DISTINCT over the table."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        default = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
        return [(queue, queue) for queue in sorted({*registry.queues(), default})]

    def queryset(self, request, queryset):
        return queryset.filter(queue=self.value()) if self.value() else queryset


@admin.register(RejectedMessage)
class RejectedMessageAdmin(ReadOnlyAdmin):
    """Messages no worker could turn into a task run, newest first. Nothing to retry: a
    message that was never readable has no task to replay (see docs/operators.md)."""

    list_display = ("received_at", "queue", "reason", "task_name", "short_id", "detail_line", "worker")
    list_filter = (QueueFilter, "reason")
    ordering = ("-received_at", "-id")
    fields = (
        "received_at",
        "queue",
        "reason",
        "detail",
        "task_name",
        "message_id",
        "size",
        "worker",
        "headers_text",
        "body_text",
    )
    readonly_fields = ("headers_text", "body_text")

    @admin.display(description="id")
    def short_id(self, message: RejectedMessage) -> str:
        return first_line(message.message_id, 40) or "-"

    @admin.display(description="why")
    def detail_line(self, message: RejectedMessage) -> str:
        return format_html('<span title="{}">{}</span>', message.detail[:1000], first_line(message.detail, 80))

    @admin.display(description="headers")
    def headers_text(self, message: RejectedMessage) -> str:
        return preformatted(message.headers or "-")

    @admin.display(description="what arrived (first 4 KB)")
    def body_text(self, message: RejectedMessage) -> str:
        return preformatted(message.body or "-")
