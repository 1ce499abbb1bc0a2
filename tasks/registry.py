"""The register stage as a Prefect task, retried on transient I/O errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import Settings
from mlops.data.snapshot import ValidatedData
from mlops.pipeline.stages import PipelineParams, register_stage
from tasks.retries import IO_RETRIES

if TYPE_CHECKING:
    from mlops.features.training_set import FeatureSetResult
    from mlops.registry import RegistrationResult
    from mlops.training.export import ExportResult
    from mlops.training.train import TrainResult


@task(name="register-model", cache_policy=NONE, **IO_RETRIES)
def register(params: PipelineParams, data: ValidatedData, features: FeatureSetResult,
             trained: TrainResult, exported: ExportResult, settings: Settings,
             pipeline_run: str = "") -> RegistrationResult:
    """MLflow run with lineage, model version, challenger/champion aliases; a retry after a
    lost response finishes the same version (``pipeline_run`` and the file are its key)."""
    result = register_stage(params, data, features, trained, exported, settings,
                            pipeline_run)
    get_run_logger().info("%s v%s aliases %s", result.name, result.version, result.aliases)
    return result
