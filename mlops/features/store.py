"""A dataset's Feast store: where it lives, its feature_store.yaml (rendered from
``feature_repo``'s template of the profile), opening it, and applying the dataset's Feast
objects (declared by ``feature_repo``) to its registry.

Feast takes seconds to import, so it is imported inside the functions that need it:
importing this module stays cheap for the CLI and the inference service.
"""

from __future__ import annotations

import json
import logging
import string
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mlops.atomic_files import write_atomic
from mlops.config import DatasetSpec, Settings
from mlops.data import storage

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


class FeatureError(ValueError):
    """Feature data or a feature store that cannot be used; the message names the problem."""


def feature_dir(spec: DatasetSpec, data_dir: str | Path) -> Path:
    """Where one dataset's Feast repo, registry, online store and parquet files live."""
    return Path(data_dir).resolve() / "features" / spec.name


def render_store_yaml(spec: DatasetSpec, directory: Path, settings: Settings) -> str:
    """feature_repo's feature_store.yaml template of the settings' profile, filled in for
    this dataset: local files (SQLite), or PostgreSQL and Redis in production."""
    from feature_repo.repo import PRODUCTION_TEMPLATE, TEMPLATE

    if settings.profile == "production":
        return string.Template(PRODUCTION_TEMPLATE.read_text()).substitute(
            project=json.dumps(spec.name),
            registry_url=json.dumps(settings.database_url("feast", "postgresql+psycopg2",
                                                          env_password=True)),
            redis_connection=json.dumps(redis_connection_string(
                settings.redis_url, password=settings.redis_password is not None)))
    return string.Template(TEMPLATE.read_text()).substitute(
        project=json.dumps(spec.name),
        registry_path=json.dumps(str(directory / "registry.db")),
        online_path=json.dumps(str(directory / "online.db")),
    )


def redis_connection_string(url: str, password: bool = False) -> str:
    """Feast's Redis connection string (``host:port,db=N[,ssl=true]``) from a redis:// URL;
    with ``password``, ``password=${MLOPS_REDIS_PASSWORD}``, which Feast expands when it
    reads its config, so no file holds the secret."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise FeatureError(f"MLOPS_REDIS_URL must be redis://host:port/db, got {parts.scheme}://"
                           f"{parts.hostname or ''}")
    if parts.password:
        raise FeatureError("MLOPS_REDIS_URL must not hold a password (it would be written to "
                           "Feast's config file); set MLOPS_REDIS_PASSWORD instead")
    database = parts.path.lstrip("/") or "0"
    ssl = ",ssl=true" if parts.scheme == "rediss" else ""
    secret = ",password=${MLOPS_REDIS_PASSWORD}" if password else ""
    return f"{parts.hostname}:{parts.port or 6379},db={database}{ssl}{secret}"


def offline_dir(spec: DatasetSpec, data_dir: str | Path, settings: Settings | None = None) -> str:
    """Where the offline source and the training set go: beside the dataset's Feast repo,
    or under the S3 bucket on the production profile (any worker can read them there)."""
    settings = settings or Settings()
    if settings.profile == "production":
        return storage.join(storage.data_root(settings), "features", spec.name)
    return str(feature_dir(spec, data_dir))


def store_for(spec: DatasetSpec, data_dir: str | Path,
              settings: Settings | None = None) -> FeatureStore:
    """The dataset's FeatureStore: renders its feature_store.yaml (if changed) and opens it."""
    from feast import FeatureStore

    directory = feature_dir(spec, data_dir)
    config = directory / "feature_store.yaml"
    text = render_store_yaml(spec, directory, settings or Settings())
    if not config.is_file() or config.read_text() != text:
        write_atomic(config, lambda tmp: tmp.write_text(text))
    return FeatureStore(repo_path=str(directory))


def apply_definitions(store: FeatureStore, spec: DatasetSpec, source_path: str | Path,
                      s3_endpoint: str | None = None) -> None:
    """Register the dataset's entity, source, feature view and service (idempotent)."""
    from feature_repo.repo import definitions

    try:
        objects = definitions(spec, source_path, s3_endpoint)
    except ValueError as exc:
        raise FeatureError(str(exc)) from None
    store.apply(objects)
    log.info("applied %s to the Feast registry of project %s", [o.name for o in objects],
             store.project)
