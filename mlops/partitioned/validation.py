"""Out-of-core validation of a partitioned parquet dataset on Dask (feature preparation of
the same partitions: ``mlops/partitioned/preparation.py``).

Great Expectations 1.x has no Dask data source, so each parquet file is one partition: a
Dask worker reads it, runs the same suite as the in-memory path (``validate_frame``) on it,
and sends back only a small ``PartitionResult``. Nothing ever collects the dataset.

Three expectations of the suite speak about the whole table and are decided here from
per-partition pieces instead of per partition: the row count (summed), the label's
distinct-value count (a union of the distinct values each partition sends back) and the
uniqueness of (entity, timestamp). For uniqueness each worker writes the 64-bit hashes of
its keys into hash buckets under a scratch folder; a second pass loads one bucket at a time
and counts the rows whose hash occurs more than once, naming their partitions. This sees
duplicates across partitions, unlike a per-partition check, with memory bounded by the
bucket size. A 64-bit hash can only add false alarms, never miss a duplicate: about
n^2 / 2^65, i.e. 3e-4 for 10^8 rows.

One check exists only here: every partition holds the same kind of data in each spec
column (``mlops.data.schema``). Files that each pass alone may still not be one table:
entity ids that are integers in one file and strings in another.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlops.config import DatasetSpec
from mlops.data.loading import DataError
from mlops.data.schema import column_kinds, kind_failures
from mlops.data.validation import (
    FailedExpectation,
    ValidationFailed,
    ValidationReport,
    validate_frame,
)
from mlops.partitioned.cluster import dask_client
from mlops.partitioned.partitions import list_partitions, read_partition
from mlops.partitioned.worker_memory import freeze_long_lived, release_memory

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

ROW_COUNT = "expect_table_row_count_to_be_between"
UNIQUE_KEYS = "expect_compound_columns_to_be_unique"
DISTINCT_COUNT = "expect_column_unique_value_count_to_be_between"
DATASET_LEVEL = {ROW_COUNT, UNIQUE_KEYS, DISTINCT_COUNT}
DISTINCT_CAP = 1_000  # distinct values a partition sends back per column


class DatasetCheck(BaseModel):
    """One whole-table expectation of the suite, decided from per-partition pieces."""

    expectation: str
    kwargs: dict[str, Any]


class PartitionResult(BaseModel):
    """What one worker sends back for one partition file: small, whatever its size."""

    index: int
    file: str
    rows: int = 0
    content_hash: str = ""
    evaluated: int = 0
    failed: list[FailedExpectation] = []
    distinct: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    error: str | None = None


class PartitionFailure(BaseModel):
    """A failing partition and the expectations it failed."""

    index: int
    file: str
    failed: list[FailedExpectation]


class PartitionedReport(BaseModel):
    """One report for the whole dataset: totals, failures summed, failing partitions named."""

    dataset: str
    root: str
    rows: int
    dataset_hash: str
    partitions: int
    success: bool
    evaluated: int
    failed: list[FailedExpectation]
    failing_partitions: list[PartitionFailure]
    seconds: float

    def summary(self) -> str:
        """The failed expectations and the partitions that failed them, one per line."""
        head = (f"dataset {self.dataset!r} ({self.rows} rows in {self.partitions} partitions"
                f" under {self.root}): {len(self.failed)} of {self.evaluated} expectations")
        if self.success:
            return f"{head} failed"
        lines = [f"{head} failed:", *(f"- {f.describe()}" for f in self.failed),
                 "failing partitions:"]
        lines += [f"- {p.index} ({p.file}): {', '.join(f.expectation for f in p.failed)}"
                  for p in self.failing_partitions]
        return "\n".join(lines)

    def as_validation_report(self) -> ValidationReport:
        """The in-memory report model, so callers of the in-memory path can read it."""
        return ValidationReport(
            dataset=self.dataset, dataset_hash=self.dataset_hash, rows=self.rows,
            success=self.success, evaluated=self.evaluated, failed=self.failed,
            seconds=self.seconds)


def require_valid_partitions(report: PartitionedReport) -> PartitionedReport:
    """The report unchanged when it passed, else ValidationFailed naming partitions."""
    if not report.success:
        raise ValidationFailed(report.summary(), report.as_validation_report())
    return report


def validate_partitions(root: str, spec: DatasetSpec, client: Client | None = None,
                        now: datetime | None = None, scratch: str | None = None,
                        workers: int = 2) -> PartitionedReport:
    """Validate every partition of ``root`` on Dask and aggregate one report.

    ``scratch`` holds the key-hash buckets of the uniqueness pass: a local temporary
    folder by default, which suits a local cluster; workers on other machines need a
    shared URL (s3://...). Unreadable files raise DataError naming every one of them.
    """
    start = time.perf_counter()
    now = now or datetime.now(UTC)
    files = list_partitions(root)
    owned = scratch is None
    scratch = scratch or tempfile.mkdtemp(prefix="mlops-keys-")
    buckets = max(1, math.ceil(len(files) / 4))  # ~4 partitions' key hashes per bucket
    try:
        with dask_client(client, workers) as dask:
            checks = dask.submit(_dataset_checks, spec, now, pure=False).result()
            results = dask.gather(dask.map(
                _validate_one, range(len(files)), files, spec=spec, now=now, checks=checks,
                scratch=scratch, buckets=buckets, pure=False))
            _raise_unreadable(results)
            duplicates = dask.gather(dask.map(
                _count_duplicates, [f"{scratch}/bucket-{b:04d}" for b in range(buckets)],
                pure=False))
    finally:
        if owned:
            shutil.rmtree(scratch, ignore_errors=True)
    return _aggregate(root, spec, results, checks, duplicates, time.perf_counter() - start)


def _dataset_checks(spec: DatasetSpec, now: datetime) -> list[DatasetCheck]:
    # Built on a worker: the client process never needs to import Great Expectations.
    from mlops.data.expectations import build_expectations

    configs = [e.configuration for e in build_expectations(spec, now)]
    return [DatasetCheck(expectation=c.type, kwargs=dict(c.kwargs))
            for c in configs if c.type in DATASET_LEVEL]


def _validate_one(index: int, url: str, spec: DatasetSpec, now: datetime,
                  checks: list[DatasetCheck], scratch: str, buckets: int) -> PartitionResult:
    """Worker side: the suite on one partition, minus the whole-table checks."""
    import great_expectations.expectations  # noqa: F401 (imported before the freeze)

    freeze_long_lived()
    name = url.rsplit("/", 1)[-1]
    try:
        frame = read_partition(url)
    except DataError as exc:
        return PartitionResult(index=index, file=name, error=str(exc))
    report = validate_frame(frame, spec, now) if len(frame) else None
    distinct = {c.kwargs["column"]: _distinct(frame, c.kwargs["column"])
                for c in checks if c.expectation == DISTINCT_COUNT}
    for check in checks:
        if check.expectation == UNIQUE_KEYS:
            _write_key_hashes(frame, check.kwargs["column_list"], index, scratch, buckets)
    release_memory()
    return PartitionResult(
        index=index, file=name, rows=len(frame), distinct=distinct,
        kinds=column_kinds(frame, spec.columns),
        content_hash=report.dataset_hash if report else "",
        evaluated=report.evaluated if report else 0,
        failed=[f for f in report.failed if f.expectation not in DATASET_LEVEL] if report else [])


def _distinct(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame.columns:
        return []
    values = frame[column].dropna()
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        values = values.astype("float64")  # 1, 1.0 and True are one class in every partition
    return [repr(v) for v in values.unique()[:DISTINCT_CAP].tolist()]


def _write_key_hashes(frame: pd.DataFrame, columns: list[str], index: int, scratch: str,
                      buckets: int) -> None:
    """The partition's key hashes, split by hash into one .npy file per bucket."""
    if not set(columns) <= set(frame.columns):
        return  # the per-partition suite already reports the missing column
    hashes = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    fs, path = fsspec.core.url_to_fs(scratch)
    bucket_of = hashes % np.uint64(buckets)
    for bucket in range(buckets):
        fs.makedirs(f"{path}/bucket-{bucket:04d}", exist_ok=True)
        with fs.open(f"{path}/bucket-{bucket:04d}/{index:06d}.npy", "wb") as handle:
            np.save(handle, hashes[bucket_of == bucket])


def _count_duplicates(bucket: str) -> tuple[int, list[int]]:
    """Worker side: rows whose key hash repeats in this bucket, and their partitions."""
    fs, path = fsspec.core.url_to_fs(bucket)
    if not fs.isdir(path):
        return 0, []
    names = sorted(fs.ls(path, detail=False))
    parts = []
    for name in names:
        with fs.open(name, "rb") as handle:
            parts.append(np.load(handle))
    hashes = np.concatenate(parts) if parts else np.empty(0, np.uint64)
    owners = np.repeat([int(n.rsplit("/", 1)[-1][:-4]) for n in names], [len(p) for p in parts])
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    repeated = np.zeros(len(ordered), bool)
    same = ordered[1:] == ordered[:-1]
    repeated[1:] |= same
    repeated[:-1] |= same
    return int(repeated.sum()), sorted(set(owners[order][repeated].tolist()))


def _raise_unreadable(results: list[PartitionResult]) -> None:
    bad = [r for r in results if r.error]
    if bad:
        lines = "\n".join(f"- {r.error}" for r in bad)
        raise DataError(f"{len(bad)} of {len(results)} partition files unreadable:\n{lines}")


def _aggregate(root: str, spec: DatasetSpec, results: list[PartitionResult],
               checks: list[DatasetCheck], duplicates: list[tuple[int, list[int]]],
               seconds: float) -> PartitionedReport:
    """Sum the partitions' failures and add the whole-table checks' verdicts."""
    rows = sum(r.rows for r in results)
    table = [_table_check(c, results, rows, duplicates) for c in checks]
    table += kind_failures({r.index: r.kinds for r in results})
    failed = [*_sum_failures(results, rows), *(f for f, _ in table if f is not None)]
    named: dict[int, list[FailedExpectation]] = defaultdict(list)
    for result in results:
        named[result.index] += result.failed
    for failure, partitions in table:
        for index in partitions:
            named[index].append(failure)
    files = {r.index: r.file for r in results}
    failing = [PartitionFailure(index=i, file=files[i], failed=f)
               for i, f in sorted(named.items()) if f]
    report = PartitionedReport(
        dataset=spec.name, root=root, rows=rows, dataset_hash=content_hash(results),
        partitions=len(results), success=not failed,
        evaluated=max((r.evaluated for r in results), default=0), failed=failed,
        failing_partitions=failing, seconds=round(seconds, 3))
    log.info("validated %s: %d rows in %d partitions, %d failing, in %.1fs", spec.name, rows,
             len(results), len(failing), seconds)
    return report


def _sum_failures(results: list[PartitionResult], rows: int) -> list[FailedExpectation]:
    """Failures of the same expectation (same arguments) in several partitions, summed."""
    groups: dict[str, list[FailedExpectation]] = defaultdict(list)
    for result in results:
        for failure in result.failed:
            groups[f"{failure.expectation}{sorted(failure.kwargs.items())}"].append(failure)
    summed = []
    for same in groups.values():
        counts = [f.unexpected_count for f in same if f.unexpected_count is not None]
        total = sum(counts) if counts else None
        summed.append(same[0].model_copy(update={
            "unexpected_count": total,
            "unexpected_percent": None if total is None else 100 * total / max(rows, 1)}))
    return summed


def _table_check(check: DatasetCheck, results: list[PartitionResult], rows: int,
                 duplicates: list[tuple[int, list[int]]]
                 ) -> tuple[FailedExpectation | None, list[int]]:
    """One whole-table expectation: its failure (None if it held) and partitions to blame."""
    low, high = check.kwargs.get("min_value"), check.kwargs.get("max_value")
    failure = FailedExpectation(expectation=check.expectation, kwargs=check.kwargs)
    if check.expectation == UNIQUE_KEYS:
        count = sum(c for c, _ in duplicates)
        blamed = sorted({i for _, parts in duplicates for i in parts})
        percent = 100 * count / max(rows, 1)
        return (failure.model_copy(update={"unexpected_count": count,
                                           "unexpected_percent": percent})
                if count else None), blamed
    observed = rows if check.expectation == ROW_COUNT else len(
        {v for r in results for v in r.distinct.get(check.kwargs["column"], [])})
    held = (low is None or observed >= low) and (high is None or observed <= high)
    return (None if held else failure.model_copy(update={"observed": str(observed)})), []


def content_hash(results: list[PartitionResult]) -> str:
    """sha256 over the partitions' content hashes, in partition order."""
    digest = hashlib.sha256()
    for result in sorted(results, key=lambda r: r.index):
        digest.update(result.content_hash.encode())
    return digest.hexdigest()
