"""The offline source: the validated feature parquet written by the features stage."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FileSource

from mlops.config import DatasetSpec


def source_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_source"


def source_schema(source_path: str | Path) -> pa.Schema:
    """The parquet schema (read from the footer only), which decides the Feast types."""
    try:
        return pq.read_schema(str(source_path))
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"feature source {source_path} cannot be read: {exc}") from None


def source_for(spec: DatasetSpec, source_path: str | Path) -> FileSource:
    """A FileSource over the offline parquet; its event time is the spec's timestamp."""
    return FileSource(
        name=source_name(spec),
        path=str(Path(source_path).resolve()),
        timestamp_field=spec.timestamp,
        description=f"Validated features of dataset {spec.name} (no label).",
    )
