"""Registering a version: idempotent by pipeline run and content, serialised per model.

A version is registered with its sha256 and lineage as tags at creation, re-read from the
store and verified, and only then gets its aliases; any failure on the way deletes the
version, so a run never leaves a half-registered model behind.

The MLflow run and the version carry ``registration.key`` (the pipeline run's id and the ONNX
file's sha256): a registration retried after a lost response, or after a crash between the
upload and the alias move, finds them and finishes that version instead of making a second
one. Registrations of one model are serialised by a lock: a file lock on one machine, a
PostgreSQL advisory lock shared by every machine on the production profile (``lock_url``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.atomic_files import sha256_file
from mlops.config import MlflowAuth
from mlops.locks import advisory_lock, file_lock
from mlops.registry.client import (
    CHALLENGER,
    CHAMPION,
    KEY_TAG,
    PREVIOUS_TAG,
    Lineage,
    RegistrationResult,
    RegistryError,
    acting_as,
    champion_metric,
    fetch_model,
    mlflow_client,
    model_name,
    refusal,
    registration_key,
    should_promote,
)

if TYPE_CHECKING:
    import onnx
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)


@contextmanager
def registry_lock(name: str, artifacts_dir: Path, lock_url: str | None = None) -> Iterator[None]:
    """Serialises the registration of one model: on every machine that reaches the
    PostgreSQL database at ``lock_url``, else on this machine."""
    if lock_url:
        with advisory_lock(lock_url, f"mlops.registry:{name}"):
            yield
    else:
        with file_lock(artifacts_dir / ".locks" / f"{name}.lock"):
            yield


def experiment_for(client: MlflowClient, name: str, artifacts_dir: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    from mlflow.exceptions import MlflowException

    remote = client.tracking_uri.startswith(("http://", "https://"))  # the server stores them
    location = None if remote else (artifacts_dir / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # made at the same moment by a training or a registration
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _signature(model: onnx.ModelProto) -> ModelSignature:
    """The graph's inputs as tensors: ``features`` (float32), and ``categories`` (strings)
    for a model that encodes raw categorical values itself."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx import TensorProto

    inputs = []
    for value in model.graph.input:
        tensor = value.type.tensor_type
        dtype = np.dtype(object) if tensor.elem_type == TensorProto.STRING else np.dtype(
            "float32")
        inputs.append(TensorSpec(dtype, (-1, tensor.shape.dim[1].dim_value), value.name))
    output = next(value for value in model.graph.output if value.name == "prediction")
    dims = output.type.tensor_type.shape.dim  # [batch], or [batch, classes] (multiclass)
    shape = (-1,) if len(dims) == 1 else (-1, dims[1].dim_value)
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema([TensorSpec(np.dtype("float32"), shape, "prediction")]),
    )


def _serving_requirements() -> list[str]:
    """What loading the model needs, stated rather than inferred (MLflow's inference is slow)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("onnx", "onnxruntime", "numpy")]


def register_model(tracking_uri: str, artifacts_dir: Path, onnx_path: str, sha256: str,
                   params: dict[str, object], metrics: dict[str, float], primary_metric: str,
                   higher_is_better: bool, lineage: Lineage, promote: bool = True,
                   auth: MlflowAuth | None = None,
                   lock_url: str | None = None,
                   training_run_id: str | None = None) -> RegistrationResult:
    """Log a run, register its ONNX model as ``<team>.<dataset>``'s new version, and move the
    aliases: always ``challenger``; ``champion`` when the version beats it, unless
    ``promote`` is off (a team whose champion moves only once an approver says so:
    ``promote_champion``). Acts as ``auth`` on a tracking server. Called again for the same
    pipeline run and file, it finishes and returns the same version. ``training_run_id``:
    the run the training was tracked in (``mlops.registry.tracking``), continued here."""
    from mlflow.exceptions import MlflowException

    if sha256_file(onnx_path) != sha256:
        raise RegistryError(f"{onnx_path}: file sha256 differs from the exported {sha256}")
    if primary_metric not in metrics:
        raise RegistryError(f"primary metric {primary_metric!r} missing from {sorted(metrics)}")
    name = model_name(lineage.team, lineage.dataset)
    with acting_as(auth), registry_lock(name, artifacts_dir, lock_url):
        try:
            return _register(tracking_uri, artifacts_dir, onnx_path, sha256, params, metrics,
                             primary_metric, higher_is_better, lineage, promote, name,
                             training_run_id)
        except MlflowException as exc:
            refused = refusal(exc, name, auth, "register a version")
            if refused is None:
                raise
            raise refused from None


def _register(tracking_uri: str, artifacts_dir: Path, onnx_path: str, sha256: str,
              params: dict[str, object], metrics: dict[str, float], primary_metric: str,
              higher_is_better: bool, lineage: Lineage, promote: bool,
              name: str, training_run_id: str | None = None) -> RegistrationResult:
    """Under the model's lock: the version of this registration (made now, or found when an
    earlier attempt got as far), then its aliases."""
    client = mlflow_client(tracking_uri)
    experiment_id = experiment_for(client, name, artifacts_dir)
    key = registration_key(lineage, sha256)
    run_id = _run_of(client, experiment_id, key) or _unregistered(client, name, training_run_id)
    found = _version_of(client, name, run_id) if run_id else None
    created = found is None
    if created:
        run_id, found = _log_and_create(client, experiment_id, run_id, onnx_path, sha256,
                                        params, metrics, lineage, name, key)
    else:
        log.info("%s v%s: registration %s was made before, finishing it", name, found[0], key)
    version, model_uri = found
    try:
        _verify_version(client, name, version, sha256)
        return _move_aliases(client, name, version, run_id, model_uri, sha256,
                             metrics[primary_metric], primary_metric, higher_is_better, promote)
    except BaseException:
        # Only what this attempt made: an earlier attempt's version may already be the
        # champion (its response was lost), and the next retry finishes it.
        if created:
            client.delete_model_version(name, version)
        raise


def _unregistered(client: MlflowClient, name: str, training_run_id: str | None) -> str | None:
    """The training's run, to continue, unless a version was already registered from it
    (by another registration, not a retry of this one: that one is found by its key); the
    new version then gets a run of its own."""
    if training_run_id is None or _version_of(client, name, training_run_id) is not None:
        return None
    return training_run_id


def _run_of(client: MlflowClient, experiment_id: str, key: str | None) -> str | None:
    """The MLflow run an earlier attempt of this registration started, if any."""
    if key is None:
        return None
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def _version_of(client: MlflowClient, name: str, run_id: str) -> tuple[str, str] | None:
    """The version (and its model URI) registered from ``run_id``, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:  # no such registered model yet
        return None
    if not versions:
        return None
    latest = max(versions, key=lambda v: int(v.version))
    return str(latest.version), latest.source


