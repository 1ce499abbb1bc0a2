"""The pipeline's stages as plain Python, each taking and returning small typed results.

Each function is what one Prefect task wraps; ``run_pipeline`` chains them without Prefect
(the baseline of the orchestration-overhead benchmark). Results carry paths and hashes,
never live objects, so any stage can run in another process or be retried alone.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from mlops import storage
from mlops.config import DatasetSpec, ModelSettings, Settings
from mlops.files import write_atomic

if TYPE_CHECKING:  # the stage modules import heavy libraries; load them only when run
    from mlops.deploy import ServiceInfo
    from mlops.export import ExportResult
    from mlops.features import FeatureSetResult
    from mlops.registry import RegistrationResult
    from mlops.training import TrainResult

log = logging.getLogger(__name__)


class PipelineParams(BaseModel):
    """What one training-pipeline run trains, on what, for whom."""

    spec: DatasetSpec = Field(description="The dataset: location, entity, timestamp, columns.")
    model: ModelSettings = Field(default_factory=ModelSettings, description="MLP and training.")
    team: str = Field(default="default", pattern=r"^[a-z][a-z0-9-]{0,39}$",
                      description="The team the run is accounted to.")
    priority: Literal["high", "normal", "low"] = Field(
        default="normal", description="Within the team's share: high runs start first, low "
        "last. The distributed pipeline's stages run on the team's high, normal or low queue "
        "(high and low exist with the fair-share controller on).")
    deploy: bool = Field(default=True, description="Start the inference service on champion.")


class ValidatedData(BaseModel):
    """A validated dataset, frozen as a content-addressed parquet snapshot."""

    snapshot_path: str
    dataset_hash: str
    rows: int
    report_path: str
    docs_path: str | None


def validate_stage(spec: DatasetSpec, settings: Settings) -> ValidatedData:
    """Load and validate; a failing batch is quarantined and raises ValidationFailed.

    Partitioned parquet (and on production any parquet) is validated out of core on Dask
    instead. The snapshot goes under the data root: the data directory, or the S3 bucket
    on production.
    """
    with storage.object_store(settings, f"validating {spec.path}"):
        if _on_dask(spec.path, settings):
            return _validate_partitioned(spec, settings)
        return _validate_in_memory(spec, settings)


def _on_dask(path: str, settings: Settings) -> bool:
    """A folder of parquet partitions always; on the production profile, where the data
    stages run on the Dask cluster, a single parquet file too (one partition)."""
    if path.startswith("builtin://"):
        return False
    if storage.is_folder(path):
        return True
    return settings.profile == "production" and path.endswith((".parquet", ".pq"))


def _validate_in_memory(spec: DatasetSpec, settings: Settings) -> ValidatedData:
    from mlops.data import load_dataset
    from mlops.validation import require_valid, validate_dataset

    frame = load_dataset(spec)
    out_dir = settings.stage_dir(f"validation/{spec.name}")
    report = validate_dataset(frame, spec, out_dir, settings.stage_dir("quarantine"))
    require_valid(report)
    snapshot = storage.join(storage.data_root(settings), "datasets", spec.name,
                            f"{report.dataset_hash[:16]}.parquet")
    if not storage.exists(snapshot):
        storage.write_parquet(snapshot, frame[spec.columns])
    return ValidatedData(snapshot_path=snapshot, dataset_hash=report.dataset_hash,
                         rows=report.rows, report_path=report.report_path,
                         docs_path=report.docs_path)


def _validate_partitioned(spec: DatasetSpec, settings: Settings) -> ValidatedData:
    """Great Expectations per partition on the Dask cluster, one report; the snapshot is the
    partitions prepared for training (``prepare_partitions``), one file per partition."""
    from mlops.dask_cluster import cluster_client
    from mlops.partitioned_features import prepare_partitions
    from mlops.partitioned_validation import require_valid_partitions, validate_partitions

    # The key-hash buckets of the uniqueness check: a local temporary folder serves a
    # LocalCluster; a team's cluster may span machines, so they go under the data root.
    scratch = (storage.join(storage.data_root(settings), "tmp", f"keys-{uuid.uuid4().hex}")
               if settings.dask_scheduler else None)
    with cluster_client(settings) as client:
        try:
            report = validate_partitions(spec.path, spec, client, scratch=scratch)
        finally:
            if scratch:
                storage.remove(scratch)
        path = settings.stage_dir(f"validation/{spec.name}") / (
            f"{spec.name}-{report.dataset_hash[:16]}.partitions.json")
        write_atomic(path, lambda tmp: tmp.write_text(report.model_dump_json(indent=2)))
        require_valid_partitions(report)
        snapshot = storage.join(storage.data_root(settings), "datasets", spec.name,
                                report.dataset_hash[:16])
        if not storage.complete(snapshot):
            storage.write_folder(
                snapshot, lambda folder: prepare_partitions(spec.path, spec, folder, client))
    return ValidatedData(snapshot_path=snapshot, dataset_hash=report.dataset_hash,
                         rows=report.rows, report_path=str(path), docs_path=None)


def features_stage(data: ValidatedData, spec: DatasetSpec, settings: Settings) -> FeatureSetResult:
    """Feast: apply the repo, point-in-time training set, materialise online."""
    from mlops.features import prepare_features

    with storage.object_store(settings, f"preparing the features of {spec.name}"):
        return prepare_features(storage.read_parquet(data.snapshot_path), spec,
                                settings.data_dir, settings)


def train_stage(training_path: str, spec: DatasetSpec, model: ModelSettings,
                settings: Settings) -> TrainResult:
    from mlops.training import train_model

    with storage.object_store(settings, f"reading the training set {training_path}"):
        return train_model(training_path, spec, model, settings.stage_dir(f"training/{spec.name}"))


def export_stage(model_path: str, test_path: str, spec: DatasetSpec,
                 settings: Settings) -> ExportResult:
    from mlops.export import export_onnx

    return export_onnx(model_path, test_path, settings.stage_dir(f"models/{spec.name}"))


def register_stage(params: PipelineParams, data: ValidatedData, features: FeatureSetResult,
                   trained: TrainResult, exported: ExportResult,
                   settings: Settings) -> RegistrationResult:
    """Log the run with its lineage; the version becomes champion only if it is better."""
    from mlops.registry import Lineage, current_git_commit, register_model
    from mlops.training import primary_metric

    metric, higher_is_better = primary_metric(params.spec.task)
    lineage = Lineage(dataset=params.spec.name, dataset_uri=params.spec.path,
                      dataset_hash=data.dataset_hash, feature_service=features.feature_service,
                      git_commit=current_git_commit(Path(__file__).parent), team=params.team)
    model_params = {**params.model.model_dump(), "task": params.spec.task.value,
                    "features": ",".join(params.spec.features), "device": trained.device,
                    "precision": trained.precision, "onnx_opset": exported.opset,
                    "parity_max_abs_diff": exported.max_abs_diff}
    return register_model(settings.tracking, settings.artifacts_dir, exported.onnx_path,
                          exported.sha256, model_params, trained.metrics, metric,
                          higher_is_better, lineage)


def deploy_stage(spec: DatasetSpec, settings: Settings) -> ServiceInfo:
    """(Re)start the CPU inference service on the registry's champion."""
    from mlops.deploy import start_service

    return start_service(spec, settings)



def run_pipeline(params: PipelineParams, settings: Settings):  # noqa: ANN201
    """All stages in this process, without Prefect: the orchestration benchmark's baseline."""
    from mlops.summary import build_summary

    spec = params.spec
    data = validate_stage(spec, settings)
    features = features_stage(data, spec, settings)
    trained = train_stage(features.training_path, spec, params.model, settings)
    exported = export_stage(trained.model_path, trained.test_path, spec, settings)
    registered = register_stage(params, data, features, trained, exported, settings)
    service = deploy_stage(spec, settings) if params.deploy else None
    return build_summary(params, data, features, trained, exported, registered, service)
