"""Classification of Prefect's REST calls: every write route of the installed server has a
stated action (a new route fails here until someone decides what it is), reads are reads,
and bodies decide what a state change, a queue update or a new deployment is."""

from __future__ import annotations

import re

import pytest

from infra.gateway.routes import Target, classify, classify_socket
from mlops.governance.policy import Action

ID = "9f0c3f6a-1d2e-4c5b-8a7f-0123456789ab"
# Every non-GET route of Prefect 3.9.1's API and what it is, with an empty body.
WRITES = {
    ("PUT", "/admin/storage"): "platform.write",
    ("DELETE", "/admin/storage"): "platform.write",
    ("POST", "/artifacts/"): "run.report",
    ("POST", "/artifacts/count"): "read",
    ("POST", "/artifacts/filter"): "read",
    ("POST", "/artifacts/latest/count"): "read",
    ("POST", "/artifacts/latest/filter"): "read",
    ("PATCH", "/artifacts/{id}"): "platform.write",
    ("DELETE", "/artifacts/{id}"): "platform.write",
    ("POST", "/automations/"): "platform.write",
    ("POST", "/automations/count"): "read",
    ("POST", "/automations/filter"): "read",
    ("DELETE", "/automations/owned-by/{resource_id}"): "platform.write",
    ("POST", "/automations/templates/validate"): "read",
    ("PUT", "/automations/{id}"): "platform.write",
    ("PATCH", "/automations/{id}"): "platform.write",
    ("DELETE", "/automations/{id}"): "platform.write",
    ("POST", "/block_documents/"): "platform.write",
    ("POST", "/block_documents/count"): "read",
    ("POST", "/block_documents/filter"): "read",
    ("DELETE", "/block_documents/{id}"): "platform.write",
    ("PATCH", "/block_documents/{id}"): "platform.write",
    ("POST", "/block_schemas/"): "platform.write",
    ("POST", "/block_schemas/filter"): "read",
    ("DELETE", "/block_schemas/{id}"): "platform.write",
    ("POST", "/block_types/"): "platform.write",
    ("POST", "/block_types/filter"): "read",
    ("POST", "/block_types/install_system_block_types"): "platform.write",
    ("PATCH", "/block_types/{id}"): "platform.write",
    ("DELETE", "/block_types/{id}"): "platform.write",
    ("POST", "/concurrency_limits/"): "infra.write",
    ("POST", "/concurrency_limits/decrement"): "infra.write",
    ("POST", "/concurrency_limits/filter"): "read",
    ("POST", "/concurrency_limits/increment"): "infra.write",
    ("DELETE", "/concurrency_limits/tag/{tag}"): "infra.write",
    ("POST", "/concurrency_limits/tag/{tag}/reset"): "infra.write",
    ("DELETE", "/concurrency_limits/{id}"): "infra.write",
    ("POST", "/deployments/"): "deployment.write",
    ("POST", "/deployments/bulk_delete"): "deployment.delete",
    ("POST", "/deployments/count"): "read",
    ("POST", "/deployments/filter"): "read",
    ("POST", "/deployments/get_scheduled_flow_runs"): "platform.write",
    ("POST", "/deployments/paginate"): "read",
    ("PATCH", "/deployments/{id}"): "deployment.write",
    ("DELETE", "/deployments/{id}"): "deployment.delete",
    ("POST", "/deployments/{id}/create_flow_run"): "run.trigger",
    ("POST", "/deployments/{id}/create_flow_run/bulk"): "run.trigger",
    ("POST", "/deployments/{id}/pause_deployment"): "deployment.pause",
    ("POST", "/deployments/{id}/resume_deployment"): "deployment.resume",
    ("POST", "/deployments/{id}/schedule"): "deployment.write",
    ("POST", "/deployments/{id}/schedules"): "deployment.write",
    ("PATCH", "/deployments/{id}/schedules/{schedule_id}"): "deployment.write",
    ("DELETE", "/deployments/{id}/schedules/{schedule_id}"): "deployment.write",
    ("POST", "/events"): "run.report",
    ("POST", "/events/count-by/{countable}"): "read",
    ("POST", "/events/filter"): "read",
    ("POST", "/flow_runs/"): "run.report",
    ("POST", "/flow_runs/bulk_delete"): "run.delete",
    ("POST", "/flow_runs/bulk_set_state"): "run.execute",
    ("POST", "/flow_runs/count"): "read",
    ("POST", "/flow_runs/filter"): "read",
    ("POST", "/flow_runs/history"): "read",
    ("POST", "/flow_runs/lateness"): "read",
    ("POST", "/flow_runs/paginate"): "read",
    ("PATCH", "/flow_runs/{id}"): "run.execute",
    ("DELETE", "/flow_runs/{id}"): "run.delete",
    ("POST", "/flow_runs/{id}/input"): "run.resume",
    ("POST", "/flow_runs/{id}/input/filter"): "read",
    ("DELETE", "/flow_runs/{id}/input/{key}"): "run.resume",
    ("PATCH", "/flow_runs/{id}/labels"): "run.execute",
    ("POST", "/flow_runs/{id}/resume"): "run.resume",
    ("POST", "/flow_runs/{id}/set_state"): "run.execute",
    ("POST", "/flows/"): "flow.register",
    ("POST", "/flows/bulk_delete"): "platform.write",
    ("POST", "/flows/count"): "read",
    ("POST", "/flows/filter"): "read",
    ("POST", "/flows/paginate"): "read",
    ("PATCH", "/flows/{id}"): "platform.write",
    ("DELETE", "/flows/{id}"): "platform.write",
    ("POST", "/logs/"): "run.report",
    ("POST", "/logs/filter"): "read",
    ("PUT", "/saved_searches/"): "platform.write",
    ("POST", "/saved_searches/filter"): "read",
    ("DELETE", "/saved_searches/{id}"): "platform.write",
    ("POST", "/task_runs/"): "run.report",
    ("POST", "/task_runs/count"): "read",
    ("POST", "/task_runs/filter"): "read",
    ("POST", "/task_runs/history"): "read",
    ("POST", "/task_runs/paginate"): "read",
    ("PATCH", "/task_runs/{id}"): "run.report",
    ("DELETE", "/task_runs/{id}"): "run.delete",
    ("POST", "/task_runs/{id}/set_state"): "run.report",
    ("POST", "/task_workers/filter"): "read",
    ("POST", "/templates/validate"): "read",
    ("POST", "/ui/flow_runs/count-task-runs"): "read",
    ("POST", "/ui/flow_runs/history"): "read",
    ("POST", "/ui/flows/count-deployments"): "read",
    ("POST", "/ui/flows/next-runs"): "read",
    ("POST", "/ui/schemas/validate"): "read",
    ("POST", "/ui/task_runs/count"): "read",
    ("POST", "/ui/task_runs/dashboard/counts"): "read",
    ("POST", "/v2/concurrency_limits/"): "infra.write",
    ("POST", "/v2/concurrency_limits/decrement"): "infra.write",
    ("POST", "/v2/concurrency_limits/decrement-with-lease"): "infra.write",
    ("POST", "/v2/concurrency_limits/filter"): "read",
    ("POST", "/v2/concurrency_limits/increment"): "infra.write",
    ("POST", "/v2/concurrency_limits/increment-with-lease"): "infra.write",
    ("POST", "/v2/concurrency_limits/leases/{lease_id}/renew"): "infra.write",
    ("PATCH", "/v2/concurrency_limits/{id_or_name}"): "infra.write",
    ("DELETE", "/v2/concurrency_limits/{id_or_name}"): "infra.write",
    ("POST", "/variables/"): "platform.write",
    ("POST", "/variables/count"): "read",
    ("POST", "/variables/filter"): "read",
    ("PATCH", "/variables/name/{name}"): "platform.write",
    ("DELETE", "/variables/name/{name}"): "platform.write",
    ("PATCH", "/variables/{id}"): "platform.write",
    ("DELETE", "/variables/{id}"): "platform.write",
    ("POST", "/work_pools/"): "infra.write",
    ("POST", "/work_pools/count"): "read",
    ("POST", "/work_pools/filter"): "read",
    ("PATCH", "/work_pools/{name}"): "infra.write",
    ("DELETE", "/work_pools/{name}"): "infra.write",
    ("POST", "/work_pools/{name}/concurrency_status"): "read",
    ("POST", "/work_pools/{name}/get_scheduled_flow_runs"): "infra.write",
    ("POST", "/work_pools/{work_pool_name}/queues"): "infra.write",
    ("POST", "/work_pools/{work_pool_name}/queues/filter"): "read",
    ("PATCH", "/work_pools/{work_pool_name}/queues/{name}"): "infra.write",
    ("DELETE", "/work_pools/{work_pool_name}/queues/{name}"): "infra.write",
    ("POST", "/work_pools/{work_pool_name}/workers/filter"): "read",
    ("POST", "/work_pools/{work_pool_name}/workers/heartbeat"): "infra.write",
    ("DELETE", "/work_pools/{work_pool_name}/workers/{name}"): "infra.write",
    ("POST", "/work_queues/"): "infra.write",
    ("POST", "/work_queues/filter"): "read",
    ("PATCH", "/work_queues/{id}"): "infra.write",
    ("DELETE", "/work_queues/{id}"): "infra.write",
    ("POST", "/work_queues/{id}/concurrency_status"): "read",
    ("POST", "/work_queues/{id}/get_runs"): "infra.write",
}


