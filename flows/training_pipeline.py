"""The training pipeline: validate -> features -> train -> export -> register -> (approve)
-> deploy. A run whose version awaited approval and did not get it ends Completed, in a
state named NotPromoted that says why the champion stayed."""

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import State

from flows.approval import await_approval, outcome
from flows.worker_bound import end_with_worker
from mlops.config import Settings
from mlops.pipeline.stages import PipelineParams, StageCalls, run_stages
from mlops.pipeline.summary import PipelineSummary
from tasks.deploy import deploy
from tasks.export import export
from tasks.features import build_features
from tasks.registry import register
from tasks.report import report
from tasks.training import train
from tasks.validation import validate_data

STAGE_TASKS = StageCalls(validate_data, build_features, train, export, register,
                         await_approval, deploy)


@flow(name="training-pipeline", validate_parameters=True)
def training_pipeline(params: PipelineParams) -> PipelineSummary | State:
    """Take a dataset to a served model; each stage hands over paths and hashes. The flow
    run's id keys the registration, so a retried run finishes its own version."""
    end_with_worker()
    return outcome(report(run_stages(params, Settings(), STAGE_TASKS, str(flow_run.id))))

