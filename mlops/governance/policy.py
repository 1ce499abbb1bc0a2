"""Who may do what: role-based access with domains (a team is a domain), decided by casbin.

The model is fixed and small: a request is (identity, team, action); the teams file gives
each identity its roles per team (``g`` lines, ``PLATFORM`` for the roles that hold in every
team), and ``GRANTS`` below gives each role its actions (``p`` lines). Nothing else is
allowed: an action no role of the caller grants in that team is refused (default deny).

The decisions this encodes (the README's role x action table is ``role_action_table``):

- every authenticated identity may read every team's metadata (deployments, runs, states,
  logs, artifacts, events, pools, queues, limits): the Prefect UI is a platform-wide view,
  fair share is about slots, not secrecy, and datasets are guarded where they are read
  (residency), not in Prefect. Reads that reveal secrets (block documents with their secret
  values, the teams file) are for admins only;
- a runner starts (normal or low priority), cancels, pauses, resumes and retries its team's
  runs and pauses or resumes its team's deployments' schedules; an approver may also start
  high-priority runs, which go ahead of the team's other runs, and answer a run waiting for
  an approver (the gateway names the approver in the answer);
- deleting runs or deployments is for admins only: runs are what GPU-hour budgets are
  metered from, so a deleted run would hand its hours back;
- the deployer (CI) registers flows and creates and updates deployments of every team;
- the fair-share controller sets team queues' concurrency limits, requeues and cancels the
  runs it preempts, and reports its own flow run (logs, artifacts, events); nothing else;
- pools, queues, limits, blocks, variables, automations and the teams file: admins only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import casbin

from mlops.governance.identities import PLATFORM, Governance, Principal, Role

AUTHENTICATED = "authenticated"  # the pseudo-role every identity holds in every team


class Action(StrEnum):
    READ = "read"
    READ_SECRETS = "read-secrets"
    RUN_TRIGGER = "run.trigger"  # a run at normal or low priority
    RUN_TRIGGER_HIGH = "run.trigger-high"
    RUN_CANCEL = "run.cancel"
    RUN_PAUSE = "run.pause"
    RUN_RESUME = "run.resume"
    RUN_APPROVE = "run.approve"  # answer a run waiting for an approver (its resume form)
    RUN_RETRY = "run.retry"  # a finished run scheduled again
    RUN_SET_STATE = "run.set-state"  # marked completed, failed or crashed by a person
    RUN_EXECUTE = "run.execute"  # pending or running: what workers do
    RUN_DELETE = "run.delete"
    RUN_REQUEUE = "run.requeue"  # a preempted run's copy
    RUN_REPORT = "run.report"  # a flow run outside deployments, its logs, artifacts, events
    RUN_JOB_VARIABLES = "run.job-variables"  # overriding what a worker executes
    DEPLOYMENT_PAUSE = "deployment.pause"
    DEPLOYMENT_RESUME = "deployment.resume"
    DEPLOYMENT_WRITE = "deployment.write"  # create or update deployments, their schedules
    DEPLOYMENT_DELETE = "deployment.delete"
    FLOW_REGISTER = "flow.register"
    QUEUE_LIMIT = "queue.limit"  # a team queue's concurrency limit
    INFRA_WRITE = "infra.write"  # pools, queues, concurrency limits
    TEAMS_WRITE = "teams.write"  # the teams file
    PLATFORM_WRITE = "platform.write"  # everything else that changes the server


_RUNNER = (Action.RUN_TRIGGER, Action.RUN_CANCEL, Action.RUN_PAUSE, Action.RUN_RESUME,
           Action.RUN_RETRY, Action.RUN_SET_STATE, Action.DEPLOYMENT_PAUSE,
           Action.DEPLOYMENT_RESUME)
GRANTS: dict[str, tuple[Action, ...]] = {
    AUTHENTICATED: (Action.READ,),
    Role.VIEWER: (),
    Role.RUNNER: _RUNNER,
    Role.APPROVER: (*_RUNNER, Action.RUN_TRIGGER_HIGH, Action.RUN_APPROVE),
    Role.ADMIN: tuple(Action),
    Role.CONTROLLER: (Action.QUEUE_LIMIT, Action.RUN_REQUEUE, Action.RUN_CANCEL,
                      Action.RUN_REPORT, Action.FLOW_REGISTER),
    Role.DEPLOYER: (Action.DEPLOYMENT_WRITE, Action.FLOW_REGISTER),
}

MODEL = """
[request_definition]
r = sub, dom, act

[policy_definition]
p = role, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (g(r.sub, p.role, r.dom) || g(r.sub, p.role, "*")) && r.act == p.act
"""


@dataclass(frozen=True)
class Decision:
    """Whether a request is allowed, and why, in words fit for a 403 or an audit line."""

    allowed: bool
    reason: str
    action: Action
    team: str


class Policy:
    """The casbin enforcer of one teams file's identities."""

    def __init__(self, governance: Governance) -> None:
        model = casbin.Enforcer.new_model(text=MODEL)
        self._enforcer = casbin.Enforcer(model)
        self._enforcer.add_policies([[role, action] for role, actions in GRANTS.items()
                                     for action in actions])
        links = [[name, AUTHENTICATED, PLATFORM] for name in governance.identities]
        for name, identity in governance.identities.items():
            links += [[name, role, team] for team, roles in identity.principal.roles.items()
                      for role in roles]
        self._enforcer.add_grouping_policies(links)

    def decide(self, principal: Principal, action: Action, team: str = PLATFORM) -> Decision:
        """Whether ``principal`` may do ``action`` in ``team`` (``PLATFORM``: an action on
        what no team owns, which only platform roles hold)."""
        allowed, rule = self._enforcer.enforce_ex(principal.name, team, str(action))
        where = "the platform" if team == PLATFORM else f"team {team}"
        if allowed:
            return Decision(True, f"{principal.name} may {action} in {where} as {rule[0]}",
                            action, team)
        held = sorted(principal.roles_in(team)) if team != PLATFORM else sorted(
            principal.roles.get(PLATFORM, frozenset()))
        needs = ", ".join(granting_roles(action))
        return Decision(False, f"{principal.name} may not {action} in {where}: it holds "
                        f"{', '.join(held) or 'no role'} there, and {action} needs {needs}",
                        action, team)


def granting_roles(action: Action) -> list[str]:
    """The roles that grant an action (team roles in that team, platform roles anywhere)."""
    if action in GRANTS[AUTHENTICATED]:
        return ["any identity of the teams file"]
    return [str(role) for role, actions in GRANTS.items() if action in actions]


def role_action_table() -> dict[Role, dict[Action, bool]]:
    """Role x action: whether the role allows the action (in its own team, for team roles)."""
    return {role: {action: action in GRANTS[AUTHENTICATED] or action in GRANTS[role]
                   for action in Action} for role in Role}
