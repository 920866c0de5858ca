"""The operators' dashboard: the kernel's figures (backlog per agent, throughput and latency
over the last minutes, dead letters, breakers, live workers) next to the domain's (orders in
progress, orders waiting for an operator's review, stuck orders). Wired into the admin by
settings.OPERATIONS_DASHBOARD."""

from __future__ import annotations

from html import escape

from django.contrib import admin
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from adminkit.pages import OPERATE_PERMISSION
from orchestration.observability import figures
from orchestration.observability.stuck import stuck_task_attempts
from orders.models import Order
from orders.states import TERMINAL_STATES, OrderState
from orders.stuck import stuck_order_after_seconds, stuck_orders

DEFAULT_MINUTES = 15
SHOWN_STUCK_ORDERS = 10


def window(request: HttpRequest) -> int:
    """Minutes of throughput to show: ?minutes=N, 1 to 180."""
    try:
        return min(max(int(request.GET.get("minutes", DEFAULT_MINUTES)), 1), 180)
    except ValueError:
        return DEFAULT_MINUTES


def orders_in_progress() -> list[tuple[str, int]]:
    live = [state.value for state in OrderState if state not in TERMINAL_STATES]
    counts = dict(
        Order.objects.filter(state__in=live).values("state").annotate(n=Count("id")).values_list("state", "n")
    )
    return [(state, counts.get(state, 0)) for state in live]


def throughput_chart(throughput: figures.Throughput, width: int = 600, height: int = 90) -> str:
    """Tasks finished per minute as stacked bars (succeeded green, dead or cancelled red)."""
    minutes = throughput.per_minute
    if not minutes:
        return ""
    top = max(max(ok + failed for _minute, ok, failed in minutes), 1)
    slot = width / len(minutes)
    bars = []
    for index, (minute, ok, failed) in enumerate(minutes):
        x = index * slot + 1
        ok_height = (height - 14) * ok / top
        failed_height = (height - 14) * failed / top
        title = escape(f"{minute:%H:%M}: {ok} succeeded, {failed} dead or cancelled")
        bars.append(
            f"<g><title>{title}</title>"
            f'<rect x="{x:.1f}" y="{height - 14 - ok_height:.1f}" width="{max(slot - 2, 1):.1f}" '
            f'height="{ok_height:.1f}" fill="#2e7d32"/>'
            f'<rect x="{x:.1f}" y="{height - 14 - ok_height - failed_height:.1f}" width="{max(slot - 2, 1):.1f}" '
            f'height="{failed_height:.1f}" fill="#c62828"/></g>'
        )
    first, last = minutes[0][0], minutes[-1][0]
    return (
        f'<svg class="throughput-chart" viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" '
        f'font-size="10" aria-label="tasks finished per minute">'
        f'<line x1="0" y1="{height - 14}" x2="{width}" y2="{height - 14}" stroke="#999"/>{"".join(bars)}'
        f'<text x="0" y="{height - 2}" fill="#555">{first:%H:%M}</text>'
        f'<text x="{width}" y="{height - 2}" text-anchor="end" fill="#555">{last:%H:%M}</text>'
        f'<text x="{width}" y="10" text-anchor="end" fill="#555">peak {top}/min</text></svg>'
    )


@require_GET
def dashboard_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    minutes = window(request)
    backlog = figures.backlog(now)
    throughput = figures.throughput(minutes, now)
    breakers, breaker_error = figures.breakers()
    stuck = stuck_orders(now)
    stuck_shown = list(stuck[:SHOWN_STUCK_ORDERS])
    in_progress = orders_in_progress()
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "now": now,
        "minutes": minutes,
        "backlog": backlog,
        "totals": {
            "ready": sum(row.ready for row in backlog),
            "waiting": sum(row.waiting for row in backlog),
            "claimed": sum(row.claimed for row in backlog),
            "dead": sum(row.dead for row in backlog),
            "stuck": sum(row.stuck for row in backlog),
        },
        "throughput": throughput,
        "chart": mark_safe(throughput_chart(throughput)),  # every text in it is escaped
        "breakers": breakers,
        "open_breakers": [row for row in breakers if row["state"] not in {"closed", "forced_closed"}],
        "breaker_error": breaker_error,
        "workers": figures.live_workers(now),
        "orders_in_progress": in_progress,
        "awaiting_review": dict(in_progress)[OrderState.AWAITING_REVIEW],
        "stuck_orders": [(order, (now - order.updated_at).total_seconds()) for order in stuck_shown],
        "stuck_order_count": figures.bounded_count(stuck),
        "rejected_message_count": figures.rejected_messages(),
        "stuck_after": stuck_order_after_seconds(),
        "stuck_attempts": stuck_task_attempts(),
        "can_operate": request.user.has_perm(OPERATE_PERMISSION),
    }
    return TemplateResponse(request, "admin/operations/dashboard.html", context)
