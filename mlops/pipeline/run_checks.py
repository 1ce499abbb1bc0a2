"""What a run reads and writes, checked before it does: the dataset's location for the
run's team, and the data residency of every location each stage touches (the dataset, the
data root, quarantine, Feast's offline source, MLflow's artifact root)."""

from __future__ import annotations

from mlops.config import DatasetSpec, Settings
from mlops.data import storage
from mlops.features.store import offline_dir
from mlops.governance.locations import check_location, location_policy, platform_governance
from mlops.governance.residency import check_residency, residency_policy


def validate_locations(spec: DatasetSpec, settings: Settings) -> dict[str, str]:
    """What the validate stage reads and writes: the dataset, the data root (its snapshot)
    and quarantine (a failing batch's copy)."""
    return {"the dataset": spec.path, "the data root": storage.data_root(settings),
            "quarantine": str(settings.data_dir / "quarantine")}


def features_locations(spec: DatasetSpec, settings: Settings) -> dict[str, str]:
    """Where the features stage writes Feast's offline source and the training set."""
    return {"Feast's offline source": offline_dir(spec, settings.data_dir, settings)}


def register_locations(settings: Settings) -> dict[str, str]:
    """Where the register stage's model goes: MLflow's artifact root. A tracking server on
    the production profile stores it in ``s3://<bucket>/mlflow`` (as ``make up`` starts
    it); otherwise it is under the data directory."""
    server = settings.tracking.startswith(("http://", "https://"))
    root = (f"s3://{settings.s3_bucket}/mlflow" if settings.profile == "production" and server
            else str(settings.artifacts_dir))
    return {"MLflow's artifact root": root}


def check_run(spec: DatasetSpec, team: str, settings: Settings) -> None:
    """Before the first stage reads anything: the dataset's location for the run's team, and
    the residency of every location the run reads or writes (so a violation anywhere
    stops the run before any stage writes)."""
    governance = platform_governance(settings)
    check_location(spec.path, location_policy(settings, governance, team))
    locations = {**validate_locations(spec, settings), **features_locations(spec, settings),
                 **register_locations(settings)}
    with storage.object_store(settings, "checking data residency"):
        check_residency(residency_policy(governance, team, spec), locations, settings)
