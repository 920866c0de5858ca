"""What metered calls (language models) cost: every call as a row, with the totals by model and
by agent of whatever the filters select (one workflow, one agent, one model), above the list."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from adminkit.pages import ReadOnlyAdmin
from orchestration.admin.tasks import AgentFilter, ExactFilter, WorkflowFilter, workflow_link
from orchestration.models import UsageRecord
from orchestration.observability.usage import totals


class ServiceFilter(ExactFilter):
    title = "model"
    parameter_name = "service"
    placeholder = "exact model name"


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "agent",
        "operation",
        "service",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "billed",
        "attempt",
        "workflow",
    )
    list_filter = (AgentFilter, ServiceFilter, "billed", WorkflowFilter)
    ordering = ("-id",)

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            records = changelist.queryset
            response.context_data["by_model"] = totals(records, "service")
            response.context_data["by_agent"] = totals(records, "agent")
        return response

    @admin.display(description="attempt")
    def attempt(self, record: UsageRecord) -> str:
        url = reverse("admin:orchestration_agenttask_change", args=[record.task_id])
        return format_html('<a href="{}">task {}</a> (fence {})', url, record.task_id, record.fence)

    @admin.display(description="workflow", ordering="workflow_id")
    def workflow(self, record: UsageRecord) -> str:
        return workflow_link(record.workflow_id, record.workflow_id[:12])
