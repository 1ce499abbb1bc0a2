"""The training pipeline: validate -> features -> train -> export -> register -> deploy."""

from prefect import flow

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

STAGE_TASKS = StageCalls(validate_data, build_features, train, export, register, deploy)


@flow(name="training-pipeline", validate_parameters=True)
def training_pipeline(params: PipelineParams) -> PipelineSummary:
    """Take a dataset to a served model; each stage hands over paths and hashes."""
    return report(run_stages(params, Settings(), STAGE_TASKS))
