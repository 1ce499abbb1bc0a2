"""Raw feature rows for a model that encodes its features itself (categorical or nullable
ones): strings, integer codes, numbers and nulls checked per feature, as an object matrix
in the model's feature order (pure).

Such a model's graph takes raw values (``mlops.data.encoding``), so the service checks only
what each feature may hold: a category is a string or an integer code, a number a finite
float32, and null only where the spec declared the feature nullable. An unseen category is
no error: the model gives it the unknown bucket. A bad value raises ``BadInput`` naming the
row and the feature. The v1 records route and the v2 per-feature tensors (JSON data, BYTES
for a category) come here; a model of numbers only never does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops.data.encoding import FeatureEncoding
from mlops.serving.errors import BadInput, IncompleteFeatures, check_rows
from mlops.serving.v1_payloads import check_record

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMERIC_DATATYPES = {"BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                      "UINT64", "FP16", "FP32", "FP64"}


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def raw_value(value: Any, where: str, name: str, encoding: FeatureEncoding) -> Any:
    """``value`` as the model takes it for feature ``name``; BadInput names ``where``."""
    if value is None:
        if name in encoding.nullable:
            return None
        raise BadInput(f"{where}: {name!r} is null, and this model's spec does not list it "
                       "under nullable")
    if isinstance(value, bool):
        raise BadInput(f"{where}: {_shown(value)} is neither a number nor a category")
    if name in encoding.categorical:
        if isinstance(value, str) or isinstance(value, int) or (
                isinstance(value, float) and value.is_integer()):
            return value
        raise BadInput(f"{where}: {_shown(value)} is not a category of {name!r} (send a "
                       "string or an integer code)")
    if not isinstance(value, int | float):
        raise BadInput(f"{where}: {_shown(value)} is not a number ({name!r} is numeric)")
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > _FLOAT32_MAX:
        raise BadInput(f"{where}: {_shown(value)} is not a finite float32 value")
    return value


def records_matrix(records: Sequence[Any], encoding: FeatureEncoding) -> np.ndarray:
    """[rows, features] object matrix of JSON records (v1 ``records``)."""
    if not records:
        raise BadInput("records is empty; send at least one record")
    names = encoding.features
    expected = set(names)
    matrix = np.empty((len(records), len(names)), dtype=object)
    for row, record in enumerate(records):
        check_record(row, record, names, expected)
        matrix[row] = [raw_value(record[name], f"records[{row}].{name}", name, encoding)
                       for name in names]
    return matrix


def tensors_matrix(inputs: Sequence[Any], encoding: FeatureEncoding,
                   max_batch: int) -> np.ndarray:
    """[batch, features] object matrix of v2 inputs, one per feature (``name``, ``shape``
    [batch] or [batch, 1], ``datatype``: BYTES for a category's strings, a numeric type
    otherwise, and JSON ``data``; null where the feature is nullable)."""
    names = encoding.features
    given = [tensor.name for tensor in inputs]
    if sorted(given) != sorted(names) or len(set(given)) != len(given):
        raise BadInput(f"this model takes one input per feature {names} (BYTES for the "
                       f"categories {encoding.categorical}); got {given}")
    columns, batch = {}, None
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}] ({tensor.name!r})"
        columns[tensor.name] = _column(where, tensor, encoding)
        if batch not in (None, len(columns[tensor.name])):
            raise BadInput(f"per-feature inputs disagree on the batch size: {batch} and "
                           f"{len(columns[tensor.name])}")
        batch = len(columns[tensor.name])
    if not batch:
        raise BadInput("the batch is empty; send at least one row")
    check_rows(batch, max_batch, "rows")
    matrix = np.empty((batch, len(names)), dtype=object)
    for position, name in enumerate(names):
        matrix[:, position] = columns[name]
    return matrix


def _column(where: str, tensor: Any, encoding: FeatureEncoding) -> list[Any]:
    name, shape, datatype = tensor.name, list(tensor.shape), tensor.datatype
    if len(shape) not in (1, 2) or shape[1:] not in ([], [1]) or shape[0] < 0:
        raise BadInput(f"{where}: shape must be [batch] or [batch, 1], is {shape}")
    if tensor.data is None or (tensor.parameters or {}).get("binary_data_size") is not None:
        raise BadInput(f"{where}: send this model's inputs as JSON 'data' (its categories "
                       "are strings; the binary extension is for numeric models)")
    if datatype == "BYTES" and name not in encoding.categorical:
        raise BadInput(f"{where}: {name!r} is numeric; declare a numeric datatype, not BYTES")
    if datatype != "BYTES" and datatype not in _NUMERIC_DATATYPES:
        raise BadInput(f"{where}: datatype {datatype!r} is not accepted")
    values = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in tensor.data]
    if len(values) != shape[0]:
        raise BadInput(f"{where}: shape {shape} holds {shape[0]} values, data has {len(values)}")
    column = []
    for row, value in enumerate(values):
        if datatype == "BYTES" and value is not None and not isinstance(value, str):
            raise BadInput(f"{where}[{row}]: {_shown(value)} is not a string (BYTES)")
        if datatype != "BYTES" and isinstance(value, str):
            raise BadInput(f"{where}[{row}]: {_shown(value)} is a string; declare BYTES for "
                           "a category's strings")
        column.append(raw_value(value, f"{where}[{row}]", name, encoding))
    return column


def entity_rows(values: np.ndarray, ids: Sequence[Any], encoding: FeatureEncoding
                ) -> np.ndarray:
    """Looked-up raw values ([ids, features] in feature order) as the model takes them: an
    entity with a null where the feature is not nullable is refused, naming both."""
    for column, name in enumerate(encoding.features):
        if name in encoding.nullable:
            continue
        for row, value in enumerate(values[:, column]):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise IncompleteFeatures(f"entity {ids[row]!r}: stored feature {name!r} "
                                         "has no value")
    return values
