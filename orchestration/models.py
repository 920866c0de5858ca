"""The kernel's rows: agent tasks, their attempts, events, live workers and refused messages.

The database is the source of truth: a Celery message only says "look at task N".
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from orchestration.conf import kernel_settings


class TaskStatus(models.TextChoices):
    PENDING = "pending"  # waiting for run_after, then for a worker to claim it
    CLAIMED = "claimed"  # a worker holds the lease; only its fence may finish it
    SUCCEEDED = "succeeded"  # finished; its effects committed with the completion
    DEAD = "dead"  # failed for good, expired, or out of attempts; an operator may replay it
    CANCELLED = "cancelled"  # withdrawn before it ran


def new_workflow_id() -> str:
    """A workflow's own identity, minted by the system (never a caller's request id)."""
    return uuid.uuid4().hex


LIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.CLAIMED)
FINISHED_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.DEAD, TaskStatus.CANCELLED)


class AgentTask(models.Model):
    """One unit of agent work: a directive whose completion is its acknowledgement."""

    agent = models.CharField(max_length=64)
    operation = models.CharField(max_length=64)
    event_type = models.CharField(max_length=100, blank=True, help_text="The event that created this task.")
    payload = models.JSONField(default=dict)
    payload_version = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    priority = models.SmallIntegerField(default=0, help_text="Higher runs first.")
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    reclaims = models.PositiveIntegerField(default=0)
    run_after = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, unique=True)
    # The workflow the task belongs to: its budget and its stop. Inherited from the task
    # whose event created it; a task enqueued on its own starts a workflow of its own.
    workflow_id = models.CharField(max_length=64, default=new_workflow_id)
    # The caller's id (X-Request-ID, traceparent) or the workflow's: links logs and traces.
    # Several workflows may share one.
    correlation_id = models.CharField(max_length=64, db_index=True)
    # No database constraint: the parent may be pruned before its children. No index: no query
    # looks tasks up by their parent (the trace builds the tree from a workflow's tasks), and
    # each index costs every task three writes.
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    claimed_by = models.CharField(max_length=255, blank=True)
    fence = models.BigIntegerField(default=0, help_text="Fencing token: raised by every claim.")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    checkpoint = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="Last time a message was sent.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Partial indexes on the live statuses keep claiming and sweeping fast
            # when millions of finished rows sit in the table.
            models.Index(
                fields=["-priority", "run_after"],
                name="agenttask_ready",
                condition=Q(status=TaskStatus.PENDING),
            ),
            models.Index(
                fields=["agent", "run_after"],
                name="agenttask_pending_by_agent",
                condition=Q(status=TaskStatus.PENDING),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="agenttask_leases",
                condition=Q(status=TaskStatus.CLAIMED),
            ),
            models.Index(
                fields=["expires_at"],
                name="agenttask_ttl",
                condition=Q(status=TaskStatus.PENDING, expires_at__isnull=False),
            ),
            models.Index(
                fields=["finished_at"],
                name="agenttask_finished",
                condition=Q(status__in=FINISHED_STATUSES),
            ),
            models.Index(fields=["agent", "status"], name="agenttask_agent_status"),
            models.Index(fields=["workflow_id"], name="agenttask_workflow"),
            # The dead letters, newest first, however many finished rows surround them.
            models.Index(fields=["-finished_at"], name="agenttask_dead", condition=Q(status=TaskStatus.DEAD)),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} {self.agent}.{self.operation} [{self.status}]"


class AttemptStatus(models.TextChoices):
    RUNNING = "running"  # the worker is executing the handler
    SUCCEEDED = "succeeded"  # the handler's effects committed
    RETRYING = "retrying"  # failed with a transient error; the task went back to pending
    DEFERRED = "deferred"  # put off without spending the attempt (a guard said "not now")
    FAILED = "failed"  # failed for good; the task is dead
    RECLAIMED = "reclaimed"  # the lease ran out; a sweep took the task back
    FENCED_OUT = "fenced_out"  # finished after a reclaim: its effects were rolled back


class TaskAttempt(models.Model):
    """One execution of a task by one worker: a span of the trace."""

    # No index of its own: attempt_task_fence, which starts with the task, serves its lookups.
    task = models.ForeignKey(
        AgentTask, on_delete=models.CASCADE, db_constraint=False, db_index=False, related_name="spans"
    )
    number = models.PositiveIntegerField()
    fence = models.BigIntegerField()
    agent = models.CharField(max_length=64)
    operation = models.CharField(max_length=64)
    correlation_id = models.CharField(max_length=64, db_index=True)
    worker = models.CharField(max_length=255)
    queue = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=16, choices=AttemptStatus.choices, default=AttemptStatus.RUNNING)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["task", "fence"], name="attempt_task_fence")]

    def __str__(self) -> str:
        return f"attempt {self.number} of task {self.task_id} [{self.status}]"


class Event(models.Model):
    """A fact an agent emitted, written in the same transaction as its effects (an outbox)."""

    type = models.CharField(max_length=100)
    version = models.PositiveSmallIntegerField(default=1)
    payload = models.JSONField(default=dict)
    workflow_id = models.CharField(max_length=64)
    correlation_id = models.CharField(max_length=64, db_index=True)
    source_task = models.ForeignKey(
        AgentTask, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["workflow_id"], name="event_workflow")]

    def __str__(self) -> str:
        return f"{self.type} v{self.version} ({self.workflow_id})"


class Worker(models.Model):
    """A worker process that claims tasks; it says it is alive by touching its row."""

    name = models.CharField(max_length=255, unique=True, help_text="host:pid")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.CharField(max_length=500, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["hostname"], name="worker_hostname")]  # the admin's search

    def __str__(self) -> str:
        return self.name

    def is_alive(self, now=None, timeout_seconds: int | None = None) -> bool:
        now = now or timezone.now()
        timeout = timeout_seconds or kernel_settings().worker_gone_after_seconds
        return self.stopped_at is None and (now - self.last_seen_at).total_seconds() <= timeout


class WorkflowBudget(models.Model):
    """Steps, cost units, tokens and money spent by one workflow, against its caps."""

    workflow_id = models.CharField(max_length=64, unique=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True, help_text="Of the task that opened it.")
    steps = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    max_steps = models.PositiveIntegerField()
    max_cost = models.DecimalField(max_digits=14, decimal_places=4)
    tokens = models.PositiveBigIntegerField(default=0, help_text="Model tokens billed (prompt and completion).")
    max_tokens = models.PositiveBigIntegerField(null=True, blank=True, help_text="None: the setting's cap.")
    money = models.DecimalField(max_digits=14, decimal_places=6, default=0, help_text="What the billed calls cost.")
    max_money = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    exceeded_at = models.DateTimeField(null=True, blank=True)
    exceeded_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"budget of {self.workflow_id}: {self.steps}/{self.max_steps} steps, {self.cost}/{self.max_cost}"


class UsageRecord(models.Model):
    """One call to a metered outside service (a language model) by one attempt: its tokens and
    what it cost. Written when the call returns, whatever becomes of the attempt, so a retry
    after a crash shows which attempts were billed."""

    task_id = models.BigIntegerField()
    fence = models.BigIntegerField(help_text="The attempt's fencing token (with the task, the span).")
    workflow_id = models.CharField(max_length=64)
    agent = models.CharField(max_length=64)
    operation = models.CharField(max_length=64)
    service = models.CharField(max_length=100, help_text="The model (or other metered service) called.")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    billed = models.BooleanField(default=True, help_text="False: the service answered from its idempotency record.")
    # The call's idempotency key at the service: a replayed answer is recorded as billed when no
    # earlier attempt recorded the billed one (its worker died before it could).
    idempotency_key = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["task_id", "fence"], name="usage_attempt"),
            models.Index(fields=["idempotency_key"], name="usage_key", condition=~Q(idempotency_key="")),
            models.Index(fields=["workflow_id"], name="usage_workflow"),
            models.Index(fields=["created_at"], name="usage_time"),
        ]

    def __str__(self) -> str:
        tokens = self.prompt_tokens + self.completion_tokens
        return f"{self.service}: {tokens} tokens, {self.cost} for task {self.task_id}"


class DeadLetter(AgentTask):
    """The dead agent tasks, as their own admin list: what an operator may replay."""

    class Meta:
        proxy = True
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters"


class RejectionReason(models.TextChoices):
    # Values only: Django labels them from the names ("Not Json", "Bad Arguments").
    NOT_JSON = "not_json"  # the bytes on the queue are not JSON at all
    NOT_AN_ENVELOPE = "not_an_envelope"  # JSON, but not kombu's message envelope
    UNDECODABLE_BODY = "undecodable_body"  # not base64, not its content type, bad compression
    REFUSED_CONTENT = "refused_content"  # a serializer the workers do not accept (pickle)
    NOT_A_TASK = "not_a_task"  # a readable message that names no task
    UNKNOWN_TASK = "unknown_task"  # names a task no worker knows
    MALFORMED_TASK = "malformed_task"  # not Celery's protocol 2: id, headers, [args, kwargs, embed]
    BAD_ARGUMENTS = "bad_arguments"  # a known task refused its arguments


class RejectedMessage(models.Model):
    """A broker message that could not become a task run: taken off its queue for good and
    kept here for an operator, with what arrived (truncated) and why it was refused."""

    queue = models.CharField(max_length=200)
    reason = models.CharField(max_length=32, choices=RejectionReason.choices)
    detail = models.TextField(help_text="Why, precisely.")
    message_id = models.CharField(max_length=255, blank=True, help_text="Its id, shortened when very long.")
    task_name = models.CharField(max_length=255, blank=True)
    headers = models.TextField(blank=True, help_text="Its headers as JSON, when they could be read.")
    body = models.TextField(blank=True, help_text="What arrived, its first few KB.")
    size = models.PositiveIntegerField(help_text="Bytes that arrived.")
    # One row per message however often it is delivered: a digest of its queue and its id
    # (or, without a readable id, of its bytes).
    fingerprint = models.CharField(max_length=64, unique=True)
    worker = models.CharField(max_length=255, help_text="host:pid of the process that refused it.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["-received_at"], name="rejectedmessage_received")]

    def __str__(self) -> str:
        return f"rejected message {self.pk} on {self.queue}: {self.get_reason_display()}"


class OperatorAction(models.Model):
    """The audit trail of operators' hands: who did what to which rows, and what came of it.

    Written by every operator action (retry, cancel, force a breaker, reclaim), whether it
    changed anything or refused everything. ``done`` lists the targets that changed;
    ``refused`` maps each target left alone to the reason.
    """

    operator = models.CharField(max_length=150, help_text="The user who acted (username).")
    action = models.CharField(max_length=64)
    target_kind = models.CharField(max_length=100, help_text="What was acted on, e.g. orchestration.agenttask.")
    targets = models.JSONField(default=list, help_text="Every target asked for.")
    done = models.JSONField(default=list, help_text="The targets that changed.")
    refused = models.JSONField(default=dict, help_text="Target -> why it was left alone.")
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["operator"], name="operatoraction_operator")]  # the admin's search
        permissions = [
            ("operate", "Can take operator actions: retry, cancel, force breakers, reclaim"),
            ("view_breakers", "Can see the circuit breakers"),
        ]

    def __str__(self) -> str:
        done, refused = len(self.done), len(self.refused)
        return f"{self.operator}: {self.action} on {self.target_kind} ({done} done, {refused} refused)"
