"""The authorisation policy (casbin, RBAC with domains): every role x action cell, in the
caller's team, in another team and on the platform, and the reasons it gives."""

from __future__ import annotations

import copy

import pytest

from mlops.governance.identities import PLATFORM, Principal, Role, parse_governance
from mlops.governance.policy import (
    GRANTS,
    Action,
    Policy,
    granting_roles,
    role_action_table,
)

TEAMS = {
    "platform": {
        "admins": [{"name": "ops", "credential": "env:OPS"}],
        "service_accounts": [
            {"name": "fairshare-controller", "role": "controller", "credential": "env:CTL"},
            {"name": "ci", "role": "deployer", "credential": "env:CI"}]},
    "teams": [
        {"name": "alpha", "members": [
            {"name": "viv", "roles": ["viewer"], "credential": "env:VIV"},
            {"name": "rui", "roles": ["runner"], "credential": "env:RUI"},
            {"name": "ada", "roles": ["approver"], "credential": "env:ADA"}]},
        {"name": "beta", "members": [
            {"name": "bo", "roles": ["runner", "approver"], "credential": "env:BO"}]},
    ],
}
BY_ROLE = {Role.VIEWER: "viv", Role.RUNNER: "rui", Role.APPROVER: "ada", Role.ADMIN: "ops",
           Role.CONTROLLER: "fairshare-controller", Role.DEPLOYER: "ci"}
# The README's table, restated: what each role may do in its own team (team roles) or in
# every team (platform roles). Anything not listed is refused.
EXPECTED = {
    Role.VIEWER: {Action.READ},
    Role.RUNNER: {Action.READ, Action.RUN_TRIGGER, Action.RUN_CANCEL, Action.RUN_PAUSE,
                  Action.RUN_RESUME, Action.RUN_RETRY, Action.RUN_SET_STATE,
                  Action.DEPLOYMENT_PAUSE, Action.DEPLOYMENT_RESUME},
    Role.APPROVER: {Action.READ, Action.RUN_TRIGGER, Action.RUN_TRIGGER_HIGH,
                    Action.RUN_CANCEL, Action.RUN_PAUSE, Action.RUN_RESUME, Action.RUN_RETRY,
                    Action.RUN_SET_STATE, Action.DEPLOYMENT_PAUSE, Action.DEPLOYMENT_RESUME,
                    Action.RUN_APPROVE},
    Role.ADMIN: set(Action),
    Role.CONTROLLER: {Action.READ, Action.QUEUE_LIMIT, Action.RUN_REQUEUE, Action.RUN_CANCEL,
                      Action.RUN_REPORT, Action.FLOW_REGISTER},
    Role.DEPLOYER: {Action.READ, Action.DEPLOYMENT_WRITE, Action.FLOW_REGISTER},
}
TEAM_ROLES = (Role.VIEWER, Role.RUNNER, Role.APPROVER)


@pytest.fixture(scope="module")
def setup() -> tuple[Policy, dict[str, Principal]]:
    governance = parse_governance(copy.deepcopy(TEAMS))
    people = {name: identity.principal for name, identity in governance.identities.items()}
    return Policy(governance), people


def test_the_table_is_the_grants() -> None:
    table = role_action_table()
    for role in Role:
        assert {a for a, allowed in table[role].items() if allowed} == EXPECTED[role], role


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_each_cell_in_the_own_team(setup: tuple, role: Role, action: Action) -> None:
    policy, people = setup
    decision = policy.decide(people[BY_ROLE[role]], action, "alpha")
    assert decision.allowed == (action in EXPECTED[role]), decision.reason


@pytest.mark.parametrize("role", TEAM_ROLES)
@pytest.mark.parametrize("action", list(Action))
def test_a_team_role_allows_only_reads_in_another_team(setup: tuple, role: Role,
                                                        action: Action) -> None:
    policy, people = setup
    decision = policy.decide(people[BY_ROLE[role]], action, "beta")
    assert decision.allowed == (action == Action.READ), decision.reason


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_on_the_platform_only_platform_roles_act(setup: tuple, role: Role,
                                                  action: Action) -> None:
    """What no team owns (pools, flows, a service's own runs) takes a platform role."""
    policy, people = setup
    decision = policy.decide(people[BY_ROLE[role]], action, PLATFORM)
    platform_role = role not in TEAM_ROLES
    assert decision.allowed == (action == Action.READ or (
        platform_role and action in EXPECTED[role])), decision.reason


def test_reasons_name_the_caller_the_team_and_the_roles_needed(setup: tuple) -> None:
    policy, people = setup
    refused = policy.decide(people["rui"], Action.RUN_TRIGGER_HIGH, "alpha")
    assert not refused.allowed
    assert refused.reason == ("rui may not run.trigger-high in team alpha: it holds runner "
                              "there, and run.trigger-high needs approver, admin")
    other = policy.decide(people["bo"], Action.RUN_CANCEL, "alpha")
    assert "holds no role there" in other.reason and "team alpha" in other.reason
    allowed = policy.decide(people["bo"], Action.RUN_TRIGGER_HIGH, "beta")
    assert allowed.allowed and allowed.reason.endswith("as approver")


def test_an_identity_not_in_the_file_may_do_nothing(setup: tuple) -> None:
    policy, _ = setup
    stranger = Principal("mallory", "person", {"alpha": frozenset({Role.ADMIN})})
    assert not policy.decide(stranger, Action.READ, "alpha").allowed
    assert not policy.decide(stranger, Action.RUN_TRIGGER, "alpha").allowed


def test_every_action_is_granted_to_someone_and_roles_are_listed() -> None:
    granted = {action for actions in GRANTS.values() for action in actions}
    assert granted == set(Action)
    assert granting_roles(Action.QUEUE_LIMIT) == ["admin", "controller"]
    assert granting_roles(Action.READ) == ["any identity of the teams file"]
