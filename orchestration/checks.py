"""`manage.py check` validates the agents' declarations against the boundary rules."""

from __future__ import annotations

from collections import defaultdict

from django.apps import apps
from django.core import checks

from orchestration.conf import kernel_settings
from orchestration.registry import Registry, registry


def check_agent_boundaries(reg: Registry) -> list[checks.CheckMessage]:
    """Every rule an agent definition must keep; each error names the agents involved."""
    errors: list[checks.CheckMessage] = []

    def error(message: str, code: str) -> None:
        errors.append(checks.Error(message, id=f"orchestration.{code}"))

    for name in reg.duplicates:
        error(f"agent '{name}' is registered twice with different definitions", "E001")

    operation_owners: dict[str, set[str]] = defaultdict(set)
    model_owners: dict[str, set[str]] = defaultdict(set)
    for definition in reg.agents.values():
        for operation in definition.operations:
            operation_owners[operation.name].add(definition.name)
        for model in definition.writes:
            model_owners[model].add(definition.name)
        if " and " in f" {definition.responsibility.lower()} ":
            error(
                f"agent '{definition.name}' has a responsibility with 'and' in it "
                f"({definition.responsibility!r}): one agent, one job",
                "E004",
            )
        for model in definition.writes:
            if apps.ready and not _model_exists(model):
                error(f"agent '{definition.name}' declares it writes unknown model '{model}'", "E007")

    for operation_name, owners in sorted(operation_owners.items()):
        if len(owners) > 1:
            error(f"operation '{operation_name}' is owned by several agents: {', '.join(sorted(owners))}", "E002")
    for model, owners in sorted(model_owners.items()):
        if len(owners) > 1:
            error(f"model '{model}' is written by several agents: {', '.join(sorted(owners))}", "E003")

    routed = {route.event_type for route in reg.routes}
    for definition in reg.agents.values():
        for event in sorted(definition.emits):
            if event not in routed and event not in definition.terminal_events:
                error(
                    f"agent '{definition.name}' emits '{event}', which has no subscriber and is not marked terminal",
                    "E005",
                )
        for operation in definition.operations:
            if operation.dead_event and operation.dead_event not in definition.emits:
                error(
                    f"agent '{definition.name}' operation '{operation.name}' emits "
                    f"'{operation.dead_event}' when it dies, but does not declare it in emits",
                    "E008",
                )

    for route in reg.routes:
        target = reg.agent(route.agent)
        if target is None:
            error(f"routing sends '{route.event_type}' to unknown agent '{route.agent}'", "E006")
        elif target.operation(route.operation) is None:
            error(
                f"routing sends '{route.event_type}' to agent '{route.agent}', "
                f"which has no operation '{route.operation}'",
                "E006",
            )
    return errors


def check_leases(
    reg: Registry, default_lease: int, max_lease: int, max_runtime: int | None = None
) -> list[checks.CheckMessage]:
    """A long lease is a slow reclaim after a crash: leases stay under a cap, and under the
    ceiling on one attempt (Celery's hard limit and the broker's visibility timeout follow it)."""
    errors = []
    if default_lease > max_lease:
        errors.append(
            checks.Error(
                f"AGENT_TASK_DEFAULT_LEASE_SECONDS ({default_lease}) is above "
                f"AGENT_TASK_MAX_LEASE_SECONDS ({max_lease})",
                id="orchestration.E009",
            )
        )
    if max_runtime is not None and max_lease > max_runtime:
        errors.append(
            checks.Error(
                f"AGENT_TASK_MAX_LEASE_SECONDS ({max_lease}) is above "
                f"AGENT_TASK_MAX_RUNTIME_SECONDS ({max_runtime}), the ceiling on one attempt",
                id="orchestration.E010",
            )
        )
    for definition in reg.agents.values():
        for operation in definition.operations:
            if operation.lease_seconds is not None and operation.lease_seconds > max_lease:
                errors.append(
                    checks.Error(
                        f"agent '{definition.name}' operation '{operation.name}' asks for a lease of "
                        f"{operation.lease_seconds} s, above AGENT_TASK_MAX_LEASE_SECONDS ({max_lease} s)",
                        hint="Heartbeat instead (a handler that heartbeats keeps its lease for as long as "
                        "it runs), or raise AGENT_TASK_MAX_LEASE_SECONDS.",
                        id="orchestration.E009",
                    )
                )
    return errors


def _model_exists(label: str) -> bool:
    try:
        apps.get_model(label)
    except (LookupError, ValueError):
        return False
    return True


@checks.register("agents")
def agent_boundaries_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    return check_agent_boundaries(registry)


@checks.register("agents")
def lease_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    config = kernel_settings()
    return check_leases(registry, config.default_lease_seconds, config.max_lease_seconds, config.max_runtime_seconds)
