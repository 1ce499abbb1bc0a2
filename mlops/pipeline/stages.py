"""The pipeline's stages as plain Python, each taking and returning small typed results,
and the one chain that strings them together.

Each stage function is what one Prefect task wraps. ``run_stages`` chains six callables:
these functions (the pipeline without Prefect, the orchestration benchmark's baseline),
or the Prefect tasks that wrap them (``flows.training_pipeline``), so the order and the
hand-over between stages are written once; before the first, ``check_run`` checks the
dataset's location for the run's team and the residency of every location the run uses,
and each stage checks its own locations again before it reads or writes. Results carry
paths and hashes, never live objects, so any stage can run in another process or be
retried alone.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel, Field

from mlops.config import DatasetSpec, ModelSettings, Settings
from mlops.data import storage
from mlops.data.snapshot import ValidatedData
from mlops.data.validation import ValidationFailed
from mlops.governance.approvals import ApprovalAnswer, check_approver, needs_approval
from mlops.governance.locations import check_location, location_policy, platform_governance
from mlops.governance.residency import check_residency, residency_policy
from mlops.pipeline import audit_events
from mlops.pipeline.run_checks import (
    check_run,
    features_locations,
    register_locations,
    validate_locations,
)
from mlops.pipeline.summary import PipelineSummary

if TYPE_CHECKING:  # the stage modules import heavy libraries; load them only when run
    from mlops.features.training_set import FeatureSetResult
    from mlops.registry import RegistrationResult
    from mlops.serving.deploy import ServiceInfo
    from mlops.training.export import ExportResult
    from mlops.training.train import TrainResult

log = logging.getLogger(__name__)


class Stage(StrEnum):
    """The stages, in order; each hands over one result under this name."""

    VALIDATE = "validate"
    FEATURES = "features"
    TRAIN = "train"
    EXPORT = "export"
    REGISTER = "register"
    DEPLOY = "deploy"


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


def validate_stage(spec: DatasetSpec, settings: Settings,
                   team: str | None = None) -> ValidatedData:
    """Load and validate; a failing batch is quarantined and raises ValidationFailed.

    First, before anything is read: the dataset's location must be the team's
    (LocationRefused), and the dataset, the data root and quarantine must lie in the
    residency policy's regions (ResidencyRefused). Without ``team`` (a stage task that was
    not told it), any team's data roots and the platform's and dataset's policy apply.
    Partitioned parquet (and on production any parquet) is validated out of core on Dask
    instead. The snapshot goes under the data root: the data directory, or the S3 bucket
    on production.
    """
    governance = platform_governance(settings)
    checked = spec.model_copy(update={
        "path": check_location(spec.path, location_policy(settings, governance, team))})
    with storage.object_store(settings, f"validating {spec.path}"):
        check_residency(residency_policy(governance, team, spec),
                        validate_locations(checked, settings), settings)
        try:
            data = _validate(checked, settings)
        except ValidationFailed as failed:
            audit_events.dataset_validated(settings, spec, team, failed.report.dataset_hash,
                                           passed=False, detail=str(failed))
            raise
    audit_events.dataset_validated(settings, spec, team, data.dataset_hash, passed=True)
    return data


def _validate(spec: DatasetSpec, settings: Settings) -> ValidatedData:
    """Out of core on Dask, or in memory (see ``_on_dask``)."""
    if _on_dask(spec.path, settings):
        from mlops.partitioned.snapshot import validate_partitioned

        return validate_partitioned(spec, settings)
    from mlops.data.snapshot import validate_in_memory

    return validate_in_memory(spec, settings)


def _on_dask(path: str, settings: Settings) -> bool:
    """A folder of parquet partitions always; on the production profile, where the data
    stages run on the Dask cluster, a single parquet file too (one partition)."""
    if path.startswith("builtin://"):
        return False
    if storage.is_folder(path):
        return True
    return settings.profile == "production" and path.endswith((".parquet", ".pq"))


def features_stage(data: ValidatedData, spec: DatasetSpec, settings: Settings,
                   team: str | None = None) -> FeatureSetResult:
    """Feast: apply the repo, point-in-time training set, materialise online; first, the
    offline source's location must be in the residency policy's regions."""
    with storage.object_store(settings, f"preparing the features of {spec.name}"):
        check_residency(residency_policy(platform_governance(settings), team, spec),
                        features_locations(spec, settings), settings)
        from mlops.features.training_set import prepare_features

        return prepare_features(storage.read_parquet(data.snapshot_path), spec,
                                settings.data_dir, settings)


def train_stage(training_path: str, spec: DatasetSpec, model: ModelSettings,
                settings: Settings, team: str = "default", run: str = "",
                pool: str = "") -> TrainResult:
    """Train, with checkpoints, model and test split under ``training_root``: a retry on
    any worker (an empty data directory on production) resumes from the checkpoint. Tracked
    in MLflow and exported to Prometheus as flow run ``run`` of ``team`` on ``pool``
    (``mlops.pipeline.tracked``)."""
    from mlops.pipeline.tracked import run_labels, train_watched

    with storage.object_store(settings, f"training on {training_path}"):
        return train_watched(training_path, spec, model, settings,
                             training_root(spec, settings), run_labels(spec, team, run, pool))


def training_root(spec: DatasetSpec, settings: Settings) -> str:
    """Where training keeps a dataset's checkpoints and models: ``training/<name>`` under
    the data root (the S3 bucket on the production profile, else the data directory)."""
    return storage.join(storage.data_root(settings), "training", spec.name)


def export_stage(model_path: str, test_path: str, spec: DatasetSpec,
                 settings: Settings) -> ExportResult:
    """Export to ONNX under the data directory, reading the model and test split from
    wherever training put them; on production the ONNX file goes beside its model in the
    bucket too, for a register stage on another worker."""
    from mlops.training.export import export_onnx

    # One folder per trained model (its run key), so that two pipelines of one dataset at
    # once never export over each other's file.
    run_key = model_path.rstrip("/").split("/")[-2]
    with storage.object_store(settings, f"reading the trained model {model_path}"):
        exported = export_onnx(model_path, test_path,
                               settings.stage_dir(f"models/{spec.name}/{run_key}"))
        if not storage.is_remote(storage.data_root(settings)):
            return exported
        # The register stage may run on another worker: the file goes beside its model.
        remote = storage.join(training_root(spec, settings), "models", run_key, "model.onnx")
        storage.write_bytes(remote, Path(exported.onnx_path).read_bytes())
        return exported.model_copy(update={"onnx_path": remote})


def register_stage(params: PipelineParams, data: ValidatedData, features: FeatureSetResult,
                   trained: TrainResult, exported: ExportResult, settings: Settings,
                   pipeline_run: str = "") -> RegistrationResult:
    """Log the run with its lineage; the version becomes champion only if it is better.
    First, MLflow's artifact root must be in the residency policy's regions. Called again
    for the same ``pipeline_run`` (a retry), it returns the version the first call made."""
    with storage.object_store(settings, "checking the residency of MLflow's artifact root"):
        check_residency(residency_policy(platform_governance(settings), params.team,
                                         params.spec), register_locations(settings), settings)
    from mlops.registry import Lineage, current_git_commit, register_model
    from mlops.training.train import primary_metric

    metric, higher_is_better = primary_metric(params.spec.task)
    lineage = Lineage(dataset=params.spec.name, dataset_uri=params.spec.path,
                      dataset_hash=data.dataset_hash, feature_service=features.feature_service,
                      git_commit=current_git_commit(Path(__file__).parent), team=params.team,
                      pipeline_run=pipeline_run)
    model_params = {**params.model.model_dump(), "task": params.spec.task.value,
                    "features": ",".join(params.spec.features), "device": trained.device,
                    "precision": trained.precision, "onnx_opset": exported.opset,
                    "parity_max_abs_diff": exported.max_abs_diff,
                    # A retry that resumed from a checkpoint says so in its lineage.
                    "resumed_from_epoch": trained.resumed_from_epoch,
                    "baseline_model": trained.baseline_model,
                    "model_factory": (params.spec.model.factory if params.spec.model
                                      else "mlp")}
    approval = needs_approval(platform_governance(settings), params.team)
    # The run's team's MLflow user: params.team is the deployment's (the gateway refuses a
    # run whose team differs), so a run can only write its own team's models.
    with storage.object_store(settings, f"reading {exported.onnx_path}"), \
            storage.local_copy(exported.onnx_path) as onnx_path:
        registered = register_model(settings.tracking, settings.artifacts_dir, str(onnx_path),
                                    exported.sha256, model_params, trained.metrics, metric,
                                    higher_is_better, lineage, promote=not approval,
                                    auth=settings.mlflow_auth(params.team),
                                    lock_url=registry_lock_url(settings),
                                    training_run_id=trained.mlflow_run_id)
    audit_events.model_registered(settings, params.team, registered)
    return registered


def registry_lock_url(settings: Settings) -> str | None:
    """Where registrations take their lock: on the production profile PostgreSQL's MLflow
    database, shared by every worker; else this machine's files."""
    return settings.database_url("mlflow") if settings.profile == "production" else None


