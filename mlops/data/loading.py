"""Loading a dataset named by a spec, and its content hash for lineage."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import fsspec
import pandas as pd

from mlops.config import DatasetSpec
from mlops.data import storage
from mlops.data.timestamps import parse_event_times

log = logging.getLogger(__name__)
BUILTIN = "builtin://"
_RENAMED = re.compile(r"(.+)\.\d+")  # pandas' name for the n-th repeat of a header name


class DataError(ValueError):
    """A dataset that cannot be read; the message names the file and the problem."""


def load_dataset(spec: DatasetSpec) -> pd.DataFrame:
    """Read the spec's dataset; the timestamp column is parsed to UTC when every value
    names its instant (``mlops.data.timestamps``: naive or epoch times are left as they
    are, for validation to refuse with the reason).

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
            return _read_csv(path)
        return storage.read_parquet(path)
    except storage.unavailable_errors():
        raise  # an outage, not a bad file: the stage reports it and its task retries
    except UnicodeDecodeError as exc:
        raise DataError(_not_utf8(path, exc)) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: dataset file has no columns") from None
    except FileNotFoundError:
        raise DataError(f"{path}: dataset file not found") from None
    except Exception as exc:  # each reader raises its own types for unreadable bytes
        raise DataError(f"{path}: cannot parse as {suffix[1:]}: {exc}") from None


def _read_csv(path: str) -> pd.DataFrame:
    """A UTF-8 CSV (pandas drops a leading byte-order mark from the first name). A header
    that names a column twice keeps both names, so that validation refuses the duplicate:
    pandas would rename the second ``a`` to ``a.1`` and the check would never see it."""
    frame = pd.read_csv(path)
    names = set(frame.columns.astype(str))
    if not any((m := _RENAMED.fullmatch(n)) and m[1] in names for n in names):
        return frame
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    raw = header.iloc[0].tolist()
    if len(raw) == frame.shape[1] and len(set(raw)) < len(raw):
        frame.columns = raw
    return frame


def _not_utf8(path: str, exc: UnicodeDecodeError) -> str:
    """The refusal of a file that is not UTF-8, naming the first bad byte and its line."""
    byte = exc.object[exc.start:exc.start + 1].hex()
    line = _first_undecodable_line(path)
    where = f" on line {line}" if line else ""
    return (f"{path}: not UTF-8 text (byte 0x{byte}{where}; Latin-1 or Windows-1252, "
            "perhaps): the encoding is not guessed, save the file as UTF-8")


def _first_undecodable_line(path: str) -> int | None:
    # UTF-8 never uses the newline byte inside a character, so lines decode independently.
    try:
        with fsspec.open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    except OSError:
        return None
    return None


def _parse_timestamp(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in frame.columns:
        return frame
    parsed = parse_event_times(frame[column])
    if not isinstance(parsed.dtype, pd.DatetimeTZDtype):
        log.warning("timestamp column %r holds no UTC times; validation will report it", column)
        return frame
    return frame.assign(**{column: parsed})


def dataset_hash(frame: pd.DataFrame) -> str:
    """sha256 of the frame's content and schema, independent of row index."""
    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
