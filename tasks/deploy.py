"""The deploy stage as a Prefect task: roll or start the inference service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import DatasetSpec, Settings
from mlops.pipeline.stages import deploy_stage

if TYPE_CHECKING:
    from mlops.serving.deploy import ServiceInfo


@task(name="deploy-service", cache_policy=NONE)
def deploy(spec: DatasetSpec, settings: Settings, team: str) -> ServiceInfo:
    """Roll the running ONNX Runtime service to the champion, or start one; wait until ready."""
    result = deploy_stage(spec, settings, team)
    get_run_logger().info("serving %s at %s (%s)", result.model_uri, result.url, result.action)
    return result
