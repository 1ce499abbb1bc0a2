"""Batch scoring as a Prefect task, retried on transient I/O errors (finished partitions
are skipped on a retry)."""

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from mlops.config import Settings
from mlops.partitioned.scoring import ScoreResult
from mlops.pipeline.batch_scoring import BatchScoreParams, batch_score
from tasks.retries import IO_RETRIES


@task(name="score-partitions", cache_policy=NONE, **IO_RETRIES)
def score_partitions(params: BatchScoreParams, settings: Settings) -> ScoreResult:
    """Every partition of the dataset scored by the registered model, on Dask."""
    result = batch_score(params, settings)
    get_run_logger().info("%s v%s: %d rows in %d partitions (%d scored, %d already done) at "
                          "%.0f rows/s -> %s", result.model_name, result.model_version,
                          result.rows, result.partitions, result.scored, result.skipped,
                          result.rows_per_second, result.output)
    create_markdown_artifact(
        f"# Batch scores: `{result.model_name}` v{result.model_version}\n\n"
        "| source | output | rows | partitions (scored / skipped) | rows/s |\n"
        "|---|---|---|---|---|\n"
        f"| {params.source} | {result.output} | {result.rows} | {result.scored} / "
        f"{result.skipped} | {result.rows_per_second:.0f} |\n",
        key="batch-scores", description="Batch scoring run")
    return result
