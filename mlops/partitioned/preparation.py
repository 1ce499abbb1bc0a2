"""Out-of-core feature preparation of a partitioned parquet dataset on Dask: each worker
reads one partition, keeps the training columns as training reads them, and writes one
output file per input file (under a temporary dot-name first, then renamed, so a failed
run leaves no half-written partition that readers would take)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import fsspec
import pandas as pd
from pydantic import BaseModel

from mlops.config import DatasetSpec, TaskType
from mlops.partitioned.cluster import dask_client
from mlops.partitioned.partitions import list_partitions, read_partition
from mlops.partitioned.worker_memory import freeze_long_lived, release_memory

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)



class PreparedDataset(BaseModel):
    """What out-of-core feature preparation wrote: the folder and its row counts."""

    path: str
    files: int
    rows_in: int
    rows_out: int


def prepare_frame(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The training columns of one partition, as training reads them.

    Spec columns only; rows without a label or missing a feature that is not nullable
    dropped (training rejects them); numeric features and a numeric label as float32 (what
    the model consumes), categories and class names as they are (the model's encoding reads
    them raw); the event timestamp as UTC datetimes. Pure: the input frame is not changed.
    """
    numbers = [*spec.numeric_features]
    if spec.task != TaskType.multiclass:
        numbers.append(spec.label)
    required = [c for c in spec.features if c not in spec.nullable] + [spec.label]
    kept = frame[spec.columns].dropna(subset=required)
    return kept.astype({c: "float32" for c in numbers}).assign(**{
        spec.timestamp: pd.to_datetime(kept[spec.timestamp], utc=True)}).reset_index(drop=True)


def prepare_partitions(root: str, spec: DatasetSpec, out: str, client: Client | None = None,
                       workers: int = 2) -> PreparedDataset:
    """``prepare_frame`` on every partition of ``root``, one output file per input file."""
    files = list_partitions(root)
    with dask_client(client, workers) as dask:
        counts = dask.gather(dask.map(_prepare_one, files, spec=spec, out=out, pure=False))
    prepared = PreparedDataset(path=out, files=len(files), rows_in=sum(c[0] for c in counts),
                               rows_out=sum(c[1] for c in counts))
    log.info("prepared %s: %d of %d rows kept in %d files under %s", spec.name,
             prepared.rows_out, prepared.rows_in, prepared.files, out)
    return prepared


def _prepare_one(url: str, spec: DatasetSpec, out: str) -> tuple[int, int]:
    """Worker side: read, prepare and write one partition; returns rows in and out."""
    freeze_long_lived()
    frame = read_partition(url, columns=spec.columns)
    prepared = prepare_frame(frame, spec)
    fs, path = fsspec.core.url_to_fs(out)
    fs.makedirs(path, exist_ok=True)
    name = url.rsplit("/", 1)[-1]
    partial = f"{path}/.{name}.tmp"  # a dot file: readers skip it, so no half-written part
    with fs.open(partial, "wb") as handle:
        prepared.to_parquet(handle, index=False)
    fs.mv(partial, f"{path}/{name}")
    rows = len(frame), len(prepared)
    del frame, prepared
    release_memory()
    return rows
