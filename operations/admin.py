"""The order page operators work from: its state, items and audit history, its trace drawn
as a timeline, links to its tasks, payment, shipment and messages, and the cancel (with
compensation). It lives here, where the kernel and the domain meet."""

from __future__ import annotations

import re

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch, Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from adminkit.pages import ReadOnlyAdmin, outcome_message
from agents.entrypoints import cancel_order, decide_review
from operations.trace import state_changes
from orchestration.admin import operators
from orchestration.admin.timeline import render_svg
from orchestration.limits.budgets import default_spend_caps
from orchestration.models import AgentTask, TaskStatus, UsageRecord, WorkflowBudget
from orchestration.observability.tracing import build_trace, summarize
from orchestration.observability.usage import totals
from orders.admin import OrderItemInline, TransitionInline
from orders.errors import IllegalTransition
from orders.models import (
    CustomerNotification,
    Order,
    OrderAwaitingReview,
    OrderItem,
    Payment,
    Reservation,
    RiskAssessment,
    Shipment,
)
from orders.screening import review_deadline
from orders.states import TERMINAL_STATES, OrderState
from orders.stuck import is_stuck, stuck_condition

ORDERS = "orders.order"
REVIEWS = "orders.orderawaitingreview"
ORDER_REFERENCE = re.compile(r"^(?:order\s*|#)?(\d+)$", re.IGNORECASE)


def order_workflows(term: str) -> list[str]:
    """A task search term naming an order (its id, "#42", "order 42", or its idempotency
    key) gives that order's workflow id: every task of the order carries it."""
    match = ORDER_REFERENCE.match(term.strip())
    condition = Q(idempotency_key=term.strip())
    if match:
        condition |= Q(pk=int(match[1]))
    return list(Order.objects.filter(condition).values_list("workflow_id", flat=True)[:10])


order_workflows.search_help = "an order id (42, #42) or an order's idempotency key"


def act_on_orders(action: str, order_ids: list[int], act, *, operator, target_kind: str = ORDERS) -> operators.Outcome:
    """``act(order_id, actor)`` on each order; an order whose state does not allow it is refused,
    naming the state. Writes one OperatorAction row."""
    outcome = operators.Outcome(action)
    asked = sorted(set(order_ids))
    name = operators.operator_name(operator)
    for order_id in asked[: operators.MAX_ROWS_PER_ACTION]:
        try:
            act(order_id, name)
        except IllegalTransition as refusal:
            outcome.refused[f"order {order_id}"] = str(refusal)
        except Order.DoesNotExist:
            outcome.refused[f"order {order_id}"] = "no such order"
        else:
            outcome.done.append(order_id)
    for order_id in asked[operators.MAX_ROWS_PER_ACTION :]:
        outcome.refused[f"order {order_id}"] = f"over the limit of {operators.MAX_ROWS_PER_ACTION} rows per action"
    operators.record(operator, outcome, target_kind=target_kind, targets=asked)
    return outcome


def cancel_orders(order_ids: list[int], *, operator, reason: str = "") -> operators.Outcome:
    """Cancel each order with the usual compensation; refuse, naming its state, any that
    has shipped or already ended. Writes one OperatorAction row."""

    def cancel(order_id: int, actor: str) -> None:
        # The username is the audit row's actor; the reason, which clients see, does not name it.
        cancel_order(order_id, actor=actor, reason=reason or "cancelled by an operator")

    return act_on_orders("cancel orders", order_ids, cancel, operator=operator)


def decide_reviews(order_ids: list[int], *, approve: bool, operator, note: str = "") -> operators.Outcome:
    """Approve (on to payment) or reject (cancel, compensated) each order waiting for review;
    refuse, naming its state, any that is not waiting. Writes one OperatorAction row."""

    def decide(order_id: int, actor: str) -> None:
        decide_review(order_id, approve=approve, actor=actor, note=note)

    action = "approve reviewed orders" if approve else "reject reviewed orders"
    return act_on_orders(action, order_ids, decide, operator=operator, target_kind=REVIEWS)


