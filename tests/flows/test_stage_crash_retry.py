"""The distributed parent runs a crashed stage once more (its machine died, not its code),
and fails with the stage's own message when it crashes again or fails; on a real Prefect
server, with the test playing the worker that runs the stage (it sets each run's end)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from benchmarks.synthetic import synthetic_spec
from flows.distributed_pipeline import CRASH_RETRIES, run_stage
from flows.stage_flows import stage_flow_name
from mlops.pipeline.handover import HandoverRef
from mlops.pipeline.stages import PipelineParams, Stage

POOL = "crash-retry-cpu"


def _setup() -> str:
    """The export stage's deployment on a pool of its own; returns its id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
        flow_id = client.create_flow_from_name(stage_flow_name(Stage.EXPORT))
        return str(client.create_deployment(
            flow_id=flow_id, name="default", work_pool_name=POOL, work_queue_name="default",
            entrypoint="flows/stage_flows.py:export_stage_flow"))


class PlayedWorker(threading.Thread):
    """Ends each new run of the deployment with the next state of ``ends``, as a worker
    whose run process crashed (or finished) would have it end."""

    def __init__(self, deployment: str, ends: list[str]) -> None:
        super().__init__(daemon=True)
        self.deployment, self.ends, self.runs = deployment, list(ends), []
        self.stop = threading.Event()

    def run(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.states import Completed, Crashed, Failed, Running

        made = {"CRASHED": lambda: Crashed(message="no heartbeat: the machine died"),
                "FAILED": lambda: Failed(message="ValueError: the stage's own error"),
                "COMPLETED": Completed}
        with get_client(sync_client=True) as client:
            while not self.stop.is_set() and self.ends:
                waiting = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(
                        any_=[uuid.UUID(self.deployment)])),
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED,
                                                          StateType.PENDING]))))
                for run in waiting:
                    client.set_flow_run_state(run.id, Running(), force=True)
                    client.set_flow_run_state(run.id, made[self.ends.pop(0)](), force=True)
                    self.runs.append(str(run.id))
                time.sleep(0.3)


def _parent(ends: list[str], tmp_path: Path):
    """Run ``run_stage`` of the export stage in a parent flow; (its state, the stage runs)."""
    from prefect import flow

    worker = PlayedWorker(_setup(), ends)
    worker.start()

    @flow(name="crash-retry-parent")
    def parent(params: PipelineParams) -> None:
        run_stage(Stage.EXPORT, params, HandoverRef(run_id=str(uuid.uuid4())))

    try:
        params = PipelineParams(spec=synthetic_spec(str(tmp_path / "panel.parquet")),
                                deploy=False)
        state = parent(params, return_state=True)
    finally:
        worker.stop.set()
        worker.join(timeout=10)
    return state, worker.runs


@pytest.mark.usefixtures("prefect_server")
def test_a_crashed_stage_runs_again_and_the_parent_goes_on(tmp_path: Path) -> None:
    state, runs = _parent(["CRASHED", "COMPLETED"], tmp_path)
    assert state.is_completed(), state
    assert len(runs) == 2 == CRASH_RETRIES + 1


@pytest.mark.usefixtures("prefect_server")
def test_a_stage_that_crashes_again_fails_the_parent_naming_it(tmp_path: Path) -> None:
    state, runs = _parent(["CRASHED", "CRASHED", "COMPLETED"], tmp_path)
    assert state.is_failed() and len(runs) == 2, (state, runs)
    assert "stage export-stage (flow run " in state.message
    assert "ended Crashed: no heartbeat: the machine died" in state.message


@pytest.mark.usefixtures("prefect_server")
def test_a_stage_that_fails_on_its_own_is_not_run_again(tmp_path: Path) -> None:
    state, runs = _parent(["FAILED", "COMPLETED"], tmp_path)
    assert state.is_failed() and len(runs) == 1, (state, runs)
    assert "ended Failed: ValueError: the stage's own error" in state.message