@pytest.fixture(scope="module")
def server_routes() -> set[tuple[str, str]]:
    from prefect.server.api.server import create_api_app

    spec = create_api_app().openapi()
    return {(method.upper(), path) for path, operations in spec["paths"].items()
            for method in operations}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: ID if m.group(0) == "{id}" else "x", path)


def test_every_write_route_of_the_server_is_classified(server_routes: set) -> None:
    writes = {route for route in server_routes if route[0] != "GET"}
    assert writes - set(WRITES) == set(), "new routes: decide what they are"
    assert set(WRITES) - writes == set(), "routes the server no longer has"
    for (method, path), action in WRITES.items():
        assert classify(method, _concrete(path), {}, {}).action == action, (method, path)


def test_gets_are_reads_except_secrets(server_routes: set) -> None:
    for method, path in sorted(r for r in server_routes if r[0] == "GET"):
        assert classify(method, _concrete(path), {}, None).action == Action.READ, path
    secret = classify("GET", f"/block_documents/{ID}", {"include_secrets": "true"}, None)
    assert secret.action == Action.READ_SECRETS
    body = {"include_secrets": True}
    assert classify("POST", "/block_documents/filter", {}, body).action == Action.READ_SECRETS


@pytest.mark.parametrize(("state", "action"), [
    ("CANCELLING", Action.RUN_CANCEL), ("CANCELLED", Action.RUN_CANCEL),
    ("PAUSED", Action.RUN_PAUSE), ("SCHEDULED", Action.RUN_RETRY),
    ("COMPLETED", Action.RUN_SET_STATE), ("FAILED", Action.RUN_SET_STATE),
    ("RUNNING", Action.RUN_EXECUTE), ("PENDING", Action.RUN_EXECUTE)])
