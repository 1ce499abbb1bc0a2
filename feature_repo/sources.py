"""The offline source: the validated feature parquet written by the features stage."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FileSource

from feature_repo.dataset import Dataset


def source_name(spec: Dataset) -> str:
    return f"{spec.name}_source"


def source_schema(source_path: str | Path) -> pa.Schema:
    """The parquet schema (read from the footer only), which decides the Feast types."""
    try:
        fs, path = fsspec.core.url_to_fs(str(source_path))  # s3:// with the platform's options
        return pq.read_schema(path, filesystem=fs)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"feature source {source_path} cannot be read: {exc}") from None


def source_for(spec: Dataset, source_path: str | Path,
               s3_endpoint: str | None = None) -> FileSource:
    """A FileSource over the offline parquet (a local file, or an s3:// object read through
    s3fs at ``s3_endpoint``); its event time is the spec's timestamp."""
    remote = str(source_path).startswith("s3://")
    return FileSource(
        name=source_name(spec),
        path=str(source_path) if remote else str(Path(source_path).resolve()),
        s3_endpoint_override=s3_endpoint if remote else None,
        timestamp_field=spec.timestamp,
        description=f"Validated features of dataset {spec.name} (no label).",
    )
