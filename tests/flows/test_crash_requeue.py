"""The controller's requeue of runs that died with their machine, on a real Prefect server:
one copy per run that lost its machine (zombie-crashed, aborted when its worker died, or
failed on a training SIGTERM), never a second, never for a run's own failure or a person's
interrupt."""

from __future__ import annotations

import asyncio
from pathlib import Path

from infra.automations import ZOMBIE_MESSAGE, unstarted_message
from infra.crash_requeue import ABORTED, CRASH_RETRY_TAG, requeue_crashed
from infra.prefect_api import REQUEUED_TAG
from mlops.fairshare.teams import load_teams

TEAMS = """\
pools:
  gpu: {capacity: 2, type: process}
teams:
  - {name: alpha, weight: 1, priority: 1, quotas: {gpu: 1}}
  - {name: default, weight: 1, priority: 2, quotas: {gpu: 1}}
"""


def test_a_run_that_lost_its_machine_is_requeued_once(prefect_server: None, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.states import Crashed, Failed, Running

    path = tmp_path / "teams.yaml"
    path.write_text(TEAMS)
    config = load_teams(path)

    async def crashed_run(client, deployment, message: str, tags=()) -> str:
        run = await client.create_flow_run_from_deployment(
            deployment, parameters={"epochs": 3}, work_queue_name="alpha", tags=list(tags))
        await client.set_flow_run_state(run.id, Running(), force=True)
        await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        return str(run.id)

    async def scenario() -> dict:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="gpu", type="process"))
            await client.create_work_queue(name="alpha", work_pool_name="gpu")
            flow_id = await client.create_flow_from_name("requeue-me")
            deployment = await client.create_deployment(
                flow_id=flow_id, name="requeue", work_pool_name="gpu", work_queue_name="alpha",
                entrypoint="flows/x.py:x")
            zombie = await crashed_run(client, deployment, ZOMBIE_MESSAGE, ["team:alpha"])
            orphan = await crashed_run(client, deployment, ABORTED[1])  # its worker died
            unstarted = await crashed_run(client, deployment, unstarted_message(300))
            other = await crashed_run(client, deployment, "Process exited with code 1")
            stopped = await crashed_run(client, deployment,
                                        "Execution was aborted by an interrupt signal.")
            noticed = await client.create_flow_run_from_deployment(  # a spot node's SIGTERM
                deployment, parameters={"epochs": 3}, work_queue_name="alpha")
            await client.set_flow_run_state(noticed.id, Running(), force=True)
            await client.set_flow_run_state(noticed.id, Failed(message=(
                "Flow run encountered an exception: TrainingInterrupted: training preempted "
                "(SIGTERM) at epoch 2, checkpoint saved to s3://b/x/last.pt; run it again to "
                "resume from there")), force=True)
            failed = await crashed_run(client, deployment, "ValueError: bad spec")
            first = await requeue_crashed(client, config)
            second = await requeue_crashed(client, config)
            [copy] = await client.read_flow_runs(flow_run_filter=_tagged(f"{REQUEUED_TAG}{zombie}"))
            await client.set_flow_run_state(copy.id, Running(), force=True)
            await client.set_flow_run_state(copy.id, Crashed(message=ZOMBIE_MESSAGE), force=True)
            third = await requeue_crashed(client, config)
            others = [run for lost in (other, stopped, failed)
                      for run in await client.read_flow_runs(
                          flow_run_filter=_tagged(f"{REQUEUED_TAG}{lost}"))]
            return {"first": first, "second": second, "third": third, "copy": copy,
                    "zombie": zombie, "others": others, "noticed": str(noticed.id),
                    "orphan": orphan, "unstarted": unstarted}

    result = asyncio.run(scenario())
    assert len(result["first"]) == 4 and result["zombie"] in "".join(result["first"])
    assert result["orphan"] in "".join(result["first"])  # aborted when its worker died
    assert result["unstarted"] in "".join(result["first"])  # died while Pending
    assert result["noticed"] in "".join(result["first"])  # failed on a training SIGTERM
    assert result["second"] == [] and result["third"] == []  # one copy; a copy is not retried
    copy = result["copy"]
    assert copy.state_type.value == "SCHEDULED" and copy.work_queue_name == "alpha"
    assert copy.parameters == {"epochs": 3}
    assert {"team:alpha", CRASH_RETRY_TAG} <= set(copy.tags)
    assert result["others"] == []  # a crash the run reported itself is not the machine's


def _tagged(tag: str):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    return FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
