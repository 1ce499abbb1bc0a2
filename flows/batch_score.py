"""The batch-scoring flow (the cpu pool): a registered model over a partitioned dataset."""

from prefect import flow

from flows.worker_bound import end_with_worker
from mlops.config import Settings
from mlops.partitioned.scoring import ScoreResult
from mlops.pipeline.batch_scoring import BatchScoreParams
from tasks.batch_score import score_partitions


@flow(name="batch-score", validate_parameters=True)
def batch_score(params: BatchScoreParams) -> ScoreResult:
    """Score every partition of ``params.source`` not scored yet by this model version."""
    end_with_worker()
    return score_partitions(params, Settings())