def awaits_approval(params: PipelineParams, registered: RegistrationResult,
                    settings: Settings) -> bool:
    """A version that beats the champion of a team whose champion moves on approval only."""
    return (registered.wins and not registered.champion
            and needs_approval(platform_governance(settings), params.team))


def approve_stage(params: PipelineParams, registered: RegistrationResult,
                  answer: ApprovalAnswer | None, settings: Settings) -> RegistrationResult:
    """An approver's answer on a version awaiting approval (None: no answer in time). Approve
    moves ``champion`` to it; reject or no answer leaves the champion where it was."""
    if not awaits_approval(params, registered, settings):
        return registered
    if answer is None or not answer.approve:
        audit_events.approval_answered(settings, params.team, registered,
                                       answer.approver if answer else None, False,
                                       answer.comment if answer else "")
        return registered
    check_approver(platform_governance(settings), params.team, answer)
    audit_events.approval_answered(settings, params.team, registered, answer.approver, True,
                                   answer.comment)
    from mlops.registry import CHAMPION, promote_champion

    previous = promote_champion(settings.tracking, registered.name, registered.version,
                                settings.mlflow_auth(params.team))
    audit_events.champion_moved(settings, params.team, registered, previous, answer.approver)
    return registered.model_copy(update={"champion": True, "previous_champion": previous,
                                         "aliases": [*registered.aliases, CHAMPION]})


