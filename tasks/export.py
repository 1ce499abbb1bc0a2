"""The export stage as a Prefect task: ONNX with its parity check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import DatasetSpec, Settings
from mlops.pipeline.stages import export_stage

if TYPE_CHECKING:
    from mlops.training.export import ExportResult


@task(name="export-onnx", cache_policy=NONE)
def export(model_path: str, test_path: str, spec: DatasetSpec,
           settings: Settings) -> ExportResult:
    """ONNX export with a parity check against torch; a miss fails the run."""
    result = export_stage(model_path, test_path, spec, settings)
    get_run_logger().info("ONNX opset %s, parity max |diff| %.2e, sha256 %s", result.opset,
                          result.max_abs_diff, result.sha256[:12])
    return result
