"""What a handler sees of its task, and how it talks back to the kernel.

This is the contract agent authors meet: a handler is ``Callable[[TaskContext], dict | None]``
(orchestration.registry.Handler). It reads the payload, writes its effects in the
transaction the kernel opened for it, emits events, heartbeats when it works long, and
returns a small JSON result. An operation that calls the outside world does so in its
``call`` (no transaction open, inside ``context.outside()``), and its handler records what
came back (``context.answer``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.db import connection

from orchestration.errors import OutsideCallInTransaction
from orchestration.models import AgentTask
from orchestration.registry import Operation
from orchestration.work import lifecycle
from orchestration.work.connections import pool
from orchestration.work.events import Outbox
from orchestration.work.leases import AttemptLease


class TaskContext:
    """What a handler sees of its task, and how it talks back to the kernel."""

    def __init__(
        self,
        task: AgentTask,
        operation: Operation,
        lease: AttemptLease,
        *,
        outbox: Outbox | None = None,
        budget: lifecycle.Budget | None = None,
        worker: str = "",
        queue: str = "",
        held: dict[Any, Any] | None = None,
    ):
        self.task = task
        self.operation = operation
        self.lease = lease
        self.outbox = outbox if outbox is not None else Outbox()
        self.budget = budget
        self.worker = worker
        self.queue = queue
        self.cost = Decimal(0)
        self.answer: Any = None  # what the operation's `call` returned, for its handler
        self.usage: list[lifecycle.Usage] = []  # metered calls not yet recorded (add_usage)
        # Rows this transaction has locked, kept by the handlers that locked them for the steps
        # run inline after them (the kernel never looks inside).
        self.held: dict[Any, Any] = held if held is not None else {}

    @property
    def task_id(self) -> int:
        return self.task.pk

    @property
    def payload(self) -> dict[str, Any]:
        return self.task.payload

    @property
    def payload_version(self) -> int:
        return self.task.payload_version

    @property
    def event_type(self) -> str:
        return self.task.event_type

    @property
    def workflow_id(self) -> str:
        """The workflow this task belongs to: its budget, its stop, its trace."""
        return self.task.workflow_id

    @property
    def correlation_id(self) -> str:
        """The caller's id (or the workflow's), for logs and traces; workflows may share it."""
        return self.task.correlation_id

    @property
    def attempt(self) -> int:
        return self.task.attempts

    @property
    def fence(self) -> int:
        return self.task.fence

    @property
    def checkpoint(self) -> Any:
        """What an earlier attempt saved with heartbeat(checkpoint=...): resume from here."""
        return self.task.checkpoint

    def emit(self, event_type: str, payload: dict[str, Any], version: int = 1) -> None:
        """Record an event; it and its subscribers' tasks are written with this task's
        completion, in its transaction (and not at all if the task does not complete)."""
        self.outbox.add(
            event_type,
            payload,
            workflow_id=self.workflow_id,
            correlation_id=self.correlation_id,
            version=version,
            source_task_id=self.task_id,
        )

    def heartbeat(self, checkpoint: Any = lifecycle.UNSET) -> None:
        """Say this attempt is alive: its lease, guard slots, deadline and database session
        last another lease. Call it at least every third of the lease (or wait inside
        keeping_alive()); a checkpoint saved here survives this attempt's rollback.
        Raises LeaseLost when the lease was already gone."""
        self.lease.heartbeat(checkpoint)
        if checkpoint is not lifecycle.UNSET:
            self.task.checkpoint = checkpoint

    def keeping_alive(self) -> AbstractContextManager[None]:
        """``with context.keeping_alive(): slow_call()`` heartbeats from a background thread
        every third of the lease while the block runs, and stops when it ends."""
        return self.lease.keeping_alive()

    @contextmanager
    def outside(self) -> Iterator[None]:
        """``with context.outside(): gateway.charge(...)``: a call to the outside world.

        It must run with no transaction open (in the operation's ``call``), so it holds no
        row lock; with a connection pool (DATABASE_POOL_SIZE) the thread's connection goes
        back before it, so a thousand calls in flight hold no thousand connections; and the
        attempt heartbeats while it waits, so a call of many leases keeps its claim (the
        client's own timeout must cut a hung call: the attempt still ends at
        AGENT_TASK_MAX_RUNTIME_SECONDS)."""
        if connection.in_atomic_block:
            raise OutsideCallInTransaction(
                f"{self.task.agent}.{self.task.operation}: an outside call inside a transaction holds "
                "its locks while it waits; make it in the operation's `call`"
            )
        if pool() is not None:
            connection.close()  # back to the pool: the next query takes one again
        with self.keeping_alive():
            yield

    def add_cost(self, units: Decimal | float | int) -> None:
        """Cost units this step spent (a gateway fee), counted against the workflow's cost cap."""
        self.cost += Decimal(str(units))

    def add_usage(
        self,
        service: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost: Decimal | float = 0,
        billed: bool = True,
        key: str = "",
    ) -> None:
        """What one call to a metered service (a language model) spent: recorded on this attempt
        as soon as the call phase ends, whatever becomes of the attempt, and counted against the
        workflow's token and money caps. ``billed=False``: the service answered from its
        idempotency record and charged nothing (``key``, the call's idempotency key, lets the
        kernel count it once when the attempt that paid for it died before recording it)."""
        self.usage.append(
            lifecycle.Usage(service, prompt_tokens, completion_tokens, Decimal(str(cost)), billed=billed, key=key)
        )

    def spent(self) -> tuple[int, Decimal]:
        """Tokens and money the workflow has spent, as of this attempt's claim plus the calls this
        attempt made since (not yet recorded); only the latter for work outside any budget."""
        tokens = sum(item.prompt_tokens + item.completion_tokens for item in self.usage if item.billed)
        money = sum((item.cost for item in self.usage if item.billed), Decimal(0))
        if self.budget is None:
            return tokens, money
        return self.budget.tokens + tokens, self.budget.money + money

    def over_spend_caps(self) -> str | None:
        """Why the workflow may not spend more on metered calls (a cap is passed), or None. A
        call phase asks before each call; the kernel asks at each claim."""
        if self.budget is None:
            return None
        tokens, money = self.spent()
        return replace(self.budget, tokens=tokens, money=money).exceeded
