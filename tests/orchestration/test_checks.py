"""The boundary check: `manage.py check` fails, naming the agents, on each violation."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from orchestration.checks import check_agent_boundaries, check_leases
from orchestration.registry import AgentDefinition, Operation, Registry


def noop(context) -> None:
    return None


def agent(name: str, *operations: str, **fields) -> AgentDefinition:
    return AgentDefinition(
        name=name,
        responsibility=fields.pop("responsibility", f"Does the {name} job."),
        operations=tuple(Operation(op, noop) for op in operations),
        **fields,
    )


def messages(reg: Registry) -> list[str]:
    return [error.msg for error in check_agent_boundaries(reg)]


def test_a_clean_registry_passes():
    reg = Registry()
    reg.register(agent("alpha", "a1", emits=frozenset({"alpha.done"})))
    reg.register(agent("beta", "b1"))
    reg.subscribe("alpha.done", "beta", "b1")

    assert messages(reg) == []


def test_an_operation_owned_by_two_agents_is_refused():
    reg = Registry()
    reg.register(agent("alpha", "shared"))
    reg.register(agent("beta", "shared"))

    assert messages(reg) == ["operation 'shared' is owned by several agents: alpha, beta"]


def test_a_model_written_by_two_agents_is_refused():
    reg = Registry()
    reg.register(agent("alpha", "a1", writes=frozenset({"auth.User"})))
    reg.register(agent("beta", "b1", writes=frozenset({"auth.User"})))

    assert messages(reg) == ["model 'auth.User' is written by several agents: alpha, beta"]


def test_an_event_nobody_hears_must_be_marked_terminal():
    reg = Registry()
    reg.register(agent("alpha", "a1", emits=frozenset({"alpha.shouted"})))
    assert messages(reg) == ["agent 'alpha' emits 'alpha.shouted', which has no subscriber and is not marked terminal"]

    reg.agents.clear()
    reg.register(agent("alpha", "a1", emits=frozenset({"alpha.shouted"}), terminal_events=frozenset({"alpha.shouted"})))
    assert messages(reg) == []


def test_a_responsibility_with_and_is_refused():
    reg = Registry()
    reg.register(agent("alpha", "a1", responsibility="Charges and ships orders."))

    assert "agent 'alpha' has a responsibility with 'and' in it" in messages(reg)[0]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (("x", "ghost", "a1"), "routing sends 'x' to unknown agent 'ghost'"),
        (("x", "alpha", "nope"), "routing sends 'x' to agent 'alpha', which has no operation 'nope'"),
    ],
)
def test_routing_to_an_unknown_agent_or_operation_is_refused(route, expected):
    reg = Registry()
    reg.register(agent("alpha", "a1"))
    reg.subscribe(*route)

    assert messages(reg) == [expected]


def test_the_projects_own_agents_pass_manage_py_check():
    call_command("check", fail_level="ERROR")  # raises SystemCheckError on any violation


def test_an_operation_asking_for_a_lease_above_the_maximum_is_refused():
    reg = Registry()
    reg.register(
        AgentDefinition(
            name="slow", responsibility="Thinks.", operations=(Operation("think", noop, lease_seconds=900),)
        )
    )
    reg.register(agent("quick", "answer"))

    assert [error.msg for error in check_leases(reg, default_lease=60, max_lease=600)] == [
        "agent 'slow' operation 'think' asks for a lease of 900 s, above AGENT_TASK_MAX_LEASE_SECONDS (600 s)"
    ]
    assert check_leases(reg, default_lease=60, max_lease=900) == []


def test_a_maximum_lease_above_the_ceiling_on_one_attempt_is_refused():
    errors = check_leases(Registry(), default_lease=60, max_lease=600, max_runtime=300)

    assert [(error.id, error.msg) for error in errors] == [
        (
            "orchestration.E010",
            "AGENT_TASK_MAX_LEASE_SECONDS (600) is above AGENT_TASK_MAX_RUNTIME_SECONDS (300), "
            "the ceiling on one attempt",
        )
    ]


def test_the_leases_and_compensations_claims_read_follow_every_registration():
    reg = Registry()
    reg.register(
        AgentDefinition(name="alpha", responsibility="Does.", operations=(Operation("slow", noop, lease_seconds=90),))
    )
    assert (reg.leases(), reg.uncounted()) == ({"alpha.slow": 90}, [])

    reg.register(
        AgentDefinition(name="beta", responsibility="Undoes.", operations=(Operation("undo", noop, compensation=True),))
    )

    assert (reg.leases(), reg.uncounted()) == ({"alpha.slow": 90}, ["beta.undo"])
