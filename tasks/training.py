"""The train stage as a Prefect task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.context import FlowRunContext

from mlops.config import DatasetSpec, ModelSettings, Settings
from mlops.pipeline.stages import train_stage

if TYPE_CHECKING:
    from mlops.training.train import TrainResult


# No retries: training resumes from its own checkpoint when the run is started again.
@task(name="train-model", cache_policy=NONE)
def train(training_path: str, spec: DatasetSpec, model: ModelSettings,
          settings: Settings, team: str = "default") -> TrainResult:
    """Torch training on the best device here, checkpointed every epoch; its series carry
    the flow run and work pool it runs in (what the anomaly detector reports on)."""
    context = FlowRunContext.get()
    flow_run = context.flow_run if context else None
    result = train_stage(training_path, spec, model, settings, team,
                         str(flow_run.id) if flow_run else "",
                         (flow_run.work_pool_name or "") if flow_run else "")
    get_run_logger().info("trained on %s (%s), %d epochs, %s; MLflow run %s", result.device,
                          result.precision, result.epochs_run, result.metrics,
                          result.mlflow_run_id)
    return result
