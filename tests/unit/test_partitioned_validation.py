"""Out-of-core validation and feature preparation on a small partitioned dataset.

A real Dask cluster, in-process (``processes=False``): worker processes would spend most
of these tests' time starting and importing Great Expectations in each worker, and the
code under test is the same either way (tasks are pickled to the in-process workers too).
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from benchmarks.synthetic import partition_name, synthetic_spec, write_partitioned_panel
from mlops.data.loading import DataError
from mlops.data.validation import ValidationFailed, validate_frame
from mlops.partitioned.preparation import prepare_partitions
from mlops.partitioned.validation import (
    list_partitions,
    require_valid_partitions,
    validate_partitions,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ROWS, PART = 20_000, 5_000
SPEC = synthetic_spec("unused")


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as dask:
        yield dask


def _kinds(failed) -> set[tuple[str, str]]:
    return {(f.expectation, str(f.kwargs.get("column", f.kwargs.get("column_list"))))
            for f in failed}


def _concat(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in list_partitions(str(root))],
                     ignore_index=True)


def test_clean_dataset_passes_with_every_row_counted(tmp_path, client):
    write_partitioned_panel(tmp_path, ROWS, PART)
    report = require_valid_partitions(validate_partitions(str(tmp_path), SPEC, client, NOW))
    assert (report.success, report.rows, report.partitions) == (True, ROWS, 4)
    assert report.evaluated == validate_frame(_concat(tmp_path), SPEC, NOW).evaluated
    assert report.failing_partitions == []


def test_bad_partition_is_named_with_the_same_failures_as_in_memory(tmp_path, client):
    write_partitioned_panel(tmp_path, ROWS, PART, bad_partitions=[2])
    report = validate_partitions(str(tmp_path), SPEC, client, NOW)
    assert not report.success
    assert [(p.index, p.file) for p in report.failing_partitions] == [(2, partition_name(2))]
    in_memory = validate_frame(_concat(tmp_path), SPEC, NOW)
    assert _kinds(report.failed) == _kinds(in_memory.failed)
    assert ("expect_column_values_to_not_be_null", "entity_id") in _kinds(report.failed)
    with pytest.raises(ValidationFailed, match=r"(?s)not_be_null.*2 \(part-00002.parquet\)"):
        require_valid_partitions(report)


def test_duplicate_key_across_partitions_is_found(tmp_path, client):
    write_partitioned_panel(tmp_path, ROWS, PART, duplicate_into=3)
    report = validate_partitions(str(tmp_path), SPEC, client, NOW)
    in_memory = validate_frame(_concat(tmp_path), SPEC, NOW)
    assert _kinds(report.failed) == _kinds(in_memory.failed) == {
        ("expect_compound_columns_to_be_unique", "['entity_id', 'event_timestamp']")}
    assert report.failed[0].unexpected_count == in_memory.failed[0].unexpected_count == 2
    assert [p.index for p in report.failing_partitions] == [0, 3]


def test_a_validated_partition_does_not_outlive_its_task(tmp_path, client):
    # GE leaves each run in reference cycles holding the frame; a worker must not wait for
    # Python's rare full collections (at 100M rows workers piled up partitions and died).
    write_partitioned_panel(tmp_path, ROWS, PART)
    validate_partitions(str(tmp_path), SPEC, client, NOW)
    alive = [o for o in gc.get_objects() if isinstance(o, pd.DataFrame) and len(o) == PART]
    assert len(alive) <= 1, "only the frame of GE's current context (replaced by the next)"


def test_corrupt_partition_file_is_named(tmp_path, client):
    write_partitioned_panel(tmp_path, ROWS, PART)
    (tmp_path / partition_name(1)).write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=partition_name(1)):
        validate_partitions(str(tmp_path), SPEC, client, NOW)


def test_feature_preparation_writes_training_columns(tmp_path, client):
    write_partitioned_panel(tmp_path / "raw", ROWS, PART)
    part = tmp_path / "raw" / partition_name(1)
    frame = pd.read_parquet(part)
    frame["label"] = frame["label"].astype("float64").mask(frame.index < 3)
    frame.to_parquet(part, index=False)  # three rows without a label
    prepared = prepare_partitions(str(tmp_path / "raw"), SPEC, str(tmp_path / "out"), client)
    assert (prepared.files, prepared.rows_in, prepared.rows_out) == (4, ROWS, ROWS - 3)
    out = _concat(tmp_path / "out")
    assert list(out.columns) == SPEC.columns and len(out) == ROWS - 3
    assert all(out[c].dtype == "float32" for c in [*SPEC.features, SPEC.label])
    assert str(out[SPEC.timestamp].dtype) == "datetime64[ns, UTC]"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        partition_name(i) for i in range(4)], "no temporary files left behind"
