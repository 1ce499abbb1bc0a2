"""MLflow tracking and the model registry: the only module that talks to MLflow.

A version is registered with its sha256 and lineage as tags at creation, re-read from the
store and verified, and only then gets its aliases; any failure on the way deletes the
version, so a run never leaves a half-registered model behind.

A registered model and its experiment are named ``<team>.<dataset>`` (``model_name``), and
on the platform's MLflow server (basic-auth) each call acts as the team's own user
(``MlflowAuth``): the team that created a model manages it, every other team only reads it,
and a refusal (401, 403) is a RegistryError that names the model and the user.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from mlops.atomic_files import sha256_file
from mlops.config import MlflowAuth

if TYPE_CHECKING:  # MLflow is imported where it is used: it takes seconds
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)
CHALLENGER, CHAMPION = "challenger", "champion"
MODEL_FILE = "model.onnx"
_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_REFUSED = {"PERMISSION_DENIED": "403 permission denied",
            "UNAUTHENTICATED": "401 not authenticated"}


def model_name(team: str, dataset: str) -> str:
    """The registered model (and experiment) of a team's dataset: ``<team>.<dataset>``. The
    one place the name is made: the pipeline, the deploy stage, the service's directory and
    the approval all take it from here (through the registration's result)."""
    return f"{team}.{dataset}"


class RegistryError(RuntimeError):
    """A model could not be registered or fetched; the message says which and why."""


class RegistrationResult(BaseModel):
    name: str
    version: str
    run_id: str
    model_uri: str
    sha256: str
    aliases: list[str]
    champion: bool
    previous_champion: str | None
    wins: bool = False  # beats the champion: champion, or awaiting an approver's word
    primary_metric: str
    metric_value: float


class FetchedModel(BaseModel):
    name: str
    version: str
    path: str
    sha256: str | None


class Lineage(BaseModel):
    """What a model version was made from, stored as run and version tags."""

    dataset: str
    dataset_uri: str
    dataset_hash: str
    feature_service: str
    git_commit: str
    team: str



def current_git_commit(path: str | Path = ".") -> str:
    """The checkout's commit, or 'unknown' outside a git repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def should_promote(candidate: float, champion: float | None, higher_is_better: bool) -> bool:
    """The first model becomes champion; later ones only when strictly better."""
    if champion is None:
        return True
    return candidate > champion if higher_is_better else candidate < champion


@contextmanager
def registry_lock(lock_path: Path) -> Iterator[None]:
    """Serialises registration on this machine, so alias moves never interleave."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def acting_as(auth: MlflowAuth | None) -> Iterator[None]:
    """MLflow's client reads its basic-auth user from MLFLOW_TRACKING_USERNAME/_PASSWORD on
    every request; set them for the calls inside, then restore what was there. Process-wide:
    a worker runs each flow run in its own process, and one run acts for one team."""
    if auth is None:
        yield
        return
    saved = {name: os.environ.get(name) for name in _CREDENTIALS}
    os.environ.update(zip(_CREDENTIALS, (auth.username, auth.password.get_secret_value()),
                          strict=True))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def refusal(exc: BaseException, name: str, auth: MlflowAuth | None,
            doing: str) -> RegistryError | None:
    """The server's 401 or 403 as a RegistryError naming the model and the user (never the
    password); None for any other error."""
    reason = _REFUSED.get(str(getattr(exc, "error_code", "")))
    if reason is None:
        return None
    who = (f"user {auth.username}" if auth else
           "no MLflow user (no credentials: is the team's MLOPS_MLFLOW_PASSWORD_<TEAM> set?)")
    return RegistryError(f"MLflow refused to {doing} of model {name!r} for {who} ({reason}): "
                         "a team writes only its own models, named <team>.<dataset>")


def _client(tracking_uri: str) -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _experiment_id(client: MlflowClient, name: str, artifacts_dir: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if client.tracking_uri.startswith(("http://", "https://")):  # the server stores them
        return client.create_experiment(name)
    location = (artifacts_dir / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _signature(n_features: int) -> ModelSignature:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, n_features), "features")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1,), "prediction")]),
    )


def _serving_requirements() -> list[str]:
    """What loading the model needs, stated rather than inferred (MLflow's inference is slow)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("onnx", "onnxruntime", "numpy")]


def champion_metric(client: MlflowClient, name: str,
                    metric: str) -> tuple[str | None, float | None]:
    """The current champion's version and its value of ``metric`` (None when none)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    value = client.get_run(version.run_id).data.metrics.get(metric)
    return str(version.version), value


def register_model(tracking_uri: str, artifacts_dir: Path, onnx_path: str, sha256: str,
                   params: dict[str, object], metrics: dict[str, float], primary_metric: str,
                   higher_is_better: bool, lineage: Lineage, promote: bool = True,
                   auth: MlflowAuth | None = None) -> RegistrationResult:
    """Log a run, register its ONNX model as ``<team>.<dataset>``'s new version, and move the
    aliases: always ``challenger``; ``champion`` when the version beats it, unless
    ``promote`` is off (a team whose champion moves only once an approver says so:
    ``promote_champion``). Acts as ``auth`` on a tracking server."""
    from mlflow.exceptions import MlflowException

    if sha256_file(onnx_path) != sha256:
        raise RegistryError(f"{onnx_path}: file sha256 differs from the exported {sha256}")
    if primary_metric not in metrics:
        raise RegistryError(f"primary metric {primary_metric!r} missing from {sorted(metrics)}")
    name = model_name(lineage.team, lineage.dataset)
    with acting_as(auth):
        try:
            return _register(tracking_uri, artifacts_dir, onnx_path, sha256, params, metrics,
                             primary_metric, higher_is_better, lineage, promote, name)
        except MlflowException as exc:
            refused = refusal(exc, name, auth, "register a version")
            if refused is None:
                raise
            raise refused from None


