"""The checks on a new run from a deployment, before the policy decides who may start it.

A run's team comes from its deployment (and the caller's roles in that team), never from a
free parameter: the body's ``params.team`` must be the deployment's team (it is filled in
when absent), its queue must be one of that team's queues, and no ``team:`` tag may name
another team. Broken, these refuse the run whoever asks, before it exists and so before it
can take a slot. What the run needs from the policy:

- ``run.trigger-high`` for the team's high queue or ``params.priority: high``, else
  ``run.trigger``;
- ``run.job-variables`` when it overrides the worker's job variables (a process worker
  would run another command);
- ``run.execute`` when it starts in a state other than SCHEDULED (past the queue);
- a preempted run's copy (tagged ``requeued-from:<id>``) needs ``run.requeue`` instead,
  and must keep the original's deployment, queue and parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from infra.gateway.ownership import DeploymentInfo, QueueOwners, RunInfo
from infra.prefect_api import REQUEUED_TAG
from mlops.governance.identities import PLATFORM
from mlops.governance.policy import Action

_KIND = "__prefect_kind"  # Prefect's hydration wrappers: json, jinja, workspace_variable


@dataclass(frozen=True)
class TriggerCheck:
    """What the policy must allow (``actions`` in ``team``), the body to send upstream,
    and ``refusal``: a rule broken that no role lifts."""

    team: str
    actions: tuple[Action, ...]
    body: dict[str, Any]
    refusal: str | None = None


def requeued_from(body: dict[str, Any]) -> str | None:
    """The id of the run a body claims to be a requeued copy of."""
    for tag in body.get("tags") or []:
        if isinstance(tag, str) and tag.startswith(REQUEUED_TAG):
            return tag[len(REQUEUED_TAG):]
    return None


def check_trigger(body: dict[str, Any], deployment: DeploymentInfo, owners: QueueOwners,
                  original: RunInfo | None = None) -> TriggerCheck:
    """Check one new run's body against its deployment (``original``: the run a requeued
    copy copies, looked up by the caller)."""
    team = deployment.team or PLATFORM
    if original is not None:
        return _check_copy(body, deployment, original, team)
    refusal = _queue_refusal(body, deployment, owners, team) or _tag_refusal(body, team)
    if refusal:
        return TriggerCheck(team, (Action.RUN_TRIGGER,), body, refusal)
    try:
        body, priority = _with_team(body, deployment, team)
    except ValueError as exc:
        return TriggerCheck(team, (Action.RUN_TRIGGER,), body, str(exc))
    queue = body.get("work_queue_name") or deployment.work_queue_name
    high = priority == "high" or owners.get(queue, ("", ""))[1] == "high"
    actions = [Action.RUN_TRIGGER_HIGH if high else Action.RUN_TRIGGER]
    if body.get("job_variables"):
        actions.append(Action.RUN_JOB_VARIABLES)
    state = body.get("state")
    if isinstance(state, dict) and str(state.get("type") or "SCHEDULED").upper() != "SCHEDULED":
        actions.append(Action.RUN_EXECUTE)
    return TriggerCheck(team, tuple(actions), body)


def _check_copy(body: dict[str, Any], deployment: DeploymentInfo, original: RunInfo,
                team: str) -> TriggerCheck:
    faithful = (original.deployment_id == deployment.id
                and body.get("work_queue_name") in (None, original.work_queue_name)
                and body.get("parameters") in (None, original.parameters))
    refusal = None if faithful else (
        f"a requeued copy must keep run {original.id}'s deployment, queue and parameters")
    return TriggerCheck(team, (Action.RUN_REQUEUE,), body, refusal)


def _queue_refusal(body: dict[str, Any], deployment: DeploymentInfo, owners: QueueOwners,
                   team: str) -> str | None:
    queue = body.get("work_queue_name") or deployment.work_queue_name
    owner = owners.get(queue)
    if team == PLATFORM or (owner is not None and owner[0] == team):
        return None
    whose = f"team {owner[0]}'s queue" if owner else "no team's queue"
    return (f"queue {queue!r} is {whose}; deployment {deployment.id} belongs to team "
            f"{team}: a run goes on a queue of its deployment's team")


def _tag_refusal(body: dict[str, Any], team: str) -> str | None:
    others = sorted({tag for tag in body.get("tags") or [] if isinstance(tag, str)
                     and tag.startswith("team:") and tag != f"team:{team}"})
    return f"tags {others} name another team than the deployment's ({team})" if others else None


def _with_team(body: dict[str, Any], deployment: DeploymentInfo,
               team: str) -> tuple[dict[str, Any], str]:
    """The body with ``params.team`` filled in, and the run's priority; ValueError when
    the team differs from the deployment's or cannot be read."""
    parameters = body.get("parameters")
    given = isinstance(parameters, dict) and "params" in parameters
    params = _plain(parameters["params"], "params") if given else deployment.parameters.get(
        "params")
    if not isinstance(params, dict) or team == PLATFORM:
        return body, "normal"
    named = _plain(params.get("team"), "params.team")
    if named is not None and named != team:
        raise ValueError(f"params.team {named!r} differs from the deployment's team {team!r}: "
                         "a run's team comes from its deployment, never from a parameter")
    priority = _plain(params.get("priority"), "params.priority") or "normal"
    if named is None and "team" in deployment.params_fields:
        filled = {**(parameters if given else {}), "params": {**params, "team": team}}
        body = {**body, "parameters": filled}
    return body, str(priority)


def _plain(value: Any, name: str) -> Any:
    """A parameter's value, unwrapping Prefect's ``json`` wrapper; templates (jinja,
    workspace variables) are refused where the team or priority is decided."""
    if isinstance(value, dict) and _KIND in value:
        if value[_KIND] != "json":
            raise ValueError(f"{name} must be a plain value here, not a {value[_KIND]} template")
        try:
            return json.loads(value.get("value") or "null")
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name} is not valid JSON: {exc.msg}") from None
    return value
