"""MLflow tracking and the model registry: the only package that talks to MLflow.

``client``: names (a registered model and its experiment are ``<team>.<dataset>``), results,
the team's MLflow user, fetching a version and moving ``champion``. ``registration``:
registering a new version, idempotently and under the model's lock.
"""

from mlops.registry.client import (
    CHALLENGER,
    CHAMPION,
    KEY_TAG,
    MODEL_FILE,
    FetchedModel,
    Lineage,
    RegistrationResult,
    RegistryError,
    acting_as,
    champion_metric,
    current_git_commit,
    fetch_model,
    model_name,
    promote_champion,
    refusal,
    registration_key,
    should_promote,
    version_by_alias,
)
from mlops.registry.registration import register_model, registry_lock

__all__ = [
    "CHALLENGER", "CHAMPION", "KEY_TAG", "MODEL_FILE", "FetchedModel", "Lineage",
    "RegistrationResult", "RegistryError", "acting_as", "champion_metric",
    "current_git_commit", "fetch_model", "model_name", "promote_champion", "refusal",
    "register_model", "registration_key", "registry_lock", "should_promote",
    "version_by_alias",
]