def test_a_state_change_is_what_the_new_state_is(state: str, action: Action) -> None:
    route = classify("POST", f"/flow_runs/{ID}/set_state", {}, {"state": {"type": state}})
    assert route.action == action and route.target == Target("run", ID)


def test_writes_name_what_they_act_on() -> None:
    trigger = classify("POST", f"/deployments/{ID}/create_flow_run", {}, {})
    assert trigger.trigger and not trigger.bulk and trigger.target == Target("deployment", ID)
    assert classify("POST", f"/deployments/{ID}/create_flow_run/bulk", {}, []).bulk
    paused = classify("PATCH", f"/deployments/{ID}", {}, {"paused": True})
    assert paused.action == Action.DEPLOYMENT_PAUSE
    assert classify("PATCH", f"/deployments/{ID}", {}, {"paused": False}).action == \
        Action.DEPLOYMENT_RESUME
    assert classify("PATCH", f"/deployments/{ID}", {}, {"paused": True, "tags": []}).action \
        == Action.DEPLOYMENT_WRITE
    new = classify("POST", "/deployments/", {}, {"name": "x", "tags": ["team:alpha", "a"]})
    assert new.action == Action.DEPLOYMENT_WRITE and new.target == Target("team", "alpha")
    assert classify("POST", "/deployments/", {}, {"tags": []}).target.kind == "platform"


def test_only_a_limit_alone_on_a_queue_is_the_controllers_queue_limit() -> None:
    limit = classify("PATCH", "/work_pools/gpu/queues/alpha", {}, {"concurrency_limit": 2})
    assert limit.action == Action.QUEUE_LIMIT and limit.target == Target("queue", "alpha")
    by_id = classify("PATCH", f"/work_queues/{ID}", {}, {"concurrency_limit": None})
    assert by_id.action == Action.QUEUE_LIMIT and by_id.target == Target("queue-id", ID)
    both = {"concurrency_limit": 2, "priority": 1}
    assert classify("PATCH", "/work_pools/gpu/queues/alpha", {}, both).action == \
        Action.INFRA_WRITE
    assert classify("PATCH", "/work_pools/gpu", {}, {"concurrency_limit": 2}).action == \
        Action.INFRA_WRITE


def test_a_run_outside_deployments_is_a_report_unless_it_is_placed_on_a_queue() -> None:
    assert classify("POST", "/flow_runs/", {}, {"flow_id": ID}).action == Action.RUN_REPORT
    placed = {"flow_id": ID, "deployment_id": ID}
    assert classify("POST", "/flow_runs/", {}, placed).action == Action.PLATFORM_WRITE


def test_a_deployments_own_triggers_are_the_deployments() -> None:
    owned = classify("DELETE", f"/automations/owned-by/prefect.deployment.{ID}", {}, None)
    assert owned.action == Action.DEPLOYMENT_WRITE and owned.target == Target("deployment", ID)
    new = classify("POST", "/automations/", {}, {"owner_resource": f"prefect.deployment.{ID}"})
    assert new.action == Action.DEPLOYMENT_WRITE and new.target == Target("deployment", ID)
    assert classify("POST", "/automations/", {}, {"name": "x"}).action == Action.PLATFORM_WRITE


def test_sockets() -> None:
    assert classify_socket("/events/out").action == Action.READ
    assert classify_socket("/logs/out").action == Action.READ
    assert classify_socket("/events/in").action == Action.RUN_REPORT
    assert classify_socket("/work_pools/gpu/workers/connect").action == Action.PLATFORM_WRITE
    assert classify_socket("/task_runs/subscriptions/scheduled").action == \
        Action.PLATFORM_WRITE
