"""The train stage as a Prefect task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import DatasetSpec, ModelSettings, Settings
from mlops.pipeline.stages import train_stage

if TYPE_CHECKING:
    from mlops.training.train import TrainResult


# No retries: training resumes from its own checkpoint when the run is started again.
@task(name="train-model", cache_policy=NONE)
def train(training_path: str, spec: DatasetSpec, model: ModelSettings,
          settings: Settings) -> TrainResult:
    """Torch training on the best device here, checkpointed every epoch."""
    result = train_stage(training_path, spec, model, settings)
    get_run_logger().info("trained on %s (%s), %d epochs, %s", result.device, result.precision,
                          result.epochs_run, result.metrics)
    return result