class StuckOrderFilter(admin.SimpleListFilter):
    title = "progress"
    parameter_name = "stuck"

    def lookups(self, request, model_admin):
        return [("yes", "stuck (no progress for too long)"), ("no", "moving or finished")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(stuck_condition())
        if self.value() == "no":
            return queryset.exclude(stuck_condition())
        return queryset


def changelist(name: str, **query) -> str:
    return reverse(f"admin:{name}_changelist") + ("?" + urlencode(query) if query else "")


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "customer", "state", "stuck", "lines", "total", "created_at", "updated_at", "tasks")
    list_filter = ("state", StuckOrderFilter)
    ordering = ("-id",)
    actions = ("cancel_selected",)
    inlines = (OrderItemInline, TransitionInline)
    change_form_template = "admin/orders/order/change_form.html"
    fieldsets = (
        (None, {"fields": ("customer", "state", "stuck", "reason", "total", "currency")}),
        ("Time", {"fields": ("created_at", "updated_at", "finished_at")}),
        (
            "Workflow",
            {"fields": ("related", "budget", "model_costs", "idempotency_key", "workflow_id", "correlation")},
        ),
        ("Risk review", {"fields": ("risk_review",)}),
    )
    readonly_fields = ("stuck", "related", "budget", "model_costs", "risk_review", "correlation")
    search_help_text = (
        "Exact match: an order id, an idempotency key, a workflow id, a correlation id or a customer's address"
    )

    def get_queryset(self, request):
        items = OrderItem.objects.select_related("product").order_by("id")
        return super().get_queryset(request).prefetch_related(Prefetch("items", queryset=items))

    def get_search_fields(self, request):
        return ("=idempotency_key",)  # shows the box; get_search_results matches on indexed columns

    def get_search_results(self, request, queryset, search_term):
        """Exact matches, each on an index (the customer's address has its own)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(idempotency_key=term) | Q(workflow_id=term) | Q(correlation_id=term) | Q(customer=term)
        reference = ORDER_REFERENCE.match(term)
        if reference:
            match |= Q(pk=int(reference[1]))
        return queryset.filter(match), False

    # --- Columns and fields --------------------------------------------------------

    @admin.display(description="stuck")
    def stuck(self, order: Order) -> str:
        if not is_stuck(order):
            return "-"
        quiet = (timezone.now() - order.updated_at).total_seconds()
        return format_html('<strong style="color: #c62828">stuck</strong>: no progress for {} s', f"{quiet:.0f}")

    @admin.display(description="lines")
    def lines(self, order: Order) -> str:
        return ", ".join(f"{item.quantity} x {item.product.sku}" for item in order.items.all())

    @admin.display(description="tasks")
    def tasks(self, order: Order) -> str:
        url = changelist("orchestration_agenttask", workflow_id=order.workflow_id)
        return format_html('<a href="{}">tasks</a>', url)

    @admin.display(description="budget")
    def budget(self, order: Order) -> str:
        """The workflow's spending against its caps (the kernel's WorkflowBudget row)."""
        spent = WorkflowBudget.objects.filter(workflow_id=order.workflow_id).first()
        if spent is None:
            return "no step counted yet"
        max_tokens, max_money = default_spend_caps()
        text = (
            f"{spent.steps} of {spent.max_steps} steps, {spent.cost:g} of {spent.max_cost:g} cost units, "
            f"{spent.tokens} of {spent.max_tokens or max_tokens} model tokens, "
            f"{spent.money:g} of {spent.max_money or max_money:g} spent on models"
        )
        if spent.exceeded_at:
            text += f"; stopped: {spent.exceeded_reason}"
        return text

    @admin.display(description="model costs")
    def model_costs(self, order: Order) -> str:
        """What this order's model calls cost, by model (what the workflow's budget counted)."""
        records = UsageRecord.objects.filter(workflow_id=order.workflow_id)
        by_model = totals(records, "service")
        if not by_model:
            return "no model was asked"
        url = changelist("orchestration_usagerecord", workflow_id=order.workflow_id)
        lines = format_html_join(
            "; ",
            "{}: {} calls ({} not billed), {} tokens, {}",
            ((row.name, row.calls, row.unbilled, row.tokens, row.cost) for row in by_model),
        )
        return format_html('{} (<a href="{}">every call</a>)', lines, url)

    @admin.display(description="verdict")
    def risk_review(self, order: Order) -> str:
        """Who decided what on the order's risk, why, and every ask before it."""
        assessment = RiskAssessment.objects.filter(order=order).first()
        if assessment is None:
            return "not screened" if order.state != OrderState.AWAITING_REVIEW else "no verdict: the risk review failed"
        who = f"{assessment.decided_by} model {assessment.model}" if assessment.model else "the rule"
        asks = format_html_join(
            "",
            "<li>{} ask {}: {} {}</li>",
            ((a["model"], a["ask"], a["outcome"], a["detail"]) for a in assessment.chain),
        )
        reasons = format_html_join("", "<li>{}</li>", ((reason,) for reason in assessment.reasons))
        return format_html(
            "<strong>{}</strong> by {}<ul>{}</ul>asks:<ul>{}</ul>", assessment.verdict, who, reasons, asks
        )

    @admin.display(description="correlation id")
    def correlation(self, order: Order) -> str:
        """The caller's id; other orders placed under it are one click away."""
        shared = Order.objects.filter(correlation_id=order.correlation_id).exclude(pk=order.pk).exists()
        if not shared:
            return order.correlation_id
        url = changelist("orders_order", q=order.correlation_id)
        return format_html('{} (<a href="{}">shared with other orders</a>)', order.correlation_id, url)

    @admin.display(description="related")
    def related(self, order: Order) -> str:
        """Links to everything the workflow made for this order, with how many there are."""
        workflow = order.workflow_id
        tasks = AgentTask.objects.filter(workflow_id=workflow).values("status").annotate(n=Count("id"))
        counts = dict(tasks.values_list("status", "n"))
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        links = [(changelist("orchestration_agenttask", workflow_id=workflow), f"tasks ({by_status or 'none'})")]
        if counts.get(TaskStatus.DEAD):
            links.append((changelist("orchestration_deadletter", workflow_id=workflow), "dead letters"))
        links.append((changelist("orchestration_event", workflow_id=workflow), "events"))
        held = Reservation.objects.filter(order=order).count()
        links.append((changelist("orders_reservation", order=order.pk), f"reservations ({held})"))
        payment = Payment.objects.filter(order=order).first()
        if payment:
            links.append((reverse("admin:orders_payment_change", args=[payment.pk]), f"payment ({payment.status})"))
        else:
            links.append((changelist("orders_payment", order=order.pk), "payment (none)"))
        shipment = Shipment.objects.filter(order=order).first()
        if shipment:
            url = reverse("admin:orders_shipment_change", args=[shipment.pk])
            links.append((url, f"shipment ({shipment.carrier_reference}, {shipment.status})"))
        else:
            links.append((changelist("orders_shipment", order=order.pk), "shipment (none)"))
        sent = CustomerNotification.objects.filter(order=order).count()
        links.append((changelist("orders_customernotification", order=order.pk), f"customer messages ({sent})"))
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    def timeline(self, order: Order) -> str:
        """The order's trace as a picture: a bar per attempt, its state changes on top."""
        trace = build_trace(order.workflow_id, state_changes([order]))
        if trace.is_empty:
            return "Nothing has happened to this order yet."
        summary = format_html("<p>{}. Hover a bar for its worker, duration and error.</p>", summarize(trace))
        return summary + mark_safe(render_svg(trace))  # render_svg escapes every text it draws

    # --- Cancel --------------------------------------------------------------------

    @admin.action(description="Cancel selected orders (with compensation)", permissions=["operate"])
    def cancel_selected(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True)[: operators.MAX_ROWS_PER_ACTION + 1])
        outcome_message(request, self, cancel_orders(ids, operator=request.user), noun="order")

    def get_urls(self):
        cancel = self.admin_site.admin_view(self.cancel_view)
        return [path("<int:order_id>/cancel/", cancel, name="orders_order_cancel"), *super().get_urls()]

    @method_decorator(require_POST)
    def cancel_view(self, request, order_id: int):
        """The order page's Cancel button: one order, with the reason the operator typed."""
        if not self.has_operate_permission(request):
            raise PermissionDenied("cancelling an order needs the 'orchestration.operate' permission")
        order = get_object_or_404(Order, pk=order_id)
        reason = request.POST.get("reason", "").strip()[:400]
        outcome = cancel_orders([order.pk], operator=request.user, reason=reason)
        outcome_message(request, self, outcome, noun="order")
        if outcome.done:
            messages.info(
                request, "Compensation follows on the workers: stock released, charge refunded, customer told."
            )
        return HttpResponseRedirect(reverse("admin:orders_order_change", args=[order.pk]))

    def render_change_form(self, request, context, *args, obj=None, **kwargs):
        context["timeline"] = self.timeline(obj) if obj is not None else ""
        context["can_cancel"] = (
            obj is not None
            and obj.state not in TERMINAL_STATES
            and not Shipment.objects.filter(order=obj).exists()
            and self.has_operate_permission(request)
        )
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)


