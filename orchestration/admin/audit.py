"""The operators' audit trail: who did what to which rows, read-only."""

from __future__ import annotations

from django.contrib import admin

from adminkit.pages import (
    ReadOnlyAdmin,
)
from orchestration.models import (
    OperatorAction,
)

# --- The operators' audit trail -----------------------------------------------------------


@admin.register(OperatorAction)
class OperatorActionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "operator", "action", "target_kind", "done_count", "refused_count", "detail")
    list_filter = ("action", "target_kind")
    search_fields = ("=operator",)
    ordering = ("-created_at", "-id")
    fields = ("created_at", "operator", "action", "target_kind", "targets", "done", "refused", "detail")

    @admin.display(description="done")
    def done_count(self, action: OperatorAction) -> int:
        return len(action.done)

    @admin.display(description="refused")
    def refused_count(self, action: OperatorAction) -> int:
        return len(action.refused)
