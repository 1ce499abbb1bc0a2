"""What a Prefect REST call does, in the policy's words: (action, what it acts on).

Pure: from the method, the path under ``/api``, the query and the JSON body alone; which
team owns a deployment, run or queue is looked up afterwards (``ownership``). Every route of
Prefect 3.9's API is either a read or a classified write; a write this module does not know
is ``platform.write``, which only admins hold (default deny).

Reads: GET, and the POSTs that only query (``/filter``, ``/count``, ``/paginate``,
``/history`` and the UI's other read endpoints), except those that reveal secrets
(``include_secrets`` on block documents). The server's settings are a read: Prefect
obfuscates their secret values, and the UI reads them (whether analytics are on).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlops.governance.policy import Action

_ID = r"[0-9a-fA-F-]{36}"
# POST endpoints that only read: the last path segment (or the one before a path parameter).
_READ_POSTS = re.compile(
    r".*/(filter|count|paginate|history|lateness|next|count-by/[^/]+|count-deployments|"
    r"next-runs|counts|count-task-runs|validate|concurrency_status)$")
_RUN_STATES = {"CANCELLING": Action.RUN_CANCEL, "CANCELLED": Action.RUN_CANCEL,
               "PAUSED": Action.RUN_PAUSE, "SCHEDULED": Action.RUN_RETRY,
               "COMPLETED": Action.RUN_SET_STATE, "FAILED": Action.RUN_SET_STATE,
               "CRASHED": Action.RUN_SET_STATE}
_INFRA = ("work_pools", "work_queues", "concurrency_limits")
_DEPLOYMENT_RESOURCE = "prefect.deployment."
TargetKind = Literal["platform", "team", "deployment", "run", "queue", "queue-id"]


@dataclass(frozen=True)
class Target:
    """What a call acts on: the platform, a team by name, or an object whose team is
    looked up (a deployment or run by id, a queue by name or id)."""

    kind: TargetKind
    key: str = ""


PLATFORM_TARGET = Target("platform")


@dataclass(frozen=True)
class Route:
    """A classified call. ``trigger``: a new run from a deployment, whose body is checked
    (team, queue, priority) before the policy decides."""

    action: Action
    target: Target = PLATFORM_TARGET
    trigger: bool = False
    bulk: bool = False


def classify(method: str, path: str, query: Mapping[str, str], body: Any) -> Route:
    """The route of a call to ``/api{path}``."""
    method = method.upper()
    parts = [part for part in path.split("/") if part] or [""]
    if method in ("GET", "HEAD", "OPTIONS"):
        return _classify_read(parts, query)
    if method == "POST" and _READ_POSTS.match("/" + "/".join(parts)):
        if parts == ["block_documents", "filter"] and isinstance(body, dict) and body.get(
                "include_secrets"):
            return Route(Action.READ_SECRETS)
        return Route(Action.READ)
    body = body if isinstance(body, (dict, list)) else {}
    for classifier in (_deployment_write, _run_write, _queue_write, _report_write,
                       _trigger_write):
        route = classifier(method, parts, body)
        if route is not None:
            return route
    if method == "POST" and parts == ["flows"]:
        return Route(Action.FLOW_REGISTER)
    if parts[0] in _INFRA or parts[:2] == ["v2", "concurrency_limits"]:
        return Route(Action.INFRA_WRITE)
    return Route(Action.PLATFORM_WRITE)


def classify_socket(path: str) -> Route:
    """WebSocket routes: the event and log streams are reads; emitting events is a flow
    run's report; worker and task-worker channels are the platform's own."""
    parts = [part for part in path.split("/") if part]
    if parts in (["events", "out"], ["logs", "out"]):
        return Route(Action.READ)
    if parts == ["events", "in"]:
        return Route(Action.RUN_REPORT)
    return Route(Action.PLATFORM_WRITE)


def _classify_read(parts: list[str], query: Mapping[str, str]) -> Route:
    secrets = str(query.get("include_secrets", "")).lower() in ("1", "true", "yes")
    if secrets:
        return Route(Action.READ_SECRETS)
    return Route(Action.READ)


def _deployment_write(method: str, parts: list[str], body: dict | list) -> Route | None:
    if parts[0] != "deployments":
        return None
    if len(parts) == 1 and method == "POST":
        return Route(Action.DEPLOYMENT_WRITE, _team_of_tags(body))
    if len(parts) == 1 or not re.fullmatch(_ID, parts[1]):
        # bulk_delete, get_scheduled_flow_runs (what workers poll): the platform's
        action = Action.DEPLOYMENT_DELETE if parts[-1] == "bulk_delete" else Action.PLATFORM_WRITE
        return Route(action)
    target, rest = Target("deployment", parts[1]), parts[2:]
    if rest[:1] == ["create_flow_run"]:
        return Route(Action.RUN_TRIGGER, target, trigger=True, bulk=rest[1:] == ["bulk"])
    if rest == ["pause_deployment"]:
        return Route(Action.DEPLOYMENT_PAUSE, target)
    if rest == ["resume_deployment"]:
        return Route(Action.DEPLOYMENT_RESUME, target)
    if not rest and method == "DELETE":
        return Route(Action.DEPLOYMENT_DELETE, target)
    if not rest and method == "PATCH" and isinstance(body, dict) and set(body) == {"paused"}:
        paused = Action.DEPLOYMENT_PAUSE if body["paused"] else Action.DEPLOYMENT_RESUME
        return Route(paused, target)
    return Route(Action.DEPLOYMENT_WRITE, target)  # update, schedules, /schedule


def _run_write(method: str, parts: list[str], body: dict | list) -> Route | None:
    if parts[0] != "flow_runs":
        return None
    if len(parts) == 1 and method == "POST":
        # A run outside deployments (a service's own flow run); with a deployment or
        # queue it would be a trigger that skips the trigger's checks.
        placed = isinstance(body, dict) and any(body.get(key) for key in (
            "deployment_id", "work_queue_id", "work_queue_name", "work_pool_name"))
        return Route(Action.PLATFORM_WRITE if placed else Action.RUN_REPORT)
    if len(parts) == 1 or not re.fullmatch(_ID, parts[1]):
        action = Action.RUN_DELETE if parts[-1] == "bulk_delete" else Action.RUN_EXECUTE
        return Route(action)  # bulk operations span teams: admins only
    target, rest = Target("run", parts[1]), parts[2:]
    if rest == ["set_state"]:
        state = body.get("state") if isinstance(body, dict) else None
        kind = str(state.get("type", "")).upper() if isinstance(state, dict) else ""
        return Route(_RUN_STATES.get(kind, Action.RUN_EXECUTE), target)
    if rest[:1] in (["resume"], ["input"]):
        return Route(Action.RUN_RESUME, target)
    if not rest and method == "DELETE":
        return Route(Action.RUN_DELETE, target)
    return Route(Action.RUN_EXECUTE, target)  # PATCH of a run or its labels: the engine's


def _queue_write(method: str, parts: list[str], body: dict | list) -> Route | None:
    """A team queue's concurrency limit alone (what the fair-share controller sets); any
    other change of pools or queues is infrastructure."""
    limit_only = method == "PATCH" and isinstance(body, dict) and set(body) == {
        "concurrency_limit"}
    if not limit_only:
        return None
    if parts[0] == "work_pools" and len(parts) == 4 and parts[2] == "queues":
        return Route(Action.QUEUE_LIMIT, Target("queue", parts[3]))
    if parts[0] == "work_queues" and len(parts) == 2 and re.fullmatch(_ID, parts[1]):
        return Route(Action.QUEUE_LIMIT, Target("queue-id", parts[1]))
    return None


def _team_of_tags(body: dict | list) -> Target:
    """A new deployment's team: its ``team:<name>`` tag, else the platform's."""
    tags = body.get("tags") if isinstance(body, dict) else None
    teams = sorted({tag[5:] for tag in tags or [] if isinstance(tag, str)
                    and tag.startswith("team:")})
    return Target("team", teams[0]) if len(teams) == 1 else PLATFORM_TARGET


def _report_write(method: str, parts: list[str], body: dict | list) -> Route | None:
    """What a flow run outside deployments reports: its task runs, logs, artifacts and
    events (workers report theirs to the server directly)."""
    if parts[0] in ("logs", "artifacts", "events") and len(parts) == 1 and method == "POST":
        return Route(Action.RUN_REPORT)
    if parts[0] != "task_runs":
        return None
    return Route(Action.RUN_DELETE if method == "DELETE" else Action.RUN_REPORT)


def _trigger_write(method: str, parts: list[str], body: dict | list) -> Route | None:
    """A deployment's triggers (automations it owns) are part of the deployment: `prefect
    deploy` replaces them."""
    if parts[0] != "automations":
        return None
    owner = ""
    if method == "DELETE" and len(parts) == 3 and parts[1] == "owned-by":
        owner = parts[2]
    elif method == "POST" and len(parts) == 1 and isinstance(body, dict):
        owner = str(body.get("owner_resource") or "")
    if owner.startswith(_DEPLOYMENT_RESOURCE):
        return Route(Action.DEPLOYMENT_WRITE,
                     Target("deployment", owner[len(_DEPLOYMENT_RESOURCE):]))
    return None
