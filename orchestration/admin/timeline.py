"""A trace drawn as a picture: inline SVG, rendered on the server, no script needed.

One horizontal bar per attempt (span), in the order of the task tree, coloured by how the
attempt ended; failed attempts are outlined and marked with a cross. A task that never
ran shows as a hollow dot where it was created. The workflow's marks (an order's state
changes, events nobody heard) are ticks on the top lane. Hovering any of them shows its
details (the SVG <title>): worker, duration and the first line of the error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from html import escape

from django.utils import timezone

from orchestration.models import AttemptStatus, TaskAttempt
from orchestration.observability.tracing import Mark, TaskNode, Trace, describe_task, first_line

COLOURS = {
    AttemptStatus.RUNNING: "#1565c0",
    AttemptStatus.SUCCEEDED: "#2e7d32",
    AttemptStatus.RETRYING: "#ef6c00",
    AttemptStatus.DEFERRED: "#9e9e9e",
    AttemptStatus.FAILED: "#c62828",
    AttemptStatus.RECLAIMED: "#6a1b9a",
    AttemptStatus.FENCED_OUT: "#ad1457",
}
# The attempt did not do its work: outlined in red and crossed.
FAILURES = frozenset({AttemptStatus.RETRYING, AttemptStatus.FAILED, AttemptStatus.RECLAIMED, AttemptStatus.FENCED_OUT})

WIDTH = 980
LABEL_WIDTH = 300
RIGHT_MARGIN = 30
ROW = 20
BAR = 12
TOP = 34  # the marks lane
AXIS = 26
LEGEND = 20


@dataclass
class Row:
    label: str
    depth: int
    task_id: int
    span: TaskAttempt | None = None  # None: a task that has no attempt
    created_at: datetime | None = None
    title: str = ""
    usage: str = ""  # what its model calls spent


def rows_of(trace: Trace) -> list[Row]:
    """Depth-first over the task tree, siblings by creation time, each task's attempts in order."""
    start = trace.start
    rows: list[Row] = []

    def walk(nodes: list[TaskNode], depth: int) -> None:
        for node in sorted(nodes, key=lambda item: (item.task.created_at, item.task.pk)):
            task = node.task
            name = f"{task.agent}.{task.operation}"
            if not node.spans:
                rows.append(Row(name, depth, task.pk, None, task.created_at, describe_task(task, start)))
            for span in sorted(node.spans, key=lambda item: (item.started_at, item.pk)):
                rows.append(Row(f"{name} #{span.number}", depth, task.pk, span, usage=trace.usage_of(span)))
            walk(node.children, depth + 1)

    walk(trace.roots, 0)
    return rows


