"""Agent tasks, dead letters, attempts, events and budgets in the admin. All read-only;
operators act through the named actions (retry dead tasks, cancel pending ones), each
limited to the rows where it is legal, reported back, and written to OperatorAction."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.module_loading import import_string

from adminkit.pages import (
    InputFilter,
    ReadOnlyAdmin,
    ReadOnlyInline,
    outcome_message,
    preformatted,
    pretty_json,
)
from orchestration.admin import operators
from orchestration.models import (
    AgentTask,
    DeadLetter,
    Event,
    TaskAttempt,
    TaskStatus,
    WorkflowBudget,
)
from orchestration.observability.stuck import stuck_conditions
from orchestration.observability.tracing import first_line
from orchestration.registry import registry

# --- Filters -------------------------------------------------------------------------


class AgentFilter(admin.SimpleListFilter):
    """The registered agents, from the registry: no DISTINCT over a million rows."""

    title = "agent"
    parameter_name = "agent"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(registry.agents)]

    def queryset(self, request, queryset):
        return queryset.filter(agent=self.value()) if self.value() else queryset


class ExactFilter(InputFilter):
    """An exact match on the indexed column named by ``parameter_name``."""

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        return queryset.filter(**{self.parameter_name: value}) if value else queryset


class WorkflowFilter(ExactFilter):
    title = "workflow id"
    parameter_name = "workflow_id"
    placeholder = "exact workflow id"


class CorrelationFilter(ExactFilter):
    """The caller's id: it may span several workflows (every order placed under it)."""

    title = "correlation id"
    parameter_name = "correlation_id"
    placeholder = "exact correlation id"


class ClaimedByFilter(InputFilter):
    """The tasks a worker holds now (a worker's page links here); the claimed-lease index serves it."""

    title = "claimed by worker"
    parameter_name = "claimed_by"
    placeholder = "exact worker name"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        return queryset.filter(status=TaskStatus.CLAIMED, claimed_by=value) if value else queryset


class StuckFilter(admin.SimpleListFilter):
    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request, model_admin):
        return [("any", "stuck (either reason)"), ("retried", "retried too often"), ("lease_overdue", "lease overdue")]

    def queryset(self, request, queryset):
        conditions = stuck_conditions()
        if self.value() == "any":
            return queryset.filter(conditions["retried"] | conditions["lease_overdue"])
        if self.value() in conditions:
            return queryset.filter(conditions[self.value()])
        return queryset


def workflow_link(workflow_id: str, label: str | None = None) -> str:
    url = reverse("admin:orchestration_agenttask_changelist") + "?" + urlencode({"workflow_id": workflow_id})
    return format_html('<a href="{}" title="every task of this workflow">{}</a>', url, label or workflow_id)


def correlation_link(correlation_id: str, label: str | None = None) -> str:
    url = reverse("admin:orchestration_agenttask_changelist") + "?" + urlencode({"correlation_id": correlation_id})
    return format_html('<a href="{}" title="every task under this correlation id">{}</a>', url, label or correlation_id)


def task_search_resolvers():
    """The project's ways to turn a search term into workflow ids (TASK_SEARCH_RESOLVERS)."""
    return [import_string(path) for path in getattr(settings, "TASK_SEARCH_RESOLVERS", [])]


# --- Agent tasks ---------------------------------------------------------------------


class AttemptInline(ReadOnlyInline):
    model = TaskAttempt
    fields = ("number", "status", "worker", "queue", "started_at", "finished_at", "took", "error_line")
    readonly_fields = fields
    ordering = ("started_at", "id")
    show_change_link = False
    verbose_name = "attempt (span)"
    verbose_name_plural = "attempts (spans)"

    @admin.display(description="took")
    def took(self, span: TaskAttempt) -> str:
        if span.finished_at is None:
            return "still running"
        return f"{(span.finished_at - span.started_at).total_seconds():.3f}s"

    @admin.display(description="error")
    def error_line(self, span: TaskAttempt) -> str:
        return first_line(span.error, 200)


