"""Categorical, nullable and multiclass columns out of core: a folder of parquet partitions
runs the Dask path (validation and preparation per partition) to a trained, exported and
registered model, as a single file does in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import GRADES, generate_mixed_panel, mixed_spec
from mlops.config import ModelSettings, Settings, TaskType
from mlops.data.spec_fit import SpecMismatch
from mlops.partitioned.preparation import prepare_frame
from mlops.pipeline.batch_scoring import BatchScoreParams, batch_score
from mlops.pipeline.stages import PipelineParams, run_stages, validate_stage

pytestmark = pytest.mark.slow


def _partitioned(folder: Path, frame: pd.DataFrame, parts: int = 3) -> Path:
    folder.mkdir(parents=True)
    for index, entities in enumerate(np.array_split(frame["entity_id"].unique(), parts)):
        frame[frame["entity_id"].isin(entities)].to_parquet(
            folder / f"part-{index:05d}.parquet", index=False)
    return folder


def test_a_partitioned_mixed_dataset_trains_on_dask(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    frame = generate_mixed_panel(n_entities=120, n_periods=6, task=TaskType.multiclass, seed=6)
    source = _partitioned(tmp_path / "parts", frame)
    spec = mixed_spec(str(source), TaskType.multiclass, name="parts")
    summary = run_stages(PipelineParams(spec=spec, team="alpha", deploy=False, model=(
        ModelSettings(epochs=8, hidden=[16], learning_rate=0.01))), Settings())
    assert summary.rows == len(frame) and summary.training_rows == len(frame)
    assert summary.metrics["test_auc_ovr"] > 0.7
    assert summary.aliases == ["challenger", "champion"]
    # The champion scores the partitions: raw categories in, a probability per class out.
    scored = batch_score(BatchScoreParams(
        source=str(source), model=summary.model_name, entity="entity_id",
        timestamp="event_timestamp", team="alpha"), Settings())
    assert (scored.partitions, scored.rows) == (3, len(frame))
    scores = pd.read_parquet(Path(scored.output) / "part-00001.parquet")
    assert [f"prediction_{grade}" for grade in sorted(GRADES)] == [
        c for c in scores.columns if c.startswith("prediction_")]
    probabilities = scores[[f"prediction_{g}" for g in sorted(GRADES)]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (scores["label"].to_numpy() == np.asarray(sorted(GRADES))[
        probabilities.argmax(axis=1)]).all()


def test_preparation_keeps_categories_nulls_and_class_names() -> None:
    frame = generate_mixed_panel(n_entities=10, n_periods=4, task=TaskType.multiclass)
    prepared = prepare_frame(frame, mixed_spec("x", TaskType.multiclass))
    assert len(prepared) == len(frame)  # nullable features keep their rows
    assert prepared["hours"].dtype == "float32" and prepared["hours"].isna().any()
    assert set(prepared["continent"]) <= set(frame["continent"])
    assert set(prepared["label"]) <= set(GRADES)


def test_a_spec_mismatch_in_partitions_is_named(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    source = _partitioned(tmp_path / "parts", generate_mixed_panel(n_entities=30, seed=1), 2)
    spec = mixed_spec(str(source), name="parts").model_copy(update={"categorical": []})
    with pytest.raises(SpecMismatch, match="feature 'continent' holds text"):
        validate_stage(spec, Settings())
    assert not (tmp_path / "data" / "quarantine").exists() or not any(
        (tmp_path / "data" / "quarantine").iterdir())
