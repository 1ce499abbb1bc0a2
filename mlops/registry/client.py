"""The registry's MLflow client: names, results, credentials, and reading and moving aliases.

Every call on the platform's MLflow server (basic-auth) acts as the team's own user
(``acting_as``): the team that created a model manages it, every other team only reads it,
and a refusal (401, 403) is a RegistryError that names the model and the user.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from mlops.config import MlflowAuth

if TYPE_CHECKING:  # MLflow is imported where it is used: it takes seconds
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
CHALLENGER, CHAMPION = "challenger", "champion"
KEY_TAG, PREVIOUS_TAG = "registration.key", "registration.previous_champion"
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
    pipeline_run: str = ""  # the pipeline run that made it ("": registered outside one)


def registration_key(lineage: Lineage, sha256: str) -> str | None:
    """What makes two registrations the same one: the pipeline run and the model's bytes.
    None outside a pipeline run: each call is then a new version."""
    return f"{lineage.pipeline_run}:{sha256}" if lineage.pipeline_run else None



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


def mlflow_client(tracking_uri: str) -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


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


def promote_champion(tracking_uri: str, name: str, version: str,
                     auth: MlflowAuth | None = None) -> str | None:
    """Move ``champion`` to a version (an approver's word); returns the version it left."""
    from mlflow.exceptions import MlflowException

    with acting_as(auth):
        client = mlflow_client(tracking_uri)
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
        return str(mlflow_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        raise RegistryError(f"cannot resolve models:/{name}@{alias}: {exc.message}") from None


def fetch_model(tracking_uri: str, model_uri: str, dest: Path) -> FetchedModel:
    """Download ``models:/name@alias`` or ``models:/name/version`` and its sha256 tag."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith("models:/"):
        raise RegistryError(f"model URI {model_uri!r} must look like models:/<name>@<alias>")
    client = mlflow_client(tracking_uri)
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


def fetch_verified(tracking_uri: str, model_uri: str, auth: MlflowAuth | None = None
                   ) -> tuple[bytes, FetchedModel]:
    """The model's ONNX bytes (read as ``auth``'s MLflow user), checked against the
    registry's sha256 tag before use."""
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as folder, acting_as(auth):
        fetched = fetch_model(tracking_uri, model_uri, Path(folder))
        data = Path(fetched.path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if fetched.sha256 and actual != fetched.sha256:
        raise RegistryError(f"{model_uri}: sha256 {actual} does not match the registry's "
                            f"{fetched.sha256}; the model was not used")
    return data, fetched.model_copy(update={"sha256": actual})
