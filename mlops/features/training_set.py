"""The features stage: the offline source, Feast apply, the point-in-time training set and
online materialisation (the read side, predict-by-entity's lookup, is ``online``).

Feast takes seconds to import, so it is imported inside the functions that need it:
importing this module (for its result model) stays cheap.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pydantic import BaseModel, Field

from mlops.config import DatasetSpec, Settings
from mlops.data import storage
from mlops.features.store import (
    FeatureError,
    apply_definitions,
    feature_dir,
    offline_dir,
    store_for,
)
from mlops.locks import advisory_lock, file_lock

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)
_ROW = "__mlops_row"  # request-order tiebreaker carried through the historical join


class FeatureSetResult(BaseModel):
    """What the features stage hands over: paths, names and sizes, no live objects."""

    feature_service: str
    repo_path: str = Field(description="The per-dataset Feast repo under the data directory.")
    source_path: str = Field(description="Offline source parquet: entity, timestamp, features.")
    training_path: str = Field(description="Training parquet: entity, timestamp, features, label.")
    rows: int
    materialized_until: str = Field(description="ISO time the online store is loaded up to.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per step.")


# ---- pure helpers ------------------------------------------------------------------


def _utc(series: pd.Series, column: str) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    try:
        return pd.to_datetime(series, utc=True).astype("datetime64[ns, UTC]")
    except (ValueError, TypeError, OverflowError):
        raise FeatureError(f"timestamp column {column!r} is not a datetime") from None


def _feature_column(series: pd.Series, column: str, categorical: bool = False) -> pd.Series:
    """int64 for integer or boolean columns (float64 if they hold nulls), float64 for floats;
    a categorical feature's strings as str objects (None for a null)."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        return series.astype("float64" if series.isna().any() else "int64")
    if pd.api.types.is_float_dtype(series):
        return series.astype("float64")
    if categorical and series.map(lambda v: v is None or isinstance(v, str)
                                  or v is pd.NA or v != v).all():
        return series.astype(object).where(series.notna(), None)
    raise FeatureError(f"feature {column!r} has dtype {series.dtype}; features must be numeric"
                       " (or listed under categorical, as strings or integer codes)")


def _entity_column(series: pd.Series, column: str) -> pd.Series:
    if series.isna().any():
        raise FeatureError(f"entity column {column!r} has {int(series.isna().sum())} null(s)")
    if pd.api.types.is_integer_dtype(series):
        return series.astype("int64")
    if series.map(lambda value: isinstance(value, str)).all():
        return series.astype(object)
    raise FeatureError(f"entity column {column!r} has dtype {series.dtype}; use int or str")


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise FeatureError(f"{what} is missing column(s) {missing}")


