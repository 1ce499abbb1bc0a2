"""Predict-by-entity's read side: a dataset's Feast online store, opened once, answering
entity ids with their latest feature values (the features stage fills it: ``training_set``).

Importing this module stays cheap (Feast is imported when a store is opened), so the
serving app can map its errors without loading Feast.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.config import DatasetSpec, Settings
from mlops.features.store import FeatureError, feature_dir, store_for

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)
_DECIMAL = re.compile(r"-?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class OnlineStoreUnavailable(RuntimeError):
    """The online store did not answer (down, restarting, unreachable); worth a retry."""


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """What an online store that does not answer raises: Redis's connection and timeout
    errors, SQLite's operational errors, and the OS's."""
    import sqlite3

    import redis

    return (redis.ConnectionError, redis.TimeoutError, sqlite3.OperationalError,
            ConnectionError, TimeoutError)


class UnknownEntity(LookupError):
    """Entity ids with no values in the online store."""

    def __init__(self, ids: Sequence[Any]) -> None:
        self.ids = list(ids)
        super().__init__(f"unknown entity id(s), no online features: {self.ids}")


class OnlineFeatures:
    """Entity ids -> latest online feature values, for predict-by-entity.

    Holds one open store and the resolved feature service; each call is one Feast
    get_online_features. Thread safe (the SQLite connection is shared, so calls are
    serialised by a lock).
    """

    def __init__(self, store: FeatureStore, spec: DatasetSpec) -> None:
        from feast import ValueType

        from feature_repo.feature_services import feature_service_name

        self.spec = spec
        self._store = store
        self._service = store.get_feature_service(feature_service_name(spec))
        self._int_keys = store.get_entity(spec.entity).value_type == ValueType.INT64
        self._lock = threading.Lock()
        try:  # the first online read imports and connects; pay that here, not per request
            self([0 if self._int_keys else ""])
        except UnknownEntity:
            pass

    def _key(self, entity_id: Any) -> Any:
        """The join key value for a requested id, or None when it cannot be one."""
        if not self._int_keys:
            return entity_id if isinstance(entity_id, str) else None
        if isinstance(entity_id, str) and _DECIMAL.fullmatch(entity_id.strip()):
            key = int(entity_id)  # ASCII digits only: "²" is a digit to str.isdigit, not int
        elif isinstance(entity_id, int | np.integer) and not isinstance(entity_id, bool):
            key = int(entity_id)  # bool is an int subclass but never an id
        else:
            return None
        return key if _INT64_MIN <= key <= _INT64_MAX else None  # an INT64 key or none

    def __call__(self, entity_ids: Sequence[Any]) -> pd.DataFrame:
        """Features indexed by entity id in request order; UnknownEntity names any lacking."""
        ids = list(entity_ids)
        return pd.DataFrame(self.matrix(ids), index=pd.Index(ids, name=self.spec.entity),
                            columns=self.spec.features)

    def matrix(self, entity_ids: Sequence[Any]) -> np.ndarray:
        """[ids, features] float64 in request and ``spec.features`` order, NaN where a stored
        value is null (objects, None for a null, for a spec with categorical or nullable
        features); UnknownEntity names any id the store lacks. (The service's path: no
        DataFrame, whose construction and column selection cost as much as the Feast read.)"""
        ids = list(entity_ids)
        keys = [self._key(entity_id) for entity_id in ids]
        rows = [row for row, key in enumerate(keys) if key is not None]
        # Categories may be strings: an object matrix (None for a null) then, else floats.
        values = (np.full((len(ids), len(self.spec.features)), np.nan) if self.spec.plain
                  else np.full((len(ids), len(self.spec.features)), None, dtype=object))
        present = np.zeros(len(ids), dtype=bool)
        if rows:
            with self._lock:
                try:
                    response = self._store.get_online_features(
                        features=self._service,
                        entity_rows={self.spec.entity: [keys[row] for row in rows]})
                except _unavailable_errors() as exc:  # the client reconnects on a later call
                    log.warning("online store of %s unavailable: %s", self.spec.name, exc)
                    raise OnlineStoreUnavailable(
                        "the online feature store is unavailable; retry shortly") from None
            self._fill(response, rows, values, present)
        missing = [ids[row] for row in range(len(ids)) if not present[row]]
        if missing:
            raise UnknownEntity(missing)
        return values

    def _fill(self, response: Any, rows: list[int], values: np.ndarray,
              present: np.ndarray) -> None:
        """Copy the response into values (nulls stay NaN); mark rows with any value found."""
        from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

        names, not_found = list(response.proto.metadata.feature_names.val), FieldStatus.NOT_FOUND
        for column, name in enumerate(self.spec.features):
            result = response.proto.results[names.index(name)]
            for row, status, value in zip(rows, result.statuses, result.values, strict=True):
                if status == not_found:
                    continue
                present[row] = True
                kind = value.WhichOneof("val")
                if kind == "string_val":
                    values[row, column] = value.string_val
                elif kind and kind != "null_val":
                    values[row, column] = float(getattr(value, kind))


def online_lookup(spec: DatasetSpec, data_dir: str | Path,
                  settings: Settings | None = None) -> OnlineFeatures:
    """Open the dataset's feature store once and return its online lookup."""
    settings = settings or Settings()
    directory = feature_dir(spec, data_dir)
    if settings.profile == "local" and not (directory / "registry.db").is_file():
        raise FeatureError(f"no Feast registry for {spec.name} under {directory}; "
                           "run the features stage first")
    store = store_for(spec, data_dir, settings)
    try:
        return OnlineFeatures(store, spec)
    except Exception as exc:  # Feast raises its own not-found types per object kind
        raise FeatureError(f"feature store of {spec.name} cannot serve online: {exc}") from None
