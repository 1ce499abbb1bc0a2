"""Loading a dataset named by a spec, and its content hash for lineage."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd

from mlops.config import DatasetSpec
from mlops.data import storage

log = logging.getLogger(__name__)
BUILTIN = "builtin://"


class DataError(ValueError):
    """A dataset that cannot be read; the message names the file and the problem."""


def load_dataset(spec: DatasetSpec) -> pd.DataFrame:
    """Read the spec's dataset; the timestamp column is parsed to UTC when it can be.

    Column checks are validation's job: this only refuses what cannot be read at all.
    """
    if spec.path.startswith(BUILTIN):
        frame = _load_builtin(spec.path.removeprefix(BUILTIN))
    else:
        frame = _read_file(spec.path)
    return _parse_timestamp(frame, spec.timestamp)


def _load_builtin(name: str) -> pd.DataFrame:
    if name != "wage_panel":
        raise DataError(f"unknown builtin dataset {name!r}; known: wage_panel")
    from linearmodels.datasets import wage_panel

    frame = wage_panel.load()
    # One row per person-year: the event happens at the start of that year.
    frame["event_timestamp"] = pd.to_datetime(frame.pop("year").astype(str), utc=True)
    return frame


def _read_file(path: str) -> pd.DataFrame:
    if "://" in path and not path.startswith("s3://"):  # the readers would fetch any URL
        raise DataError(f"{path}: only local files and s3:// objects are read")
    suffix = Path(path.split("?")[0]).suffix.lower()
    if not suffix:  # a folder would have been read as partitions: there is none
        raise DataError(f"{path}: no dataset file or folder of parquet partitions there")
    if suffix not in {".parquet", ".pq", ".csv"}:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .parquet or .csv)")
    if "://" not in path:
        if not Path(path).is_file():
            raise DataError(f"{path}: dataset file not found")
        if Path(path).stat().st_size == 0:
            raise DataError(f"{path}: dataset file is empty (0 bytes)")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return storage.read_parquet(path)
    except storage.unavailable_errors():
        raise  # an outage, not a bad file: the stage reports it and its task retries
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: dataset file has no columns") from None
    except FileNotFoundError:
        raise DataError(f"{path}: dataset file not found") from None
    except Exception as exc:  # each reader raises its own types for unreadable bytes
        raise DataError(f"{path}: cannot parse as {suffix[1:]}: {exc}") from None


def _parse_timestamp(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in frame.columns or isinstance(frame[column].dtype, pd.DatetimeTZDtype):
        return frame
    try:
        parsed = pd.to_datetime(frame[column], utc=True)
    except (ValueError, TypeError, OverflowError):
        log.warning("timestamp column %r is not parseable; validation will report it", column)
        return frame
    return frame.assign(**{column: parsed})


def dataset_hash(frame: pd.DataFrame) -> str:
    """sha256 of the frame's content and schema, independent of row index."""
    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