def source_frame(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The offline source rows: entity, UTC timestamp, typed features; never the label.

    One row per (entity, timestamp), else the point-in-time join would be ambiguous.
    """
    _require(frame, [spec.entity, spec.timestamp, *spec.features], "feature frame")
    out = pd.DataFrame({
        spec.entity: _entity_column(frame[spec.entity], spec.entity),
        spec.timestamp: _utc(frame[spec.timestamp], spec.timestamp),
    })
    if out[spec.timestamp].isna().any():
        raise FeatureError(f"timestamp column {spec.timestamp!r} has null values")
    for column in spec.features:
        out[column] = _feature_column(frame[column], column, column in spec.categorical)
    duplicated = out.duplicated([spec.entity, spec.timestamp])
    if duplicated.any():
        first = out.loc[duplicated, [spec.entity, spec.timestamp]].iloc[0].tolist()
        raise FeatureError(
            f"{int(duplicated.sum())} duplicate ({spec.entity}, {spec.timestamp}) row(s), "
            f"e.g. {first}"
        )
    return out.reset_index(drop=True)


def training_frame(entities: pd.DataFrame, found: pd.DataFrame,
                   spec: DatasetSpec) -> pd.DataFrame:
    """Label rows with their point-in-time features, ordered by time, entity, input row.

    Features depend only on (entity, timestamp), so they are joined back onto every label
    row: Feast's Dask store drops rows that share a key and time (feast#6787) and rows
    whose entity has values only after the label time; those get the shared or NaN values.
    """
    keys = [spec.entity, spec.timestamp]
    _require(found, [*keys, *spec.features], "historical retrieval result")
    found = found[[*keys, *spec.features]].assign(
        **{spec.timestamp: _utc(found[spec.timestamp], spec.timestamp)}).drop_duplicates(keys)
    joined = entities.merge(found, on=keys, how="left", validate="many_to_one")
    ordered = joined.sort_values([spec.timestamp, spec.entity, _ROW], kind="mergesort")
    return ordered[spec.columns].reset_index(drop=True)


# ---- runners (I/O) -----------------------------------------------------------------


def write_source(frame: pd.DataFrame, spec: DatasetSpec, data_dir: str | Path,
                 settings: Settings | None = None) -> str:
    """Write the validated features (no label) as the offline source parquet."""
    rows = source_frame(frame, spec)
    path = storage.join(offline_dir(spec, data_dir, settings), "source.parquet")
    storage.write_parquet(path, rows)
    log.info("wrote %d feature rows of %s to %s", len(rows), spec.name, path)
    return path


def build_training_set(store: FeatureStore, spec: DatasetSpec,
                       entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join: each label row gets the latest features at or before its time.

    Returns one row per label row. A label earlier than every feature value of its
    entity gets NaN features; callers decide whether to drop such rows.
    """
    from feature_repo.feature_services import feature_service_name

    _require(entity_df, [spec.entity, spec.timestamp, spec.label], "entity dataframe")
    entities = pd.DataFrame({
        spec.entity: _entity_column(entity_df[spec.entity], spec.entity),
        spec.timestamp: _utc(entity_df[spec.timestamp], spec.timestamp),
        spec.label: entity_df[spec.label].to_numpy(),
        _ROW: range(len(entity_df)),
    })
    service = store.get_feature_service(feature_service_name(spec))
    keys = entities[[spec.entity, spec.timestamp]].drop_duplicates()
    found = store.get_historical_features(entity_df=keys, features=service).to_df()
    training = training_frame(entities, found, spec)
    early = int(training[spec.features].isna().all(axis=1).sum())
    if early:
        log.warning("%d label row(s) precede every feature value of their entity: NaN features",
                    early)
    return training


def materialize(store: FeatureStore, end: datetime, start: datetime | None = None) -> None:
    """Load the latest feature values up to end into the online store.

    start defaults to end minus the feature ttl, i.e. every value a lookup may serve.
    """
    from feature_repo.feature_views import FEATURE_TTL

    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    start = start or end - FEATURE_TTL
    with redirect_stdout(io.StringIO()) as printed:  # Feast prints progress to stdout
        store.materialize(start_date=start, end_date=end)
    log.debug("feast materialize: %s", printed.getvalue().strip())


def prepare_features(frame: pd.DataFrame, spec: DatasetSpec, data_dir: str | Path,
                     settings: Settings | None = None) -> FeatureSetResult:
    """The whole stage: source, apply, point-in-time training set, online store; one run
    of a dataset at a time (``features_lock``)."""
    settings = settings or Settings()
    storage.use_object_store(settings)
    with features_lock(spec, data_dir, settings):
        return _prepare_features(frame, spec, data_dir, settings)


FEATURES_LOCK_TIMEOUT_S = 3600.0  # a big dataset's stage may hold it that long


@contextmanager
def features_lock(spec: DatasetSpec, data_dir: str | Path, settings: Settings
                  ) -> Iterator[None]:
    """Two runs of one dataset at once would apply to its Feast registry together, and one
    could read the registry while the other rewrites it (the local file registry is one
    file, rewritten whole): the second waits. On the production profile the lock is
    PostgreSQL's (the Feast registry's database), so it holds across workers."""
    if settings.profile == "production":
        with advisory_lock(settings.database_url("feast"), f"mlops.features:{spec.name}",
                           timeout_s=FEATURES_LOCK_TIMEOUT_S):
            yield
    else:
        with file_lock(feature_dir(spec, data_dir) / ".stage.lock"):
            yield


def _prepare_features(frame: pd.DataFrame, spec: DatasetSpec, data_dir: str | Path,
                      settings: Settings) -> FeatureSetResult:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    source = write_source(frame, spec, data_dir, settings)
    store = store_for(spec, data_dir, settings)
    apply_definitions(store, spec, source, settings.s3_endpoint_url)
    timings["apply"] = time.perf_counter() - clock

    clock = time.perf_counter()
    training = build_training_set(store, spec, frame[[spec.entity, spec.timestamp, spec.label]])
    training_path = storage.join(offline_dir(spec, data_dir, settings), "training.parquet")
    storage.write_parquet(training_path, training)
    timings["training_set"] = time.perf_counter() - clock

    clock = time.perf_counter()
    end = _utc(frame[spec.timestamp], spec.timestamp).max().to_pydatetime() + timedelta(seconds=1)
    materialize(store, end)
    timings["materialize"] = time.perf_counter() - clock
    log.info("features of %s ready: %d training rows, timings %s", spec.name, len(training),
             {key: round(value, 3) for key, value in timings.items()})
    from feature_repo.feature_services import feature_service_name

    return FeatureSetResult(
        feature_service=feature_service_name(spec), repo_path=str(feature_dir(spec, data_dir)),
        source_path=str(source), training_path=str(training_path), rows=len(training),
        materialized_until=end.isoformat(), timings=timings,
    )
