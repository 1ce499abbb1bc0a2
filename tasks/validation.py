"""The validate stage as a Prefect task, retried on transient I/O errors."""

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import DatasetSpec, Settings
from mlops.data.snapshot import ValidatedData
from mlops.pipeline.stages import validate_stage
from tasks.retries import IO_RETRIES


# No tags: each task tag costs a concurrency-slot lease round trip to the server.
@task(name="validate-data", cache_policy=NONE, **IO_RETRIES)
def validate_data(spec: DatasetSpec, settings: Settings, team: str | None = None
                  ) -> ValidatedData:
    """Great Expectations on the dataset; a failing batch stops the run here."""
    result = validate_stage(spec, settings, team)
    get_run_logger().info("%s: %d rows valid (sha256 %s), report %s", spec.name, result.rows,
                          result.dataset_hash[:12], result.report_path)
    return result
