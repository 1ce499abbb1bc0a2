"""The batch-scoring job: a registered model (an alias or a version) over a partitioned
dataset (a local folder or an S3 prefix) on the Dask cluster, to the data root.

The model comes from the registry and is checked against its sha256 tag before any
partition is read; the dataset's location must be the team's, as for training. The
scores go to ``<data root>/scores/<model>/v<version>/<dataset>/`` unless ``output`` says
otherwise (on the production profile the S3 bucket, with server-side encryption), one file
per partition with its marker, and ``_SUCCESS.json`` last (``mlops.partitioned.scoring``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from mlops.config import Settings
from mlops.data import storage
from mlops.governance.locations import check_location, location_policy, platform_governance
from mlops.partitioned.cluster import cluster_client
from mlops.partitioned.scoring import ScoreResult, describe_model, score_dataset
from mlops.registry.client import fetch_verified


class BatchScoreParams(BaseModel):
    """A batch-scoring run, as the Prefect UI's form and a schedule give it."""

    source: str = Field(description="Partitioned parquet: a folder or an s3:// prefix (or one "
                        "parquet file).")
    model: str = Field(description="Registered model name, <team>.<dataset>.")
    alias: str | None = Field("champion", description="Score with the version this alias "
                              "names (ignored when version is set).")
    version: str | None = Field(None, description="Score with this version.")
    entity: str = Field(description="Entity column, copied to the scores.")
    timestamp: str = Field(description="Event timestamp column, copied to the scores.")
    output: str | None = Field(None, description="Where the scores go; default: "
                               "<data root>/scores/<model>/v<version>/<dataset name>.")
    team: str = "default"

    @property
    def model_uri(self) -> str:
        if self.version:
            return f"models:/{self.model}/{self.version}"
        if not self.alias:
            raise ValueError("batch scoring needs a model alias or a version")
        return f"models:/{self.model}@{self.alias}"


def batch_score(params: BatchScoreParams, settings: Settings) -> ScoreResult:
    """Fetch and verify the model, then score every partition not scored yet."""
    source = check_location(params.source,
                            location_policy(settings, platform_governance(settings), params.team))
    storage.use_object_store(settings)
    data, fetched = fetch_verified(settings.tracking, params.model_uri,
                                   settings.mlflow_auth(params.team))
    model = describe_model(data, params.model, fetched.version, fetched.sha256)
    dataset = source.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    out_root = params.output or storage.join(storage.data_root(settings), "scores",
                                             params.model, f"v{fetched.version}", dataset)
    with storage.object_store(settings, f"scoring {source}"), cluster_client(settings) as client:
        return score_dataset(client, source, out_root, data, model, params.entity,
                             params.timestamp)