@admin.register(AgentTask)
class AgentTaskAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "agent",
        "operation",
        "status",
        "attempts_of",
        "workflow",
        "updated_at",
        "error_line",
    )
    list_display_links = ("id", "operation")
    list_filter = (AgentFilter, "status", WorkflowFilter, CorrelationFilter, StuckFilter, ClaimedByFilter)
    ordering = ("-id",)
    actions = ("retry_dead", "cancel_pending")
    inlines = (AttemptInline,)
    fieldsets = (
        (
            "Task",
            {
                "fields": (
                    "agent",
                    "operation",
                    "event_type",
                    "status",
                    "priority",
                    "workflow",
                    "correlation",
                    "parent_link",
                )
            },
        ),
        ("Attempts", {"fields": ("attempts", "max_attempts", "reclaims", "last_error_text")}),
        ("Claim", {"fields": ("claimed_by", "fence", "lease_expires_at", "heartbeat_at")}),
        ("Time", {"fields": ("created_at", "run_after", "expires_at", "dispatched_at", "updated_at", "finished_at")}),
        ("Data", {"fields": ("idempotency_key", "payload_version", "payload_json", "checkpoint_json", "result_json")}),
    )
    readonly_fields = (
        "workflow",
        "correlation",
        "parent_link",
        "last_error_text",
        "payload_json",
        "checkpoint_json",
        "result_json",
    )
    base_search_help = "Exact match: a task id, an idempotency key, a workflow id or a correlation id"

    @property
    def search_help_text(self) -> str:
        """The resolvers (TASK_SEARCH_RESOLVERS) say what else a term may be."""
        extra = [getattr(resolve, "search_help", "") for resolve in task_search_resolvers()]
        return "; ".join([self.base_search_help, *filter(None, extra)])

    def get_search_fields(self, request):
        return ("=idempotency_key",)  # shows the search box; get_search_results does the matching

    def get_search_results(self, request, queryset, search_term):
        """Exact matches on indexed columns, never a LIKE scan of the whole table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(idempotency_key=term) | Q(workflow_id=term) | Q(correlation_id=term)
        if term.isdigit():
            match |= Q(pk=int(term))
        workflows = {workflow_id for resolve in task_search_resolvers() for workflow_id in resolve(term)}
        if workflows:
            match |= Q(workflow_id__in=workflows)
        return queryset.filter(match), False

    @admin.display(description="attempts")
    def attempts_of(self, task: AgentTask) -> str:
        return f"{task.attempts}/{task.max_attempts}"

    @admin.display(description="workflow", ordering="workflow_id")
    def workflow(self, task: AgentTask) -> str:
        return workflow_link(task.workflow_id, task.workflow_id[:12])

    @admin.display(description="correlation id")
    def correlation(self, task: AgentTask) -> str:
        return correlation_link(task.correlation_id)

    @admin.display(description="parent task")
    def parent_link(self, task: AgentTask) -> str:
        if not task.parent_id:
            return "-"
        url = reverse("admin:orchestration_agenttask_change", args=[task.parent_id])
        return format_html('<a href="{}">task {}</a>', url, task.parent_id)

    @admin.display(description="last error")
    def error_line(self, task: AgentTask) -> str:
        if task.status == TaskStatus.SUCCEEDED or not task.last_error:
            return "-"  # an error a later attempt got past is in the attempts, not here
        return format_html('<span title="{}">{}</span>', task.last_error[:1000], first_line(task.last_error, 60))

    @admin.display(description="last error")
    def last_error_text(self, task: AgentTask) -> str:
        return preformatted(task.last_error or "-")

    @admin.display(description="payload")
    def payload_json(self, task: AgentTask) -> str:
        return pretty_json(task.payload)

    @admin.display(description="checkpoint")
    def checkpoint_json(self, task: AgentTask) -> str:
        return pretty_json(task.checkpoint)

    @admin.display(description="result")
    def result_json(self, task: AgentTask) -> str:
        return pretty_json(task.result)

    @admin.action(description="Retry selected dead tasks", permissions=["operate"])
    def retry_dead(self, request, queryset):
        ids = queryset.values_list("id", flat=True)[: operators.MAX_ROWS_PER_ACTION + 1]
        outcome_message(request, self, operators.retry_dead_tasks(list(ids), operator=request.user))

    @admin.action(description="Cancel selected pending tasks", permissions=["operate"])
    def cancel_pending(self, request, queryset):
        ids = queryset.values_list("id", flat=True)[: operators.MAX_ROWS_PER_ACTION + 1]
        outcome_message(request, self, operators.cancel_pending_tasks(list(ids), operator=request.user))


@admin.register(DeadLetter)
class DeadLetterAdmin(AgentTaskAdmin):
    """Dead tasks, newest death first (a partial index keeps this fast)."""

    list_display = ("id", "agent", "operation", "attempts_of", "workflow", "finished_at", "error_line")
    list_filter = (AgentFilter, WorkflowFilter, CorrelationFilter)
    ordering = ("-finished_at", "-id")
    actions = ("retry_dead",)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=TaskStatus.DEAD)


# --- Attempts, events, budgets -----------------------------------------------------------


@admin.register(TaskAttempt)
class TaskAttemptAdmin(ReadOnlyAdmin):
    list_display = ("id", "task_link", "number", "agent", "operation", "status", "worker", "started_at", "error_line")
    list_filter = (AgentFilter, "status", CorrelationFilter)
    ordering = ("-id",)
    readonly_fields = ("task_link", "workflow")
    fields = (
        "task_link",
        "number",
        "fence",
        "agent",
        "operation",
        "workflow",
        "worker",
        "queue",
        "status",
        "started_at",
        "finished_at",
        "error",
    )

    @admin.display(description="task", ordering="task_id")
    def task_link(self, span: TaskAttempt) -> str:
        url = reverse("admin:orchestration_agenttask_change", args=[span.task_id])
        return format_html('<a href="{}">task {}</a>', url, span.task_id)

    @admin.display(description="workflow")
    def workflow(self, span: TaskAttempt) -> str:
        workflow_id = AgentTask.objects.filter(pk=span.task_id).values_list("workflow_id", flat=True).first()
        return workflow_link(workflow_id) if workflow_id else correlation_link(span.correlation_id)

    @admin.display(description="error")
    def error_line(self, span: TaskAttempt) -> str:
        return first_line(span.error, 80)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "version", "workflow", "source", "created_at")
    list_filter = (WorkflowFilter, CorrelationFilter)
    ordering = ("-id",)
    fields = ("type", "version", "workflow", "correlation", "source", "created_at", "payload_json")
    readonly_fields = ("workflow", "correlation", "source", "payload_json")

    @admin.display(description="workflow")
    def workflow(self, event: Event) -> str:
        return workflow_link(event.workflow_id, event.workflow_id[:12])

    @admin.display(description="correlation id")
    def correlation(self, event: Event) -> str:
        return correlation_link(event.correlation_id)

    @admin.display(description="emitted by")
    def source(self, event: Event) -> str:
        if not event.source_task_id:
            return "-"
        url = reverse("admin:orchestration_agenttask_change", args=[event.source_task_id])
        return format_html('<a href="{}">task {}</a>', url, event.source_task_id)

    @admin.display(description="payload")
    def payload_json(self, event: Event) -> str:
        return pretty_json(event.payload)


@admin.register(WorkflowBudget)
class WorkflowBudgetAdmin(ReadOnlyAdmin):
    list_display = (
        "workflow",
        "correlation_id",
        "steps",
        "max_steps",
        "cost",
        "max_cost",
        "tokens",
        "money",
        "exceeded_at",
        "exceeded_reason",
    )
    list_filter = (WorkflowFilter, CorrelationFilter)
    ordering = ("-id",)

    @admin.display(description="workflow", ordering="workflow_id")
    def workflow(self, budget: WorkflowBudget) -> str:
        return workflow_link(budget.workflow_id, budget.workflow_id[:12])
