"""Which team owns a deployment, a run or a queue, read from the Prefect server.

- a queue: the teams file's queue names (``<team>``, ``<team>-high``, ``<team>-low``);
- a deployment: its ``team:<name>`` tag (deployments/prefect.yaml gives every team
  deployment one), else its work queue's team;
- a run: its deployment's team, else its work queue's team.
Anything else belongs to the platform (``PLATFORM``): only platform roles act on it.

Deployments change rarely and only through the gateway (the deployer, admins), so their
owner is cached for a short while and forgotten when a write to one passes; runs are read
each time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.gateway.routes import Target
from mlops.governance.identities import PLATFORM

QueueOwners = Mapping[str, tuple[str, str]]  # queue name -> (team, priority level)
GetJson = Callable[[str], Awaitable[Any]]  # GET /api{path} upstream: JSON, None if absent
DEPLOYMENT_TTL_S = 30.0


@dataclass(frozen=True)
class DeploymentInfo:
    """What a trigger is checked against: the deployment's team, queue and defaults."""

    id: str
    team: str | None
    work_queue_name: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    params_fields: frozenset[str] = frozenset()  # the fields of its ``params`` parameter
    name: str | None = None  # for the audit trail


@dataclass(frozen=True)
class RunInfo:
    id: str
    deployment_id: str | None
    work_queue_name: str | None
    parameters: dict[str, Any]
    tags: tuple[str, ...]
    state_type: str | None = None
    pause_key: str | None = None  # a paused run's key (``approval-<n>``: waits for approval)


def team_of_tags(tags: list[str] | tuple[str, ...]) -> str | None:
    """The one team a ``team:<name>`` tag names; None for none or several."""
    teams = {tag[5:] for tag in tags if isinstance(tag, str) and tag.startswith("team:")}
    return teams.pop() if len(teams) == 1 else None


class Ownership:
    """Owner look-ups on the upstream server (``get_json``: the gateway's own client)."""

    def __init__(self, get_json: GetJson, ttl_s: float = DEPLOYMENT_TTL_S) -> None:
        self._get, self._ttl_s = get_json, ttl_s
        self._deployments: dict[str, tuple[float, DeploymentInfo | None]] = {}

    async def deployment(self, deployment_id: str, owners: QueueOwners) -> DeploymentInfo | None:
        cached = self._deployments.get(deployment_id)
        if cached and time.monotonic() - cached[0] < self._ttl_s:
            return cached[1]
        body = await self._get(f"/deployments/{deployment_id}")
        info = None if body is None else DeploymentInfo(
            id=deployment_id,
            team=team_of_tags(body.get("tags") or []) or _queue_team(
                body.get("work_queue_name"), owners),
            work_queue_name=body.get("work_queue_name"),
            parameters=body.get("parameters") or {},
            params_fields=params_fields(body.get("parameter_openapi_schema") or {}),
            name=body.get("name"))
        self._deployments[deployment_id] = (time.monotonic(), info)
        return info

    def forget(self, deployment_id: str | None = None) -> None:
        """Drop a cached deployment (all of them without an id): it was just changed."""
        if deployment_id is None:
            self._deployments.clear()
        else:
            self._deployments.pop(deployment_id, None)

    async def run(self, run_id: str) -> RunInfo | None:
        body = await self._get(f"/flow_runs/{run_id}")
        if body is None:
            return None
        state = body.get("state") or {}
        return RunInfo(id=run_id, deployment_id=body.get("deployment_id"),
                       work_queue_name=body.get("work_queue_name"),
                       parameters=body.get("parameters") or {},
                       tags=tuple(body.get("tags") or ()), state_type=state.get("type"),
                       pause_key=(state.get("state_details") or {}).get("pause_key"))

    async def team(self, target: Target, owners: QueueOwners) -> str | None:
        """The team a target belongs to, ``PLATFORM`` for none; None when it does not exist
        (the server then answers 404 itself)."""
        if target.kind == "platform":
            return PLATFORM
        if target.kind == "team":
            return target.key
        if target.kind == "queue":
            return _queue_team(target.key, owners) or PLATFORM
        if target.kind == "queue-id":
            body = await self._get(f"/work_queues/{target.key}")
            return None if body is None else _queue_team(body.get("name"), owners) or PLATFORM
        if target.kind == "deployment":
            deployment = await self.deployment(target.key, owners)
            return None if deployment is None else deployment.team or PLATFORM
        run = await self.run(target.key)
        if run is None:
            return None
        return await self.team_of_run(run, owners)

    async def team_of_run(self, run: RunInfo, owners: QueueOwners) -> str:
        if run.deployment_id:
            deployment = await self.deployment(run.deployment_id, owners)
            if deployment is not None and deployment.team:
                return deployment.team
        return _queue_team(run.work_queue_name, owners) or PLATFORM

def _queue_team(name: str | None, owners: QueueOwners) -> str | None:
    return owners[name][0] if name in owners else None


def params_fields(schema: dict[str, Any]) -> frozenset[str]:
    """The field names of a flow's ``params`` parameter, from its OpenAPI schema (a
    ``$ref`` into the schema's definitions, perhaps wrapped in ``allOf``)."""
    node = (schema.get("properties") or {}).get("params") or {}
    if "allOf" in node and len(node["allOf"]) == 1:
        node = node["allOf"][0]
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        node = (schema.get("definitions") or schema.get("$defs") or {}).get(name) or {}
    return frozenset(node.get("properties") or {})