def _register(tracking_uri: str, artifacts_dir: Path, onnx_path: str, sha256: str,
              params: dict[str, object], metrics: dict[str, float], primary_metric: str,
              higher_is_better: bool, lineage: Lineage, promote: bool,
              name: str) -> RegistrationResult:
    import mlflow
    import onnx

    client = _client(tracking_uri)
    experiment_id = _experiment_id(client, name, artifacts_dir)
    model = onnx.load(onnx_path)
    n_features = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    with registry_lock(artifacts_dir / ".registry.lock"):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics(metrics)
            mlflow.set_tags({f"lineage.{k}": v for k, v in lineage.model_dump().items()})
            mlflow.set_tag("mlflow.source.git.commit", lineage.git_commit)
            try:
                info = mlflow.onnx.log_model(
                    model, name="model", signature=_signature(n_features),
                    save_as_external_data=False, pip_requirements=_serving_requirements())
            except Exception as exc:  # the upload's error type depends on the artifact store
                if refusal(exc, name, None, "") is not None:
                    raise
                raise RegistryError(
                    f"{name}: storing the model in the artifact store of {tracking_uri} "
                    f"failed, so no version was registered: {str(exc)[:500]}") from exc
            version = _create_verified_version(client, name, info, run.info.run_id, sha256,
                                               lineage)
            try:
                return _move_aliases(client, name, version, run.info.run_id, info.model_uri,
                                     sha256, metrics[primary_metric], primary_metric,
                                     higher_is_better, promote)
            except BaseException:
                client.delete_model_version(name, version)
                raise


def _create_verified_version(client: MlflowClient, name: str, info: ModelInfo, run_id: str,
                             sha256: str, lineage: Lineage) -> str:
    """Create the version with its tags, then prove the stored file is the exported one."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"Models trained on {name}.")
    tags = {"sha256": sha256, **{f"lineage.{k}": v for k, v in lineage.model_dump().items()}}
    # The logged model's id: a tracking server (REST) refuses a models:/ source without it.
    version = str(client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags,
                                              model_id=info.model_id).version)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fetched = fetch_model(client.tracking_uri, f"models:/{name}/{version}", Path(tmp))
            if sha256_file(fetched.path) != sha256:
                raise RegistryError(f"{name} v{version}: stored file differs from sha256 tag")
    except BaseException:
        client.delete_model_version(name, version)
        raise
    return version


def _move_aliases(client: MlflowClient, name: str, version: str, run_id: str, model_uri: str,
                  sha256: str, value: float, metric: str, higher_is_better: bool,
                  allowed: bool) -> RegistrationResult:
    previous, champion_value = champion_metric(client, name, metric)
    wins = should_promote(value, champion_value, higher_is_better)
    promote = wins and allowed
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    outcome = ("champion" if promote else "challenger, awaiting approval" if wins
               else "challenger only")
    log.info("%s v%s: %s=%.4f vs champion %s (%s) -> %s", name, version, metric, value,
             previous, champion_value, outcome)
    return RegistrationResult(
        name=name, version=version, run_id=run_id, model_uri=model_uri, sha256=sha256,
        aliases=[CHALLENGER, CHAMPION] if promote else [CHALLENGER], champion=promote,
        previous_champion=previous, primary_metric=metric, metric_value=value, wins=wins,
    )


def promote_champion(tracking_uri: str, name: str, version: str,
                     auth: MlflowAuth | None = None) -> str | None:
    """Move ``champion`` to a version (an approver's word); returns the version it left."""
    from mlflow.exceptions import MlflowException

    with acting_as(auth):
        client = _client(tracking_uri)
        try:
            previous = client.get_model_version_by_alias(name, CHAMPION).version
        except MlflowException:
            previous = None
        try:
            client.set_registered_model_alias(name, CHAMPION, version)
        except MlflowException as exc:
            refused = refusal(exc, name, auth, f"move alias {CHAMPION}")
            raise refused or RegistryError(
                f"cannot make {name} v{version} champion: {exc.message}") from None
    return None if previous is None else str(previous)


def version_by_alias(tracking_uri: str, name: str, alias: str) -> str:
    """The version ``models:/<name>@<alias>`` points to now."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        raise RegistryError(f"cannot resolve models:/{name}@{alias}: {exc.message}") from None


def fetch_model(tracking_uri: str, model_uri: str, dest: Path) -> FetchedModel:
    """Download ``models:/name@alias`` or ``models:/name/version`` and its sha256 tag."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith("models:/"):
        raise RegistryError(f"model URI {model_uri!r} must look like models:/<name>@<alias>")
    client = _client(tracking_uri)
    ref = model_uri.removeprefix("models:/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.rsplit("/", 1)
            version = client.get_model_version(name, number)
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}", dst_path=str(dest),
            tracking_uri=tracking_uri)
    except MlflowException as exc:
        raise RegistryError(f"cannot fetch {model_uri}: {exc.message}") from None
    files = sorted(Path(folder).rglob("*.onnx"))
    if not files:
        raise RegistryError(f"{model_uri}: no .onnx file in the registered model")
    return FetchedModel(name=name, version=str(version.version), path=str(files[0]),
                        sha256=version.tags.get("sha256"))
