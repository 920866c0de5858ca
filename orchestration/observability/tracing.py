"""Following one workflow: its timeline.

A trace is everything of one workflow (one workflow id): the agent tasks (a tree by
parent task), each task's attempts (the spans: start, end, status, worker, error),
and the events nobody subscribed to. The domain adds its own moments (an order's
state changes) as marks, placed under the task that wrote them. A correlation id is
the caller's and may span several workflows: workflows_of() lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Min

from orchestration.models import AgentTask, AttemptStatus, Event, TaskAttempt, TaskStatus, UsageRecord


@dataclass(frozen=True)
class Mark:
    """A moment of the workflow that is not an attempt: a state change, an unheard event."""

    at: datetime
    text: str
    task_id: int | None = None  # the task whose attempt wrote it; None for the top level


@dataclass
class TaskNode:
    task: AgentTask
    spans: list[TaskAttempt] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    children: list[TaskNode] = field(default_factory=list)


@dataclass
class Trace:
    workflow_id: str
    roots: list[TaskNode]
    marks: list[Mark]  # the top-level ones
    tasks: list[AgentTask]
    spans: list[TaskAttempt]
    # The metered calls (model calls) of each attempt, by (task id, fence): which were billed.
    usage: dict[tuple[int, int], list[UsageRecord]] = field(default_factory=dict)

    def usage_of(self, span: TaskAttempt) -> str:
        """One line on what the attempt's model calls spent, or "" when it made none."""
        return describe_usage(self.usage.get((span.task_id, span.fence), []))

    @property
    def start(self) -> datetime | None:
        return min(self._times(), default=None)

    @property
    def end(self) -> datetime | None:
        return max(self._times(), default=None)

    def _times(self) -> Iterable[datetime]:
        yield from (task.created_at for task in self.tasks)
        yield from (span.finished_at or span.started_at for span in self.spans)
        yield from (mark.at for mark in self._all_marks())

    def _all_marks(self) -> Iterable[Mark]:
        yield from self.marks
        stack = list(self.roots)
        while stack:
            node = stack.pop()
            yield from node.marks
            stack.extend(node.children)

    @property
    def is_empty(self) -> bool:
        return not self.tasks and not self.marks


def workflows_of(correlation_id: str, limit: int = 100) -> list[str]:
    """The workflows whose tasks carry this correlation id, oldest first (at most ``limit``)."""
    first_task = (
        AgentTask.objects.filter(correlation_id=correlation_id)
        .values("workflow_id")
        .annotate(first=Min("id"))
        .order_by("first")
    )
    return [row["workflow_id"] for row in first_task[:limit]]


def build_trace(workflow_id: str, marks: Iterable[Mark] = ()) -> Trace:
    """Everything recorded for this workflow, as a tree of tasks by parent."""
    tasks = list(AgentTask.objects.filter(workflow_id=workflow_id).order_by("created_at", "id"))
    spans = list(TaskAttempt.objects.filter(task_id__in=[task.pk for task in tasks]).order_by("started_at", "id"))
    events = list(Event.objects.filter(workflow_id=workflow_id).order_by("created_at", "id"))
    nodes = {task.pk: TaskNode(task) for task in tasks}
    for span in spans:
        if span.task_id in nodes:
            nodes[span.task_id].spans.append(span)

    all_marks = [*marks, *_unheard_events(events, tasks)]
    top_marks = [mark for mark in all_marks if mark.task_id not in nodes]
    for mark in all_marks:
        if mark.task_id in nodes:
            nodes[mark.task_id].marks.append(mark)

    roots: list[TaskNode] = []
    for node in nodes.values():
        parent = nodes.get(node.task.parent_id)
        (parent.children if parent else roots).append(node)
    usage: dict[tuple[int, int], list[UsageRecord]] = {}
    for record in UsageRecord.objects.filter(workflow_id=workflow_id).order_by("id"):
        usage.setdefault((record.task_id, record.fence), []).append(record)
    return Trace(workflow_id, roots, top_marks, tasks, spans, usage)


def _unheard_events(events: list[Event], tasks: list[AgentTask]) -> list[Mark]:
    """Events that started no task in this trace (terminal ones, or ones nobody routes)."""
    # Routing keys each subscriber's task "event:<event id>:<agent>.<operation>".
    heard = {task.idempotency_key.split(":")[1] for task in tasks if task.idempotency_key.startswith("event:")}
    return [
        Mark(event.created_at, f"event {event.type} (no subscriber)", event.source_task_id)
        for event in events
        if str(event.pk) not in heard
    ]


# --- Rendering -------------------------------------------------------------------