@admin.register(OrderAwaitingReview)
class OrderAwaitingReviewAdmin(ReadOnlyAdmin):
    """The orders an operator must approve or reject, oldest first, with the model's reasons."""

    list_display = ("order", "customer", "total", "verdict", "reasons", "waiting_since", "deadline")
    list_display_links = None
    list_select_related = ("risk",)
    ordering = ("updated_at", "id")
    actions = ("approve_selected", "reject_selected")
    search_help_text = "Exact match: an order id or a customer's address"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(state=OrderState.AWAITING_REVIEW)

    def get_search_fields(self, request):
        return ("=customer",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        reference = ORDER_REFERENCE.match(term)
        if reference:
            return queryset.filter(pk=int(reference[1])), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="order", ordering="id")
    def order(self, order: Order) -> str:
        return format_html('<a href="{}">order {}</a>', reverse("admin:orders_order_change", args=[order.pk]), order.pk)

    @admin.display(description="risk verdict")
    def verdict(self, order: Order) -> str:
        assessment = getattr(order, "risk", None)
        if assessment is None:
            return "none: the risk review failed"
        return f"{assessment.verdict} by {assessment.model or 'the rule'}"

    @admin.display(description="reasons")
    def reasons(self, order: Order) -> str:
        assessment = getattr(order, "risk", None)
        return format_html_join(
            "", "<div>{}</div>", ((reason,) for reason in (assessment.reasons if assessment else []))
        )

    @admin.display(description="waiting since", ordering="updated_at")
    def waiting_since(self, order: Order):
        return order.updated_at

    @admin.display(description="cancelled unless decided by")
    def deadline(self, order: Order):
        return review_deadline(order)

    @admin.action(description="Approve selected orders (on to payment)", permissions=["operate"])
    def approve_selected(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True)[: operators.MAX_ROWS_PER_ACTION + 1])
        outcome_message(request, self, decide_reviews(ids, approve=True, operator=request.user), noun="order")

    @admin.action(description="Reject selected orders (cancel, with compensation)", permissions=["operate"])
    def reject_selected(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True)[: operators.MAX_ROWS_PER_ACTION + 1])
        outcome_message(request, self, decide_reviews(ids, approve=False, operator=request.user), noun="order")
