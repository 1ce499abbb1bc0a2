"""One partition scored in-process (the task each Dask worker runs): scores across several
ONNX Runtime chunks, the input hash of the very bytes scored, the marker that skips a rerun,
and a file that is not parquet named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.atomic_files import sha256_file
from mlops.data.loading import DataError
from mlops.partitioned import scoring
from mlops.partitioned.scoring import CHUNK_ROWS, describe_model, score_partition
from tests.serving.onnx_models import expected_scores, write_model

FEATURES = [f"f{i}" for i in range(4)]


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A worker freezes the collector's objects for good: not the test process's.
    monkeypatch.setattr(scoring, "freeze_long_lived", lambda: None)
    path, sha = write_model(tmp_path / "model.onnx")
    data = path.read_bytes()
    return describe_model(data, "alpha.panel", "3", sha), data


def test_a_partition_is_scored_with_its_lineage_and_skipped_when_done(model, tmp_path: Path):
    described, data = model
    rows = 2 * CHUNK_ROWS + 123  # three ONNX Runtime calls, the last one short
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"entity_id": np.arange(rows),
                          "event_timestamp": pd.date_range("2024-01-01", periods=rows,
                                                           freq="s", tz="UTC"),
                          **{f: rng.normal(size=rows) for f in FEATURES}})
    partition = tmp_path / "in" / "part-00000.parquet"
    partition.parent.mkdir()
    frame.to_parquet(partition, index=False)
    out = tmp_path / "out"

    first = score_partition(str(partition), str(out), described, data, "entity_id",
                            "event_timestamp")
    assert (first.rows, first.skipped, first.input_sha256) == (rows, False,
                                                               sha256_file(partition))
    scores = pd.read_parquet(out / "part-00000.parquet")
    assert list(scores.columns) == ["entity_id", "event_timestamp", "prediction", "label",
                                    "model_version", "input_sha256"]
    assert (scores["event_timestamp"] == frame["event_timestamp"]).all()
    expected = expected_scores(frame[FEATURES].to_numpy())
    np.testing.assert_allclose(scores["prediction"], expected, rtol=1e-5, atol=1e-6)
    assert (scores["label"] == (scores["prediction"] >= 0.5)).all()
    assert set(scores["model_version"]) == {"3"}
    assert set(scores["input_sha256"]) == {sha256_file(partition)}
    marker = json.loads((out / "part-00000.done.json").read_text())
    assert (marker["rows"], marker["input_sha256"], marker["model_sha256"]) == (
        rows, sha256_file(partition), described.sha256)

    again = score_partition(str(partition), str(out), described, data, "entity_id",
                            "event_timestamp")
    assert (again.rows, again.skipped) == (rows, True)


def test_a_partition_that_is_not_parquet_is_named(model, tmp_path: Path):
    described, data = model
    partition = tmp_path / "part-00001.parquet"
    partition.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="part-00001.parquet: cannot read partition"):
        score_partition(str(partition), str(tmp_path / "out"), described, data, "entity_id",
                        "event_timestamp")
    assert not (tmp_path / "out" / "part-00001.done.json").exists()