def no_approval(params: PipelineParams, registered: RegistrationResult,
                settings: Settings) -> RegistrationResult:
    """Without Prefect nobody can answer: a version awaiting approval stays challenger."""
    return registered


def deploy_stage(spec: DatasetSpec, settings: Settings, team: str) -> ServiceInfo:
    """(Re)start the CPU inference service on the champion of the team's model; the service
    reads the registry as the team's MLflow user."""
    from mlops.registry import model_name
    from mlops.serving.deploy import start_service

    model = model_name(team, spec.name)
    service = start_service(spec, settings, model, settings.mlflow_auth(team))
    audit_events.service_deployed(settings, team, model, service)
    return service


class StageCalls(NamedTuple):
    """One callable per stage, with the stage functions' signatures: the functions above,
    or the Prefect tasks that wrap them."""

    validate: Callable[..., ValidatedData]
    features: Callable[..., FeatureSetResult]
    train: Callable[..., TrainResult]
    export: Callable[..., ExportResult]
    register: Callable[..., RegistrationResult]
    approve: Callable[..., RegistrationResult]  # (params, registered, settings)
    deploy: Callable[..., ServiceInfo]


PLAIN = StageCalls(validate_stage, features_stage, train_stage, export_stage, register_stage,
                   no_approval, deploy_stage)


def run_stages(params: PipelineParams, settings: Settings, calls: StageCalls = PLAIN,
               pipeline_run: str | None = None) -> PipelineSummary:
    """validate -> features -> train -> export -> register -> deploy, in this process,
    after ``check_run``. ``pipeline_run`` (the orchestrator's run id; else a new one) makes
    a retried registration find its version instead of making another."""
    pipeline_run = pipeline_run or uuid.uuid4().hex
    check_run(params.spec, params.team, settings)
    spec = params.spec
    data = calls.validate(spec, settings, params.team)
    features = calls.features(data, spec, settings, params.team)
    trained = calls.train(features.training_path, spec, params.model, settings, params.team)
    exported = calls.export(trained.model_path, trained.test_path, spec, settings)
    registered = calls.register(params, data, features, trained, exported, settings,
                                pipeline_run)
    registered = calls.approve(params, registered, settings)
    service = calls.deploy(spec, settings, params.team) if params.deploy else None
    return build_summary(params, data, features, trained, exported, registered, service)


def build_summary(params: PipelineParams, data: ValidatedData, features: FeatureSetResult,
                  trained: TrainResult, exported: ExportResult, registered: RegistrationResult,
                  service: ServiceInfo | None) -> PipelineSummary:
    """Gather what a person wants to know about a run from each stage's result."""
    champion = registered.version if registered.champion else registered.previous_champion
    return PipelineSummary(
        dataset=params.spec.name, team=params.team, rows=data.rows,
        dataset_hash=data.dataset_hash, validation_report=data.report_path,
        feature_service=features.feature_service, training_rows=features.rows,
        device=trained.device, precision=trained.precision, metrics=trained.metrics,
        parity_max_abs_diff=exported.max_abs_diff, onnx_sha256=exported.sha256,
        model_name=registered.name, model_version=registered.version,
        aliases=registered.aliases, champion_version=champion or "",
        endpoint=service.url if service else None,
        held_back=registered.wins and not registered.champion,
    )
