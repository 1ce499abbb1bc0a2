"""Run triggers through the gateway (the real Starlette app) to a real Prefect server: an
allowed trigger is recorded (who, team, deployment, sha256 of the run's parameters) before
the run exists; a refused one is a ``request.refused`` in its team; with the audit trail
unable to record, the trigger is answered 503 and no run is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_URL

from tests.unit.test_gateway_audit import bearer, gateway, records, store_down


async def _deployment(pool: str) -> str:
    """Alpha's deployment on its queue, with default parameters, made on the server."""
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"),
                                      overwrite=True)
        flow_id = await client.create_flow_from_name("audited-job")
        deployment = await client.create_deployment(
            flow_id, "audited-alpha", work_pool_name=pool, work_queue_name="alpha",
            entrypoint="tests/e2e/sleepy_flow.py:sleepy", tags=["team:alpha"],
            parameters={"seconds": 1, "note": "défaut"})
        return str(deployment)


async def _runs(deployment: str) -> list:
    async with get_client() as client:
        return await client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment])))


def test_triggers_are_recorded_before_the_run_and_refused_when_unrecordable(
        prefect_server: None, tmp_path: Path) -> None:
    deployment = asyncio.run(_deployment("audit-gpu"))
    upstream = PREFECT_API_URL.value().removesuffix("/api")
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    body = {"parameters": {"seconds": 2}, "state": {
        "type": "SCHEDULED", "state_details": {"scheduled_time": later}}}
    path = f"/api/deployments/{deployment}/create_flow_run"
    with gateway(tmp_path, upstream) as client:
        created = client.post(path, headers=bearer("rui"), json=body)
        other_team = client.post(path, headers=bearer("bo"), json=body)
        # The 403's record is written by the refusals' own thread: let it land before the
        # store goes down, or it recreates the file in the way of the folder.
        client.app.state.gateway.audit.flush()
        with store_down(tmp_path / "data"):
            unrecorded = client.post(path, headers=bearer("rui"), json=body)
    assert created.status_code == 201, created.text
    assert other_team.status_code == 403, other_team.text
    assert unrecorded.status_code == 503, unrecorded.text
    assert unrecorded.json()["detail"].startswith(
        "the audit trail cannot record this run's trigger, so the run was not started: "
        "audit file ")
    runs = asyncio.run(_runs(deployment))
    assert [str(run.id) for run in runs] == [created.json()["id"]]  # none made after the 503

    [triggered] = records(tmp_path / "data", "run.triggered")
    assert (triggered.actor, triggered.team, triggered.subject) == (
        "rui", "alpha", "deployment audited-alpha")
    canonical = json.dumps(runs[0].parameters, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode()
    assert runs[0].parameters == {"seconds": 2, "note": "défaut"}
    assert triggered.details == {
        "deployment_id": deployment, "deployment": "audited-alpha", "work_queue": "alpha",
        "parameters_sha256": hashlib.sha256(canonical).hexdigest(), "requeued_from": None}
    assert "défaut" not in json.dumps(triggered.details)  # the hash, never the values
    [refused] = records(tmp_path / "data", "request.refused")
    assert (refused.actor, refused.team, refused.details["status"]) == ("bo", "alpha", 403)