def nice_step(total: float, ticks: int = 8) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``ticks`` ticks."""
    raw = max(total, 1e-3) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


def render_svg(trace: Trace, now: datetime | None = None) -> str:
    """The trace as an SVG element (a string of markup, every text escaped)."""
    if trace.start is None:
        return '<p class="timeline-empty">No task has run for this workflow yet.</p>'
    now = now or timezone.now()
    start = trace.start
    rows = rows_of(trace)
    ends = [trace.end or start] + [now for row in rows if row.span is not None and row.span.finished_at is None]
    total = max((max(ends) - start).total_seconds(), 0.001)
    chart = WIDTH - LABEL_WIDTH - RIGHT_MARGIN
    height = TOP + len(rows) * ROW + AXIS + LEGEND

    def x(at: datetime) -> float:
        return LABEL_WIDTH + chart * max((at - start).total_seconds(), 0) / total

    out = [
        f'<svg class="trace-timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'style="width: 100%; max-width: {WIDTH}px; height: auto" role="img" font-family="sans-serif" font-size="11" '
        f'aria-label="{escape(f"Timeline of {len(rows)} rows over {total:.3f} seconds")}">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text x="4" y="{TOP - 12}" fill="#555">state changes, events</text>',
    ]
    # Grid and axis, in seconds from the first moment of the trace.
    step = nice_step(total)
    axis_y = TOP + len(rows) * ROW + 4
    tick = 0.0
    while tick <= total + 1e-9:
        tx = LABEL_WIDTH + chart * tick / total
        out.append(f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{axis_y}" stroke="#eee"/>')
        out.append(f'<text x="{tx:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#555">+{tick:g}s</text>')
        tick += step
    out.append(f'<line x1="{LABEL_WIDTH}" y1="{axis_y}" x2="{LABEL_WIDTH + chart}" y2="{axis_y}" stroke="#999"/>')

    for mark in _all_marks(trace):
        mx = x(mark.at)
        out.append(
            f'<g class="mark"><title>{escape(f"+{(mark.at - start).total_seconds():.3f}s {mark.text}")}</title>'
            f'<path d="M{mx - 4:.1f},{TOP - 14} L{mx + 4:.1f},{TOP - 14} L{mx:.1f},{TOP - 6} Z" fill="#37474f"/></g>'
        )

    for index, row in enumerate(rows):
        y = TOP + index * ROW
        label = escape(_clip(row.label, 44 - 2 * row.depth))
        out.append(
            f'<text x="{4 + 12 * row.depth}" y="{y + BAR}" fill="#222">{label}'
            f'<tspan fill="#888"> task {row.task_id}</tspan></text>'
        )
        if row.span is None:
            cx = x(row.created_at)
            out.append(
                f'<g class="task-not-run" data-task="{row.task_id}"><title>{escape(row.title)}</title>'
                f'<circle cx="{cx:.1f}" cy="{y + BAR / 2 + 1}" r="4" fill="#fff" stroke="#555"/></g>'
            )
            continue
        out.append(_bar(row, y, x, now, start))

    legend_x = LABEL_WIDTH
    out.append(f'<g class="legend" transform="translate(0,{height - 8})">')
    for status, colour in COLOURS.items():
        out.append(f'<rect x="{legend_x}" y="-9" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{legend_x + 13}" y="0" fill="#555">{escape(str(status.label).lower())}</text>')
        legend_x += 92
    out.append("</g></svg>")
    return "".join(out)


def _bar(row: Row, y: float, x, now: datetime, start: datetime) -> str:
    span = row.span
    end = span.finished_at or now
    x1, x2 = x(span.started_at), x(end)
    width = max(x2 - x1, 2.0)
    colour = COLOURS.get(span.status, "#607d8b")
    failed = span.status in FAILURES
    took = f"{(end - span.started_at).total_seconds():.3f}s" + ("" if span.finished_at else ", still running")
    title = f"{row.label} (task {row.task_id}): {span.get_status_display()}, {took}, on {span.worker}"
    title += f", from +{(span.started_at - start).total_seconds():.3f}s"
    if span.error and span.status != AttemptStatus.SUCCEEDED:
        title += f"\n{first_line(span.error, 300)}"
    if row.usage:
        title += f"\n{row.usage}"
    stroke = ' stroke="#b71c1c" stroke-width="2"' if failed else ""
    parts = [
        f'<g class="span{" failed" if failed else ""}" data-status="{escape(span.status)}" data-task="{row.task_id}">'
        f"<title>{escape(title)}</title>",
        f'<rect x="{x1:.1f}" y="{y + 1}" width="{width:.1f}" height="{BAR}" rx="2" fill="{colour}"{stroke}/>',
    ]
    if failed:
        cx, cy = x1 + width + 7, y + 1 + BAR / 2
        parts.append(
            f'<path class="failure-mark" d="M{cx - 4:.1f},{cy - 4:.1f} L{cx + 4:.1f},{cy + 4:.1f} '
            f'M{cx - 4:.1f},{cy + 4:.1f} L{cx + 4:.1f},{cy - 4:.1f}" stroke="#b71c1c" stroke-width="2"/>'
        )
    parts.append("</g>")
    return "".join(parts)


def _all_marks(trace: Trace) -> list[Mark]:
    marks = list(trace.marks)
    stack = list(trace.roots)
    while stack:
        node = stack.pop()
        marks.extend(node.marks)
        stack.extend(node.children)
    return sorted(marks, key=lambda mark: mark.at)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
