"""How raw feature values become the network's float matrix: imputation and one-hot codes.

The same encoding runs twice: here in numpy, to train the network on the train split, and
inside the exported ONNX graph (``encoding_graph``), so serving takes raw values (strings
included) and the parity gate compares the two. Its learned parts (the fill value of each
number, the known categories of each categorical) come from the train split only.

The network's columns: the numeric features in spec order (nulls replaced by the train
median), then per categorical feature one column for "unknown" (unseen, null or beyond the
most frequent ``MAX_CATEGORIES``) and one per known category. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from mlops.config import DatasetSpec

if TYPE_CHECKING:  # pandas is imported where it is used: the GPU check has torch only
    import pandas as pd

# One-hot columns per categorical feature at most; rarer categories share the unknown one,
# so an id-like column cannot blow the network's input up to its number of rows.
MAX_CATEGORIES = 64
NUMBERS, CATEGORIES = "features", "categories"  # the exported graph's raw inputs


class EncodingError(ValueError):
    """Values the encoding cannot take; the message names the column."""


class FeatureEncoding(BaseModel):
    """What the train split taught: medians of the numbers, categories of the categoricals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[str]  # every feature, spec order (the order raw rows arrive in)
    numeric: list[str]
    fill: list[float]  # per numeric feature: the value a null takes (train median)
    categorical: list[str]
    categories: list[list[str]]  # per categorical feature: known categories, column 1..n
    nullable: list[str]

    @property
    def width(self) -> int:
        """Columns of the network's input."""
        return len(self.numeric) + sum(len(known) + 1 for known in self.categories)

    @property
    def columns(self) -> list[str]:
        """Names of the network's input columns (``continent=Asia``, ``continent=?``)."""
        names = list(self.numeric)
        for column, known in zip(self.categorical, self.categories, strict=True):
            names += [f"{column}=?", *(f"{column}={value}" for value in known)]
        return names


def category_text(value: Any) -> str:
    """The category a raw value names: integer codes as digits whatever their type (3, 3.0
    and "3" are one category), strings as they are; "" for a null."""
    if value is None or type(value).__name__ == "NAType":  # pandas' NA, without pandas
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def category_texts(values: Iterable[Any]) -> np.ndarray:
    """``category_text`` of each value, as the object array ONNX Runtime takes for strings."""
    return np.array([category_text(value) for value in values], dtype=object)


def fit_encoding(train: pd.DataFrame, spec: DatasetSpec) -> FeatureEncoding:
    """Medians and known categories of the train split (the most frequent first, at most
    ``MAX_CATEGORIES``); a feature that is null throughout cannot be learned from."""
    import pandas as pd

    numeric = spec.numeric_features
    fill = []
    for column in numeric:
        values = pd.to_numeric(train[column], errors="coerce")
        if values.isna().all():
            raise EncodingError(f"feature {column!r} is null in every train row")
        fill.append(float(values.median()))
    categories = []
    for column in spec.categorical:
        texts = pd.Series(category_texts(train[column]))
        counts = texts[texts != ""].value_counts()
        if counts.empty:
            raise EncodingError(f"categorical feature {column!r} is null in every train row")
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        categories.append([text for text, _ in ranked[:MAX_CATEGORIES]])
    return FeatureEncoding(features=list(spec.features), numeric=numeric, fill=fill,
                           categorical=list(spec.categorical), categories=categories,
                           nullable=list(spec.nullable))


def raw_inputs(frame: pd.DataFrame | np.ndarray, encoding: FeatureEncoding
               ) -> dict[str, np.ndarray]:
    """The exported graph's inputs from raw rows (a frame, or an object matrix in feature
    order): numbers as float32 (NaN for a null), categories as strings ("" for a null)."""
    if hasattr(frame, "columns"):  # a DataFrame: its nulls (NaN, NA, None) become None
        columns = frame[encoding.features].astype(object)
        matrix = columns.where(columns.notna(), None).to_numpy()
    else:
        matrix = np.asarray(frame)
    inputs: dict[str, np.ndarray] = {}
    if encoding.numeric:
        index = [encoding.features.index(c) for c in encoding.numeric]
        try:
            inputs[NUMBERS] = np.array(matrix[:, index], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EncodingError(f"numeric features {encoding.numeric} must hold numbers: "
                                f"{exc}") from None
    if encoding.categorical:
        index = [encoding.features.index(c) for c in encoding.categorical]
        inputs[CATEGORIES] = category_texts(matrix[:, index].reshape(-1)).reshape(
            len(matrix), len(index))
    return inputs


def encode(frame: pd.DataFrame | np.ndarray, encoding: FeatureEncoding) -> np.ndarray:
    """The network's float32 input for raw rows: what the graph's encoding computes."""
    inputs = raw_inputs(frame, encoding)
    parts = []
    if encoding.numeric:
        numbers = inputs[NUMBERS]
        parts.append(np.where(np.isnan(numbers), np.float32(encoding.fill), numbers))
    for j, known in enumerate(encoding.categories):
        position = {text: i + 1 for i, text in enumerate(known)}
        codes = np.array([position.get(text, 0) for text in inputs[CATEGORIES][:, j]],
                         dtype=np.int64)
        parts.append(np.eye(len(known) + 1, dtype=np.float32)[codes])
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)