def _log_and_create(client: MlflowClient, experiment_id: str, run_id: str | None,
                    onnx_path: str, sha256: str, params: dict[str, object],
                    metrics: dict[str, float], lineage: Lineage, name: str,
                    key: str | None) -> tuple[str, tuple[str, str]]:
    """Log the run (or continue an earlier attempt's), store the model and create its version
    with its tags; returns the run id and (version, model URI)."""
    import mlflow
    import onnx

    model = onnx.load(onnx_path)
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        mlflow.set_tags({f"lineage.{k}": v for k, v in lineage.model_dump().items()})
        mlflow.set_tag("mlflow.source.git.commit", lineage.git_commit)
        if key:
            mlflow.set_tag(KEY_TAG, key)
        try:
            info = mlflow.onnx.log_model(
                model, name="model", signature=_signature(model),
                save_as_external_data=False, pip_requirements=_serving_requirements())
        except Exception as exc:  # the upload's error type depends on the artifact store
            if refusal(exc, name, None, "") is not None:
                raise
            raise RegistryError(
                f"{name}: storing the model in the artifact store of {client.tracking_uri} "
                f"failed, so no version was registered: {str(exc)[:500]}") from exc
        version = _create_version(client, name, info, run.info.run_id, sha256, lineage, key)
    return run.info.run_id, (version, info.model_uri)


def _create_version(client: MlflowClient, name: str, info: ModelInfo, run_id: str,
                    sha256: str, lineage: Lineage, key: str | None) -> str:
    """Create the version with its tags (the registered model too, the first time)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"Models trained on {name}.")
    tags = {"sha256": sha256, **{f"lineage.{k}": v for k, v in lineage.model_dump().items()},
            **({KEY_TAG: key} if key else {})}
    # The logged model's id: a tracking server (REST) refuses a models:/ source without it.
    return str(client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags,
                                           model_id=info.model_id).version)


def _verify_version(client: MlflowClient, name: str, version: str, sha256: str) -> None:
    """Prove the stored file is the exported one before any alias points at it."""
    with tempfile.TemporaryDirectory() as tmp:
        fetched = fetch_model(client.tracking_uri, f"models:/{name}/{version}", Path(tmp))
        if sha256_file(fetched.path) != sha256:
            raise RegistryError(f"{name} v{version}: stored file differs from sha256 tag")


def _move_aliases(client: MlflowClient, name: str, version: str, run_id: str, model_uri: str,
                  sha256: str, value: float, metric: str, higher_is_better: bool,
                  allowed: bool) -> RegistrationResult:
    """``challenger`` always, ``champion`` when it wins and may move. A version that is
    champion already (an earlier attempt moved it) stays so, with the champion it replaced
    as that attempt recorded it."""
    previous, champion_value = champion_metric(client, name, metric)
    if previous == version:
        stored = client.get_model_version(name, version).tags.get(PREVIOUS_TAG)
        previous, wins, promote = stored or None, True, True
    else:
        wins = should_promote(value, champion_value, higher_is_better)
        promote = wins and allowed
        client.set_model_version_tag(name, version, PREVIOUS_TAG, previous or "")
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