SPAN_STATUS = {
    AttemptStatus.RUNNING: "running",
    AttemptStatus.SUCCEEDED: "succeeded",
    AttemptStatus.RETRYING: "retrying",
    AttemptStatus.DEFERRED: "deferred",
    AttemptStatus.FAILED: "failed",
    AttemptStatus.RECLAIMED: "reclaimed",
    AttemptStatus.FENCED_OUT: "fenced_out",
}


def render_trace(trace: Trace, indent: str = "  ") -> list[str]:
    """The timeline as lines: `+seconds  <indent by depth> what happened`."""
    start = trace.start
    if start is None:
        return []
    lines: list[str] = []

    def offset(at: datetime) -> str:
        return f"{(at - start).total_seconds():+9.3f}s"

    def walk(items: list[tuple[datetime, int, object]], depth: int) -> None:
        for at, _order, item in sorted(items, key=lambda entry: (entry[0], entry[1])):
            pad = indent * depth
            if isinstance(item, TaskNode):
                lines.append(f"{offset(at)}  {pad}{describe_task(item.task, start)}")
                walk(_items_of(item), depth + 1)
            elif isinstance(item, TaskAttempt):
                spent = trace.usage_of(item)
                lines.append(f"{offset(at)}  {pad}{describe_span(item)}" + (f"; {spent}" if spent else ""))
            elif isinstance(item, Mark):
                lines.append(f"{offset(at)}  {pad}{item.text}")

    walk([(node.task.created_at, 1, node) for node in trace.roots] + [(m.at, 0, m) for m in trace.marks], 0)
    return lines


def _items_of(node: TaskNode) -> list[tuple[datetime, int, object]]:
    # At equal times: the attempt first, then what it wrote, then the tasks it started.
    return (
        [(span.started_at, 0, span) for span in node.spans]
        + [(mark.at, 1, mark) for mark in node.marks]
        + [(child.task.created_at, 2, child) for child in node.children]
    )


def describe_task(task: AgentTask, start: datetime) -> str:
    cause = f" <- {task.event_type}" if task.event_type else ""
    text = f"{task.agent}.{task.operation}{cause} (task {task.pk}): {_task_outcome(task, start)}"
    if task.reclaims:
        text += f", reclaimed {task.reclaims}x"
    return text


def _task_outcome(task: AgentTask, start: datetime) -> str:
    attempts = f"{task.attempts} attempt{'s' if task.attempts != 1 else ''}"
    if task.status == TaskStatus.DEAD:
        return f"DEAD after {attempts}: {first_line(task.last_error)}"
    if task.status == TaskStatus.PENDING:
        waiting = f"pending, next try at {(task.run_after - start).total_seconds():+.3f}s"
        return f"{waiting} after {attempts}" if task.attempts else waiting
    if task.status == TaskStatus.CLAIMED:
        return f"running attempt {task.attempts} on {task.claimed_by}"
    if task.status == TaskStatus.CANCELLED:
        return f"cancelled: {first_line(task.last_error)}"
    return f"{task.status} after {attempts}"


def describe_span(span: TaskAttempt) -> str:
    status = SPAN_STATUS.get(span.status, span.status)
    took = f"{(span.finished_at - span.started_at).total_seconds():.3f}s" if span.finished_at else "still running"
    text = f"attempt {span.number}: {status}, {took}, on {span.worker}"
    if span.error and span.status != AttemptStatus.SUCCEEDED:
        text += f": {first_line(span.error)}"
    return text


def describe_usage(records: list[UsageRecord]) -> str:
    """What an attempt's metered calls spent, each call saying whether it was billed."""
    if not records:
        return ""
    calls = [
        f"{record.service} {record.prompt_tokens}+{record.completion_tokens} tokens "
        + (f"{record.cost} billed" if record.billed else "not billed (answered from the service's record)")
        for record in records
    ]
    return f"{len(records)} model call{'s' if len(records) != 1 else ''}: " + ", ".join(calls)


def first_line(text: str, limit: int = 160) -> str:
    """The first line of an error (or any text), cut to ``limit`` characters."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def summarize(trace: Trace) -> str:
    """One line of counts: tasks, attempts by status, dead tasks, duration."""
    by_status: dict[str, int] = {}
    for span in trace.spans:
        by_status[span.status] = by_status.get(span.status, 0) + 1
    dead = sum(task.status == TaskStatus.DEAD for task in trace.tasks)
    statuses = ", ".join(f"{count} {SPAN_STATUS.get(status, status)}" for status, count in sorted(by_status.items()))
    took = (trace.end - trace.start).total_seconds() if trace.start and trace.end else 0.0
    return (
        f"{len(trace.tasks)} tasks, {len(trace.spans)} attempts ({statuses or 'none'}), {dead} dead, over {took:.3f}s"
    )
