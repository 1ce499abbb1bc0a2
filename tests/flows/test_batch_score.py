"""The batch-scoring flow on a real Prefect server, MLflow registry and Dask cluster: every
partition scored by the champion with its lineage, and a rerun that redoes only what a
crash or a changed input left undone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from benchmarks.synthetic import generate_panel, synthetic_spec, write_partitioned_panel
from mlops.atomic_files import sha256_file
from mlops.config import ModelSettings, Settings, TaskType
from mlops.pipeline.batch_scoring import BatchScoreParams
from mlops.pipeline.stages import PipelineParams, run_stages
from mlops.registry.client import RegistryError, fetch_model

pytestmark = pytest.mark.slow
COLUMNS = ["entity_id", "event_timestamp", "prediction", "label", "model_version",
           "input_sha256"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A champion registered by the plain-Python pipeline, and a dataset of 3 partitions."""
    folder = tmp_path_factory.mktemp("batch")
    monkey = pytest.MonkeyPatch()
    monkey.setenv("MLOPS_DATA_DIR", str(folder / "data"))
    path = folder / "panel.parquet"
    generate_panel(n_entities=60, n_periods=8, seed=1).to_parquet(path, index=False)
    spec = synthetic_spec(str(path), TaskType.classification, name="panel")
    run_stages(PipelineParams(spec=spec, team="alpha", deploy=False,
                              model=ModelSettings(epochs=3, hidden=[16])), Settings())
    write_partitioned_panel(folder / "big", rows=3000, partition_rows=1000, seed=7)
    yield Settings(), folder / "big"
    monkey.undo()


def _params(source: Path, **extra: object) -> BatchScoreParams:
    return BatchScoreParams(source=str(source), model="alpha.panel", entity="entity_id",
                            timestamp="event_timestamp", team="alpha", **extra)


def test_every_partition_is_scored_with_its_lineage_then_only_what_is_undone(
        prefect_server: None, trained, tmp_path: Path) -> None:
    from flows.batch_score import batch_score

    settings, source = trained
    result = batch_score(_params(source))
    assert (result.partitions, result.scored, result.skipped, result.rows) == (3, 3, 0, 3000)
    out = Path(result.output)
    assert out == settings.data_dir / "scores" / "alpha.panel" / "v1" / "big"
    session = ort.InferenceSession(
        fetch_model(settings.tracking, "models:/alpha.panel@champion", tmp_path).path)
    for part in sorted(source.glob("part-*.parquet")):
        scores = pd.read_parquet(out / part.name)
        raw = pd.read_parquet(part)
        assert list(scores.columns) == COLUMNS and len(scores) == len(raw)
        assert (scores["entity_id"].to_numpy() == raw["entity_id"].to_numpy()).all()
        expected = session.run(["prediction"], {"features": raw[[f"f{i}" for i in range(4)]]
                                                .to_numpy(np.float32)})[0]
        np.testing.assert_allclose(scores["prediction"], expected, atol=1e-6)
        assert set(scores["model_version"]) == {"1"}
        assert set(scores["input_sha256"]) == {sha256_file(part)}
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["rows"] == 3000 and success["model_version"] == "1"

    # A crash after part 1's scores were written but before its marker, and a changed part 2.
    (out / "part-00001.done.json").unlink()
    changed = pd.read_parquet(source / "part-00002.parquet")
    changed["f0"] += 1.0
    changed.to_parquet(source / "part-00002.parquet", index=False)
    untouched = (out / "part-00000.parquet").stat().st_mtime_ns
    again = batch_score(_params(source, alias=None, version="1"))  # the same model, by number
    assert (again.scored, again.skipped, again.rows) == (2, 1, 3000)
    assert (out / "part-00000.parquet").stat().st_mtime_ns == untouched
    assert set(pd.read_parquet(out / "part-00002.parquet")["input_sha256"]) == {
        sha256_file(source / "part-00002.parquet")}


def test_a_model_that_does_not_exist_is_named(prefect_server: None, trained) -> None:
    from mlops.pipeline.batch_scoring import batch_score

    settings, source = trained
    with pytest.raises(RegistryError, match="alpha.panel@nope"):
        batch_score(_params(source, alias="nope"), settings)
    assert not (settings.data_dir / "scores" / "alpha.panel" / "vNone").exists()
