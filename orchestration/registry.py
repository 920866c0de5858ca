"""Agent definitions and the event routing table.

An agent declares, in code, what it is for and what it touches. The system check in
orchestration.checks validates the declarations; the kernel uses them to find
handlers, queues, leases and the routes from events to subscribing operations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestration.work.context import TaskContext

# What an agent author writes: it reads the task from its context, writes its effects in the
# transaction the kernel opened, emits events, and returns a small JSON result (or None).
Handler = Callable[["TaskContext"], dict[str, Any] | None]
# The first half of an operation that calls the outside world: it runs with no transaction
# open (reads, then the call inside context.outside()), and what it returns is the handler's
# context.answer.
OutsideCall = Callable[["TaskContext"], Any]


@dataclass(frozen=True)
class Operation:
    """One thing an agent can be asked to do."""

    name: str
    handler: Handler
    payload_versions: frozenset[int] = frozenset({1})
    lease_seconds: int | None = None  # None: the kernel's default lease
    max_attempts: int | None = None  # None: the kernel's default
    ttl_seconds: int | None = None  # None: never expires while pending
    priority: int = 0
    # Emitted when a task of this operation goes dead, so the owning workflow compensates.
    dead_event: str | None = None
    dependency: str | None = None  # the outside dependency it calls, for guards
    # Gives back what the workflow took (release, refund, tell the customer), or books
    # what already happened: it runs even when the workflow's budget is spent, and does
    # not count against it. What it emits must lead only to other such operations.
    compensation: bool = False
    # Runs before the handler with no transaction open: a slow outside call holds no row
    # lock and no database connection while it waits (see OutsideCall).
    call: OutsideCall | None = None
    # Runs inside the transaction that emits the event it hears, instead of as a task of its
    # own a message later (the coordinator's steps): the same task row, attempt span and
    # budget step, recorded with the emitter's completion.
    inline: bool = False


@dataclass(frozen=True)
class AgentDefinition:
    """Who an agent is: one job, the operations it handles, what it emits and writes."""

    name: str
    responsibility: str
    operations: tuple[Operation, ...]
    emits: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()  # model labels, "app_label.ModelName"
    must_not: tuple[str, ...] = ()
    terminal_events: frozenset[str] = frozenset()  # emitted events nobody needs to hear
    queue: str = ""

    def __post_init__(self) -> None:
        if not self.queue:
            object.__setattr__(self, "queue", f"agent.{self.name}")

    def operation(self, name: str) -> Operation | None:
        return next((operation for operation in self.operations if operation.name == name), None)


@dataclass(frozen=True)
class Route:
    event_type: str
    agent: str
    operation: str


@dataclass
class Registry:
    """The agents and routes of one process; tests build their own."""

    agents: dict[str, AgentDefinition] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    # What every claim and completion reads off the operations, derived once per registration.
    _leases: dict[str, int] | None = field(default=None, repr=False, compare=False)
    _uncounted: list[str] | None = field(default=None, repr=False, compare=False)

    def register(self, definition: AgentDefinition) -> AgentDefinition:
        if definition.name in self.agents and self.agents[definition.name] is not definition:
            self.duplicates.append(definition.name)
        self.agents[definition.name] = definition
        self._leases = self._uncounted = None
        return definition

    def subscribe(self, event_type: str, agent: str, operation: str) -> None:
        route = Route(event_type, agent, operation)
        if route not in self.routes:
            self.routes.append(route)

    def subscribers(self, event_type: str) -> list[Route]:
        return [route for route in self.routes if route.event_type == event_type]

    def agent(self, name: str) -> AgentDefinition | None:
        return self.agents.get(name)

    def operation(self, agent: str, operation: str) -> Operation | None:
        definition = self.agents.get(agent)
        return definition.operation(operation) if definition else None

    def queues(self) -> list[str]:
        return sorted({definition.queue for definition in self.agents.values()})

    def all_operations(self) -> Iterable[tuple[AgentDefinition, Operation]]:
        for definition in self.agents.values():
            for operation in definition.operations:
                yield definition, operation

    def leases(self) -> dict[str, int]:
        """Each operation's declared lease, "agent.operation" -> seconds (others get the default)."""
        if self._leases is None:
            self._leases = {
                f"{definition.name}.{operation.name}": operation.lease_seconds
                for definition, operation in self.all_operations()
                if operation.lease_seconds
            }
        return self._leases

    def uncounted(self) -> list[str]:
        """The operations that do not count against a workflow's budget (compensations)."""
        if self._uncounted is None:
            self._uncounted = [
                f"{definition.name}.{operation.name}"
                for definition, operation in self.all_operations()
                if operation.compensation
            ]
        return self._uncounted


registry = Registry()
register = registry.register
subscribe = registry.subscribe
