"""The partition files of a partitioned parquet dataset: listing them and reading one.

A dataset is a folder (local or an fsspec URL such as s3://) of parquet files, one
partition each, or a single parquet file (one partition).
"""

from __future__ import annotations

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops.data.loading import DataError
from mlops.data.storage import unavailable_errors


def list_partitions(root: str) -> list[str]:
    """The dataset's parquet files (local path or fsspec URL), sorted by name; a single
    parquet file is a dataset of one partition."""
    fs, path = fsspec.core.url_to_fs(root)
    if path.endswith((".parquet", ".pq")) and fs.isfile(path):
        return [root]
    if not fs.isdir(path):
        raise DataError(f"{root}: neither a parquet file nor a folder of parquet partitions")
    files = sorted(p for p in fs.find(path)  # "_" and "." files are metadata, as for pyarrow
                   if p.endswith(".parquet") and p.rsplit("/", 1)[-1][0] not in "_.")
    if not files:
        raise DataError(f"{root}: no .parquet files")
    return [fs.unstrip_protocol(p) if "://" in root else p for p in files]


def read_partition(url: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One partition file as pandas; an unreadable file raises DataError naming it."""
    return read_partition_table(url, columns).to_pandas()


def read_partition_table(url: str, columns: list[str] | None = None) -> pa.Table:
    """One partition file as an arrow table; an unreadable file raises DataError naming it."""
    fs, path = fsspec.core.url_to_fs(url)
    try:
        return pq.read_table(path, columns=columns, filesystem=fs)
    except unavailable_errors():
        raise  # the object store is down, the file may be fine: the stage says so, retries
    except Exception as exc:  # pyarrow raises several types for bytes that are not parquet
        raise DataError(f"{url}: cannot read partition as parquet: {exc}") from None
