"""The plain JSON (v1) routes' bodies and their parsing into a float32 feature matrix (pure).

A bad value raises ``BadInput`` naming the row and the field, so a client learns what to
fix; the service maps it to 400 (``errors``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from mlops.serving.errors import BadInput, IncompleteFeatures

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[Any] = Field(description="Objects of feature name -> number, one per row.")


class EntityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_ids: list[StrictInt | StrictStr] = Field(
        description="Entity ids whose latest features the online store holds.")


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[float] | list[list[float]] = Field(description=(
        "Per row: the probability of class 1, the value (regression), or the probability "
        "of each class (multiclass, in the order of the model's classes)."))
    labels: list[int] | list[str] | None = Field(None, description=(
        "Classification: score >= 0.5; multiclass: the most probable class."))
    entity_ids: list[StrictInt | StrictStr] | None = None


def _number(value: Any, row: int, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"records[{row}].{name}: {_shown(value)} is not a number")
    # An int is compared as an int: a JSON integer beyond float64 (1e309 digits) would
    # overflow math.isfinite and float().
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > _FLOAT32_MAX:
        raise BadInput(f"records[{row}].{name}: {_shown(value)} is not a finite float32 value")
    return float(value)


def _shown(value: Any, limit: int = 40) -> str:
    """A value as the client sent it, cut short: an error never echoes a huge literal."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def records_to_matrix(records: Sequence[Any], feature_names: Sequence[str]) -> np.ndarray:
    """[rows, features] float32 from JSON records; BadInput names the first bad row/field."""
    if not records:
        raise BadInput("records is empty; send at least one record")
    expected = set(feature_names)
    matrix = np.empty((len(records), len(feature_names)), dtype=np.float32)
    for row, record in enumerate(records):
        check_record(row, record, feature_names, expected)
        matrix[row] = [_number(record[name], row, name) for name in feature_names]
    return matrix


def check_record(row: int, record: Any, feature_names: Sequence[str],
                 expected: set[str]) -> None:
    """A record is an object of exactly the model's features (``expected``: their set)."""
    if not isinstance(record, dict):
        raise BadInput(f"records[{row}] must be an object of feature values")
    missing = [name for name in feature_names if name not in record]
    if missing:
        raise BadInput(f"records[{row}]: missing feature(s) {missing}")
    extra = sorted(set(record) - expected)
    if extra:
        raise BadInput(f"records[{row}]: unknown field(s) {extra}")


def entity_matrix(values: np.ndarray, ids: Sequence[Any], columns: Sequence[str],
                  feature_names: Sequence[str]) -> np.ndarray:
    """The model's float32 columns of looked-up ``values`` (columns named by ``columns``);
    an entity with a null feature is refused, naming it and the feature."""
    if list(columns) != list(feature_names):
        absent = [name for name in feature_names if name not in columns]
        if absent:
            raise RuntimeError(f"feature lookup does not provide model features {absent}")
        values = values[:, [list(columns).index(name) for name in feature_names]]
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise IncompleteFeatures(f"entity {ids[row]!r}: stored feature "
                                 f"{feature_names[column]!r} has no value")
    return values.astype(np.float32)


def label_array(scores: np.ndarray, task: str, threshold: float = 0.5,
                classes: Sequence[int | str] | None = None) -> np.ndarray | None:
    """Classification labels as int64 (orjson writes them as ``scores_to_labels``' list);
    a multiclass model's most probable class (``classes`` in the order of its columns)."""
    if task == "multiclass" and classes is not None:
        return np.asarray(classes, dtype=object)[np.argmax(scores, axis=1)]
    return (scores >= threshold).astype(np.int64) if task == "classification" else None


def scores_to_labels(scores: np.ndarray, task: str, threshold: float = 0.5,
                     classes: Sequence[int | str] | None = None) -> list[int | str] | None:
    labels = label_array(scores, task, threshold, classes)
    return None if labels is None else labels.tolist()
