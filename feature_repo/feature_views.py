"""One feature view holding every feature of the spec, served online."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64, PrimitiveFeastType, String

from feature_repo.dataset import Dataset

# Feature values never expire within a panel: leakage is prevented by the point-in-time
# join (a value is used only at or after its own timestamp), not by the ttl. A century
# covers any panel while keeping now - ttl inside pandas' timestamp range.
FEATURE_TTL = timedelta(days=36_500)


def feature_view_name(spec: Dataset) -> str:
    return f"{spec.name}_features"


def field_type(column: str, schema: pa.Schema) -> PrimitiveFeastType:
    """Int64 for integer columns, Float64 for floating ones, String for text (a categorical
    feature's categories); nothing else is a feature."""
    if column not in schema.names:
        raise ValueError(f"feature source has no feature column {column!r}")
    arrow_type = schema.field(column).type
    if pa.types.is_integer(arrow_type):
        return Int64
    if pa.types.is_floating(arrow_type):
        return Float64
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return String
    raise ValueError(f"feature {column!r} has type {arrow_type}; features must be numbers or "
                     "text")


def feature_view_for(spec: Dataset, entity: Entity, source: FileSource,
                     schema: pa.Schema, ttl: timedelta = FEATURE_TTL) -> FeatureView:
    fields = [Field(name=column, dtype=field_type(column, schema)) for column in spec.features]
    return FeatureView(
        name=feature_view_name(spec),
        entities=[entity],
        ttl=ttl,
        schema=fields,
        online=True,
        source=source,
        tags={"dataset": spec.name},
    )
