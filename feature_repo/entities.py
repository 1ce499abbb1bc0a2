"""The entity: the spec's entity column is both its name and its join key."""

from __future__ import annotations

import pyarrow as pa
from feast import Entity, ValueType

from feature_repo.dataset import Dataset


def join_key_type(spec: Dataset, schema: pa.Schema) -> ValueType:
    """INT64 for integer keys, STRING for string keys; anything else cannot be joined on."""
    if spec.entity not in schema.names:
        raise ValueError(f"feature source has no entity column {spec.entity!r}")
    arrow_type = schema.field(spec.entity).type
    if pa.types.is_integer(arrow_type):
        return ValueType.INT64
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return ValueType.STRING
    raise ValueError(
        f"entity column {spec.entity!r} has type {arrow_type}; use integers or strings"
    )


def entity_for(spec: Dataset, schema: pa.Schema) -> Entity:
    return Entity(
        name=spec.entity,
        join_keys=[spec.entity],
        value_type=join_key_type(spec, schema),
        description=f"Entity key of dataset {spec.name}.",
    )
