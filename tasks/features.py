"""The features stage as a Prefect task, retried on transient I/O errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import DatasetSpec, Settings
from mlops.data.snapshot import ValidatedData
from mlops.pipeline.stages import features_stage
from tasks.retries import IO_RETRIES

if TYPE_CHECKING:
    from mlops.features.training_set import FeatureSetResult


@task(name="build-features", cache_policy=NONE, **IO_RETRIES)
def build_features(data: ValidatedData, spec: DatasetSpec, settings: Settings,
                   team: str | None = None) -> FeatureSetResult:
    """Feast apply, point-in-time training set, online materialisation."""
    result = features_stage(data, spec, settings, team)
    get_run_logger().info("feature service %s: %d training rows at %s",
                          result.feature_service, result.rows, result.training_path)
    return result
